"""Models for the torch engine's tests: the bundled GGUF converted for transformers, and tiny random ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

from slmserve.engine.hf_models import converted_gguf
from slmserve.models.registry import KNOWN_MODELS
from slmserve.settings import Settings


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2 dequantized from the bundled GGUF, in the user's cache (converted once, ~25 s)."""
    return converted_gguf(KNOWN_MODELS["smollm2-135m-instruct"].path(), Path(Settings().cache_dir).expanduser())


def _tiny(config, tokenizer_dir: Path, out: Path) -> Path:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


TINY = {"n_layers": 2, "hidden": 64, "heads": 4, "vocab": 49152}


@pytest.fixture(scope="session")
def tiny_llama(smollm2_dir, tmp_path_factory) -> Path:
    """A random 2-layer Llama with grouped-query attention (4 query heads, 2 KV heads) and SmolLM2's tokenizer."""
    config = LlamaConfig(
        vocab_size=TINY["vocab"], hidden_size=TINY["hidden"], intermediate_size=128, num_hidden_layers=TINY["n_layers"],
        num_attention_heads=TINY["heads"], num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )  # fmt: skip
    return _tiny(config, smollm2_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_gpt2(smollm2_dir, tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 (learned positions, Conv1D layers, biases) with SmolLM2's tokenizer."""
    config = GPT2Config(
        vocab_size=TINY["vocab"], n_embd=TINY["hidden"], n_layer=TINY["n_layers"], n_head=TINY["heads"],
        n_positions=512, initializer_range=0.2, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return _tiny(config, smollm2_dir, tmp_path_factory.mktemp("tiny-gpt2"))


def torch_settings(model: Path | str, **kw) -> Settings:
    return Settings(model=str(model), engine="torch", device="cpu", **kw)
