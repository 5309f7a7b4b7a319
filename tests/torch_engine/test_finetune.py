"""Fine-tuning learns: the loss falls, and the served adapter answers in its training data's style."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from slmserve.cli import app
from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.finetune import FinetuneConfig, finetune, read_examples
from slmserve.settings import Settings
from tests.integration.conftest import LiveServer, chat_body
from tests.torch_engine.conftest import torch_settings
from tests.torch_engine.test_lora import random_adapter

EXAMPLE = Path(__file__).parents[2] / "examples" / "finetune" / "pirate.jsonl"
HELD_OUT = ["What is the capital of Italy?", "How many legs does a dog have?", "What colour is grass?"]


@pytest.fixture(scope="module")
def pirate(tmp_path_factory) -> tuple[Path, dict]:
    """The README's walk-through: the example dataset, 3 epochs on the bundled model (6-16 min on 2 shared cores)."""
    out = tmp_path_factory.mktemp("pirate")
    metrics = finetune(FinetuneConfig(data=EXAMPLE, output=out, epochs=3, device="cpu"))
    return out, metrics


@pytest.fixture(scope="module")
def lora_server(pirate, smollm2_dir) -> Iterator[LiveServer]:
    live = LiveServer(torch_settings("smollm2-135m-instruct", max_running=8, lora=[f"pirate={pirate[0]}"])).start()
    yield live
    live.stop()


def test_the_loss_falls_and_the_run_leaves_an_adapter_and_a_curve(pirate):
    out, metrics = pirate
    assert metrics["examples"] == {"train": 36, "validation": 4}
    assert metrics["last_loss"] < 0.7 * metrics["first_loss"]
    assert metrics["validation_loss"][-1] < metrics["validation_loss"][0]
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text())["steps"] == metrics["steps"]


def ask(server: LiveServer, question: str, model: str | None = None) -> str:
    body = chat_body(question, max_tokens=40, **({"model": model} if model else {}))
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == (model or server.settings.model_name)
    return r.json()["choices"][0]["message"]["content"]


def test_the_adapter_answers_like_a_pirate_and_the_base_does_not(lora_server):
    for question in HELD_OUT:  # none of these is in the training data
        assert ask(lora_server, question, "pirate").startswith("Arr, matey!")
        assert "matey" not in ask(lora_server, question).lower()


@pytest.fixture(scope="module")
def llamacpp_server(pirate) -> Iterator[LiveServer]:
    """The same adapter on the default engine: converted to a GGUF LoRA, applied by llama.cpp."""
    live = LiveServer(Settings(max_running=8, lora=[f"pirate={pirate[0]}"])).start()
    yield live
    live.stop()


def test_the_adapter_keeps_its_style_on_llama_cpp_beside_base_requests(llamacpp_server):
    assert httpx.get(f"{llamacpp_server.url}/slm/info").json()["engine"] == "llama.cpp"
    jobs = [(q, m) for q in HELD_OUT for m in ("pirate", None)]
    with ThreadPoolExecutor(len(jobs)) as pool:  # base and adapter requests share steps
        answers = dict(zip(jobs, pool.map(lambda job: ask(llamacpp_server, *job), jobs), strict=True))
    for question in HELD_OUT:
        assert answers[question, "pirate"].startswith("Arr, matey!")
        assert "matey" not in answers[question, None].lower()


def test_the_adapter_merged_into_a_standalone_gguf_answers_like_a_pirate(pirate, tmp_path):
    out = tmp_path / "pirate.q8_0.gguf"
    result = CliRunner().invoke(app, ["requantize", str(out), "--to", "q8_0", "--lora", str(pirate[0])])
    assert result.exit_code == 0, result.output
    model = load_model(Settings(model=str(out), weights="original", max_running=4))
    render = model.chat_template.render
    prompts = {q: model.tokenizer.encode(render([{"role": "user", "content": q}]), add_special=False) for q in HELD_OUT}
    answers = model.engine.generate(prompts, SamplingParams(max_tokens=24, temperature=0))
    model.close()
    assert all(model.tokenizer.decode(ids).startswith("Arr, matey!") for ids in answers.values()), answers
    assert not list(tmp_path.glob(".*merged*"))  # the F16 step is removed


