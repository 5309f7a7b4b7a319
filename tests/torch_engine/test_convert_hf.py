"""Hugging Face directories converted to GGUF and served on llama.cpp agree with the torch engine on the same weights.

torch is needed here only to make the checkpoints and the reference answers; the conversion itself never imports it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, OPTConfig

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.models import convert_hf
from slmserve.settings import Settings
from tests.torch_engine.conftest import TINY, _tiny, torch_settings

PROMPTS = ["What is the capital of France?", "Write a poem about rain.", "List three fruits.", "Explain gravity."]
# User-style questions for the real model: facts, lists, code, advice, a story.
USER_PROMPTS = PROMPTS + [
    "How do I make a cup of tea?",
    "Write a Python function that reverses a string.",
    "What are the benefits of regular exercise?",
    "Give me three tips for learning a new language.",
    "Tell me a short story about a dragon.",
    "What is the difference between weather and climate?",
]


def llamacpp_settings(model: Path, cache_dir: Path, **kw) -> Settings:
    kw = {"max_running": len(USER_PROMPTS), **kw}
    return Settings(model=str(model), engine="auto", cache_dir=str(cache_dir), **kw)


def tiny_settings(model: Path, cache_dir: Path, **kw) -> Settings:
    """The tiny models' 16-wide heads do not divide into q8_0's 32-value blocks: an f16 KV cache."""
    return llamacpp_settings(model, cache_dir, kv_cache_type="f16", **kw)


def greedy(settings: Settings, max_tokens: int, questions: list[str] = USER_PROMPTS):
    """(the model as loaded, closed by now; each question's greedy answer as token ids, all batched on one engine)."""
    model = load_model(settings)
    try:
        prompts = {
            i: model.tokenizer.encode(model.chat_template.render([{"role": "user", "content": q}]), False)
            for i, q in enumerate(questions)
        }
        out = model.engine.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0))
        return model, [out[i] for i in range(len(questions))]
    finally:
        model.close()


def agreement(reference: list[list[int]], answers: list[list[int]], prefix: int) -> tuple[float, float]:
    """(share of identical answers, share whose first `prefix` tokens are identical)."""
    same = sum(a == b for a, b in zip(reference, answers, strict=True)) / len(reference)
    start = sum(a[:prefix] == b[:prefix] for a, b in zip(reference, answers, strict=True)) / len(reference)
    return same, start


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_tiny_models_converted_match_transformers_and_torch_engine(fixture, request, cache):
    """The converted file's logits match transformers' fp32 forward (F16 weights: close, same argmax), and the
    llama.cpp engine's greedy answers match the torch engine's token for token."""
    model_dir = request.getfixturevalue(fixture)
    model = load_model(tiny_settings(model_dir, cache, weights="original"))
    assert (model.backend, model.path, model.source) == ("llama.cpp", model_dir, str(model_dir))
    ids = model.tokenizer.encode("The quick brown fox jumps over the lazy dog, then naps.", False)
    ours = model.runner.score(ids, 1).copy()  # [len - 1, V]; a view of llama.cpp's buffer until copied
    model.close()
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        reference = hf(torch.tensor([ids])).logits[0, 1:].numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 0.05 * np.abs(reference).max()  # a wrong permute or transpose: ~1x
    assert (ours.argmax(-1) == reference.argmax(-1)).mean() >= 0.9

    _, answers = greedy(tiny_settings(model_dir, cache, weights="original"), 16, PROMPTS)
    assert answers == greedy(torch_settings(model_dir, max_running=4), 16, PROMPTS)[1]
    assert all(len(a) == 16 for a in answers)


def test_bundled_smollm2_directory_serves_on_llamacpp_like_torch(smollm2_dir, tmp_path):
    """SmolLM2 as a transformers directory, served by default (`--engine auto`, `--weights auto`) on llama.cpp:
    most greedy answers are the torch engine's, word for word."""
    model, answers = greedy(llamacpp_settings(smollm2_dir, tmp_path), 64)
    # F16 already runs on AVX2's and NEON's fast kernels, so auto keeps it (q8_0 agreed on 3 of 10, docs/models.md)
    assert (model.backend, model.path, model.weights) == ("llama.cpp", smollm2_dir, "f16")
    _, reference = greedy(torch_settings(smollm2_dir, max_running=len(USER_PROMPTS)), 64)
    same, first_32 = agreement(reference, answers, 32)
    print(f"SmolLM2 llama.cpp vs torch: {same:.0%} identical answers, {first_32:.0%} identical first 32 tokens")
    assert sum(len(a) for a in answers) > 300  # real answers, not early stops
    assert first_32 >= 0.6
    assert same >= 0.5


def test_conversion_is_cached_and_redone_when_the_directory_changes(tiny_llama, tmp_path, monkeypatch):
    model_dir = shutil.copytree(tiny_llama, tmp_path / "model")
    cache = tmp_path / "cache"
    first = convert_hf.cached_gguf(model_dir, cache)
    made = first.stat().st_mtime_ns

    def no_conversion(*args):
        raise AssertionError("converted a second time")

    with monkeypatch.context() as m:
        m.setattr(convert_hf, "convert", no_conversion)
        load_model(tiny_settings(model_dir, cache)).close()
        assert convert_hf.cached_gguf(model_dir, cache) == first
    assert first.stat().st_mtime_ns == made

    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    second = convert_hf.cached_gguf(model_dir, cache)
    assert second != first and second.is_file()
    assert not first.exists()  # the stale conversion is pruned
    assert [p.name for p in second.parent.iterdir()] == [second.name]  # no temporary files left


def test_conversion_never_imports_torch(tiny_gpt2, tmp_path):
    code = (
        "import sys; from pathlib import Path; from slmserve.models import convert_hf; "
        f"print(convert_hf.cached_gguf(Path({str(tiny_gpt2)!r}), Path({str(tmp_path)!r})).stat().st_size); "
        "assert 'torch' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 2 * 49152 * TINY["hidden"]  # the F16 embeddings at least


@pytest.fixture(scope="module")
def tiny_opt(smollm2_dir, tmp_path_factory) -> Path:
    """A random OPT model: an architecture the converter does not write."""
    config = OPTConfig(
        vocab_size=TINY["vocab"], hidden_size=TINY["hidden"], ffn_dim=128, num_hidden_layers=TINY["n_layers"],
        num_attention_heads=TINY["heads"], word_embed_proj_dim=TINY["hidden"], max_position_embeddings=512,
    )  # fmt: skip
    return _tiny(config, smollm2_dir, tmp_path_factory.mktemp("tiny-opt"))


def test_unconvertible_architecture_falls_back_to_torch_under_auto(tiny_opt, tmp_path, caplog):
    model = load_model(tiny_settings(tiny_opt, tmp_path))
    try:
        assert model.backend == "torch" and model.path == tiny_opt
    finally:
        model.close()
    assert "OPTForCausalLM is not converted" in caplog.text
    with pytest.raises(ValueError, match="directory it can convert; .*OPTForCausalLM"):
        load_model(Settings(model=str(tiny_opt), engine="llama.cpp", cache_dir=str(tmp_path)))
    assert not list(tmp_path.rglob("*.gguf"))


def test_torch_engine_keeps_the_directory(tiny_llama, tmp_path):
    model = load_model(Settings(model=str(tiny_llama), engine="torch", device="cpu", cache_dir=str(tmp_path)))
    model.close()
    assert model.backend == "torch" and not list(tmp_path.rglob("*.gguf"))
