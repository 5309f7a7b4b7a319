"""peft-format LoRA adapters made with numpy, for tests that need no torch: random A and B matrices on the bundled
model's projections, saved as peft's save_pretrained saves them (adapter_config.json, adapter_model.safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import save_file

from slmserve.models.registry import KNOWN_MODELS

# peft module -> (rows, columns) as a function of the model's hidden size, intermediate size and KV width.
_SHAPES = {
    "self_attn.q_proj": lambda h, f, kv: (h, h),
    "self_attn.k_proj": lambda h, f, kv: (kv, h),
    "self_attn.v_proj": lambda h, f, kv: (kv, h),
    "mlp.down_proj": lambda h, f, kv: (h, f),
}


def bundled_dims(path: Path | None = None) -> tuple[int, int, int, int]:
    """(layers, hidden, intermediate, KV width) of a llama GGUF, the bundled model's by default."""
    fields = gguf.GGUFReader(path or KNOWN_MODELS["smollm2-135m-instruct"].path()).fields
    get = lambda key: fields[f"llama.{key}"].contents()  # noqa: E731
    hidden, heads = get("embedding_length"), get("attention.head_count")
    return get("block_count"), hidden, get("feed_forward_length"), hidden // heads * get("attention.head_count_kv")


def random_adapter(out: Path, seed: int, *, rank: int = 4, alpha: int = 8, strength: float = 0.5,
                   modules=tuple(_SHAPES), dims: tuple[int, int, int, int] | None = None) -> Path:  # fmt: skip
    """A LoRA adapter of random A and B (B nonzero, so it changes answers); strength scales B."""
    layers, hidden, ffn, kv = dims or bundled_dims()
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(layers):
        for module in modules:
            rows, cols = _SHAPES[module](hidden, ffn, kv)
            key = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.uniform(-1, 1, (rank, cols)).astype(np.float32) / np.sqrt(cols)
            tensors[f"{key}.lora_B.weight"] = rng.normal(0, strength / rank, (rows, rank)).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    targets = [m.split(".")[-1] for m in modules]
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": targets}
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out