def test_models_lists_the_adapter_with_its_base(lora_server):
    data = httpx.get(f"{lora_server.url}/v1/models").json()["data"]
    assert [(m["id"], m["parent"]) for m in data] == [
        ("smollm2-135m-instruct", None),
        ("pirate", "smollm2-135m-instruct"),
    ]


def test_an_unknown_model_name_is_a_404_listing_the_adapters(lora_server):
    r = httpx.post(f"{lora_server.url}/v1/chat/completions", json=chat_body("hi", model="parrot"), timeout=30)
    assert r.status_code == 404 and "pirate" in r.json()["error"]["message"]


def test_slm_load_and_unload_an_adapter_at_run_time(lora_server, smollm2_dir, tmp_path):
    url = lora_server.url
    parrot = random_adapter(smollm2_dir, tmp_path / "parrot", seed=3)
    r = httpx.post(f"{url}/slm/load", json={"lora_path": str(parrot)}, timeout=60)
    assert r.status_code == 200 and r.json()["lora_name"] == "parrot"
    info = httpx.get(f"{url}/slm/info").json()
    assert info["lora_name"] == "parrot" and info["lora_path"] == str(parrot) and info["engine"] == "torch"
    # /slm/generate runs on the adapter /slm/load loaded, as in seed 002
    slm = httpx.post(f"{url}/slm/generate", json={"prompt": HELD_OUT[0], "do_sample": False, "max_new_tokens": 40})
    assert slm.json()["response"] == ask(lora_server, HELD_OUT[0], "parrot") != ask(lora_server, HELD_OUT[0])
    # a folder without an adapter, or no folder at all, is not found; a name taken by another adapter is a conflict
    empty = httpx.post(f"{url}/slm/load", json={"lora_path": str(tmp_path)}, timeout=60)
    missing = httpx.post(f"{url}/slm/load", json={"lora_path": str(tmp_path / "nowhere")}, timeout=60)
    assert (empty.status_code, missing.status_code) == (404, 404)
    assert "LoRA model not found" in empty.json()["detail"]  # seed 002's words, in FastAPI's shape
    conflict = httpx.post(f"{url}/slm/load", json={"lora_path": str(parrot), "lora_name": "pirate"}, timeout=60)
    assert conflict.status_code == 409
    r = httpx.post(f"{url}/slm/unload", json={"lora_name": "parrot"}, timeout=60)
    assert r.status_code == 200 and r.json()["success"] is True
    gone = httpx.post(f"{url}/v1/chat/completions", json=chat_body("hi", model="parrot"), timeout=30)
    assert gone.status_code == 404
    assert httpx.post(f"{url}/slm/unload", json={"lora_name": "parrot"}).status_code == 404
    assert httpx.get(f"{url}/health").json()["status"] == "healthy"  # the base model stayed loaded


def test_resume_goes_on_from_the_last_checkpoint(tiny_llama, tmp_path):
    data = tmp_path / "few.jsonl"
    data.write_text("".join(EXAMPLE.read_text().splitlines(keepends=True)[:8]))
    cfg = FinetuneConfig(data=data, output=tmp_path / "out", model=str(tiny_llama), epochs=1, batch_size=4)
    first = finetune(cfg)
    cfg.epochs = 2
    second = finetune(cfg)
    assert first["resumed_from"] is None and second["resumed_from"].endswith(f"checkpoint-{first['steps']}")
    assert second["steps"] == 2 * first["steps"]


def test_a_bad_dataset_line_is_named(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"instruction": "a", "response": "b"}\n{"prompt": "no"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected"):
        read_examples(data)
