"""LoRA adapters on the llama.cpp engine: chosen per request, mixed with base requests in one step, loaded and
unloaded at run time through vLLM's routes and seed 002's /slm/load; bad adapters get a 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from slmserve.models.registry import KNOWN_MODELS
from slmserve.settings import Settings
from tests.integration.conftest import LiveServer, chat_body
from tests.lora_files import bundled_dims, random_adapter

QUESTIONS = ["What is the capital of France?", "Write a haiku about rain.", "Name three fruits.", "What is 2 + 2?"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="module")
def lora_server(adapters) -> Iterator[LiveServer]:
    red = random_adapter(adapters / "red", seed=0)
    live = LiveServer(Settings(max_running=8, max_waiting=16, lora=[f"red={red}"])).start()
    yield live
    live.stop()


def answer(server: LiveServer, question: str, model: str | None = None) -> str:
    body = chat_body(question, max_tokens=24, **({"model": model} if model else {}))
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == (model or server.settings.model_name)
    return r.json()["choices"][0]["message"]["content"]


def test_the_adapter_is_listed_and_changes_the_answers(lora_server):
    data = httpx.get(f"{lora_server.url}/v1/models").json()["data"]
    assert [(m["id"], m["parent"]) for m in data] == [("smollm2-135m-instruct", None), ("red", "smollm2-135m-instruct")]
    changed = [answer(lora_server, q) != answer(lora_server, q, "red") for q in QUESTIONS]
    assert sum(changed) >= 3, changed


def test_base_and_adapter_requests_in_one_step_answer_as_they_do_alone(lora_server):
    """Each step decodes the base rows and the adapter rows separately; the logits must land on their own rows."""
    jobs = [(q, m) for q in QUESTIONS for m in (None, "red")]
    alone = [answer(lora_server, q, m) for q, m in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda job: answer(lora_server, *job), jobs))
    assert together == alone


def test_vllm_routes_load_and_unload_an_adapter_at_run_time(lora_server, adapters):
    url = lora_server.url
    blue = random_adapter(adapters / "blue", seed=1)
    r = httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": "blue", "lora_path": str(blue)}, timeout=120)
    assert r.status_code == 200 and r.text == "Success: LoRA adapter 'blue' added successfully."
    assert "blue" in [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
    assert answer(lora_server, QUESTIONS[0], "blue") != answer(lora_server, QUESTIONS[0], "red")
    r = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "blue"}, timeout=60)
    assert r.status_code == 200 and "removed" in r.text
    r = httpx.post(f"{url}/v1/chat/completions", json=chat_body("hi", model="blue"), timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{url}/v1/unload_lora_adapter", json={"lora_name": "blue"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "lora_not_found"


def test_what_is_not_an_adapter_of_this_model_is_a_4xx(lora_server, adapters):
    url = lora_server.url

    def load(name: str, path: Path | str) -> httpx.Response:
        return httpx.post(f"{url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}, timeout=60)

    layers, hidden, ffn, kv = bundled_dims()
    other = random_adapter(adapters / "other", seed=2, dims=(layers, hidden * 2, ffn, kv))
    r = load("other", other)
    assert r.status_code == 400 and "another model" in r.json()["error"]["message"]
    r = load("nothing", adapters / "no-such-adapter")
    assert r.status_code == 404 and r.json()["error"]["code"] == "lora_not_found"
    r = load("weights", KNOWN_MODELS["smollm2-135m-instruct"].path())  # a GGUF, but a model, not a LoRA
    assert r.status_code == 400 and "could not load the LoRA adapter" in r.json()["error"]["message"]
    r = load("red", random_adapter(adapters / "red-again", seed=5))
    assert r.status_code == 409
    r = load("two words", other)
    assert r.status_code == 400 and r.json()["error"]["param"] == "lora_name"
    assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["smollm2-135m-instruct", "red"]


def test_slm_load_serves_an_adapter_on_llama_cpp(lora_server, adapters):
    url = lora_server.url
    green = random_adapter(adapters / "green", seed=3)
    r = httpx.post(f"{url}/slm/load", json={"lora_path": str(green)}, timeout=120)
    assert r.status_code == 200 and r.json()["lora_name"] == "green"
    info = httpx.get(f"{url}/slm/info").json()
    assert (info["engine"], info["lora_name"], info["lora_path"]) == ("llama.cpp", "green", str(green))
    assert info["engines"] == {"smollm2-135m-instruct": "llama.cpp"}
    r = httpx.post(f"{url}/slm/unload", json={"lora_name": "green"}, timeout=60)
    assert r.status_code == 200 and httpx.get(f"{url}/slm/info").json()["lora_name"] is None
