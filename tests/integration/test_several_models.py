"""Several models in one server (`--model a --model b`): requests pick by name, the seeds' routes use the first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from slmserve.models import weights
from slmserve.models.registry import KNOWN_MODELS
from slmserve.server.app import create_app
from slmserve.settings import Settings
from tests.integration.conftest import LiveServer, chat_body

DEFAULT = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def q8_copy(tmp_path_factory) -> Path:
    """A second real model: the bundled GGUF requantized to Q8_0 (~3 s)."""
    out = tmp_path_factory.mktemp("models") / "smol-q8.gguf"
    weights.requantize(KNOWN_MODELS[DEFAULT].path(), out, "q8_0")
    return out


@pytest.fixture(scope="module")
def two(q8_copy) -> Iterator[LiveServer]:
    live = LiveServer(Settings(model=f"{DEFAULT},q8={q8_copy}", max_running=4, max_waiting=16)).start()
    yield live
    live.stop()


def chat(server: LiveServer, **kw) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/chat/completions", json=chat_body("Name a fruit.", max_tokens=8, **kw), timeout=60
    )


def test_models_lists_both_the_default_first_and_requests_pick_by_name(two):
    models = httpx.get(f"{two.url}/v1/models").json()["data"]
    assert [m["id"] for m in models] == [DEFAULT, "q8"]
    assert "q8_0" in models[1]["weights"] and "q8_0" not in models[0]["weights"]
    assert chat(two).json()["model"] == DEFAULT
    assert chat(two, model=DEFAULT).json()["model"] == DEFAULT
    r = chat(two, model="q8")
    assert r.status_code == 200 and r.json()["model"] == "q8" and r.json()["choices"][0]["message"]["content"]
    body = {"model": "q8", "prompt": "The capital of France is", "max_tokens": 4}
    assert httpx.post(f"{two.url}/v1/completions", json=body, timeout=60).json()["model"] == "q8"
    assert httpx.post(f"{two.url}/v1/embeddings", json={"model": "q8", "input": "hi"}).json()["model"] == "q8"


def test_an_unknown_name_is_a_404_listing_every_model(two):
    r = chat(two, model="nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert DEFAULT in r.json()["error"]["message"] and "q8" in r.json()["error"]["message"]


def test_health_reports_each_model_and_the_seed_routes_use_the_first(two):
    health = httpx.get(f"{two.url}/health").json()
    assert health["status"] == "healthy" and health["model"] == DEFAULT
    assert health["models"] == {DEFAULT: "healthy", "q8": "healthy"}
    assert httpx.get(f"{two.url}/slm/info").json()["base_model"] == DEFAULT
    seed = httpx.post(
        f"{two.url}/infer", json={"system_prompt": "Be brief.", "user_prompt": "Name a fruit."}, timeout=60
    ).json()["response"]
    openai = httpx.post(
        f"{two.url}/v1/chat/completions",
        json={
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}],
            "temperature": 0,
            "max_tokens": 128,
        },
        timeout=60,
    ).json()
    assert seed == openai["choices"][0]["message"]["content"]


def test_both_models_serve_at_once(two):
    async def main():
        async with httpx.AsyncClient(timeout=120) as client:
            bodies = [chat_body(f"Count to {i}.", max_tokens=24, model=m) for i in range(4) for m in (DEFAULT, "q8")]
            rs = await asyncio.gather(*(client.post(f"{two.url}/v1/chat/completions", json=b) for b in bodies))
            return [(r.status_code, r.json()["model"]) for r in rs]

    assert asyncio.run(main()) == [(200, m) for _ in range(4) for m in (DEFAULT, "q8")]


def test_a_model_that_fails_to_load_leaves_the_others_serving(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really")
    live = LiveServer(Settings(model=f"{DEFAULT},{broken}", max_running=2))
    live._thread.start()
    try:
        health = None
        for _ in range(600):
            health = httpx.get(f"{live.url}/health").json()
            if health.get("models", {}).get("broken") not in (None, "loading"):
                break
            time.sleep(0.1)
        assert health["status"] == "error" and health["models"] == {DEFAULT: "healthy", "broken": "error"}
        assert chat(live).status_code == 200
        r = chat(live, model="broken")
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_load_failed"
        assert [m["id"] for m in httpx.get(f"{live.url}/v1/models").json()["data"]] == [DEFAULT]
    finally:
        live.stop()


@pytest.mark.parametrize(
    ("models", "says"),
    [
        ("a.gguf,b/a.gguf", "two models are served as 'a'"),
        ("x=a.gguf,x=b.gguf", "served as 'x'"),
        ("a.gguf,", "no model"),
    ],
)
def test_a_model_list_that_cannot_be_served_is_refused_before_anything_loads(models, says):
    with pytest.raises(ValueError, match=says):
        create_app(Settings(model=models))
