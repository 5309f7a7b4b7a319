"""peft LoRA -> GGUF LoRA: llama.cpp's tensor names and shapes, peft's scale folded into B, the rank padded odd,
converted once into the cache; what is not an adapter of the base model is a ValueError naming why."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from slmserve.models.convert_hf import permute_rope
from slmserve.models.lora_gguf import adapter_gguf
from slmserve.models.registry import KNOWN_MODELS
from tests.lora_files import bundled_dims, random_adapter

BASE = KNOWN_MODELS["smollm2-135m-instruct"].path()
Q8_0 = gguf.GGMLQuantizationType.Q8_0


def tensors(path) -> dict[str, np.ndarray]:
    """The file's tensors in torch order, dequantized."""
    out = {}
    for t in gguf.GGUFReader(path).tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type) if t.tensor_type == Q8_0 else np.asarray(t.data)
        out[t.name] = data.reshape(tuple(int(n) for n in reversed(t.shape.tolist())))
    return out


def test_the_file_holds_each_module_as_llama_cpp_names_it_with_the_scale_in_b(tmp_path):
    layers, hidden, _, kv = bundled_dims()
    src = random_adapter(tmp_path / "red", seed=0, rank=4, alpha=8, modules=("self_attn.q_proj", "self_attn.v_proj"))
    out = adapter_gguf(src, BASE, tmp_path / "cache")
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.lora.alpha"].contents() == 0.0  # llama.cpp: scale 1, the scale is in B
    got = tensors(out)
    assert len(got) == 2 * 2 * layers
    peft = load_file(str(src / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.3.self_attn.{}.lora_{}.weight"
    a, b = got["blk.3.attn_v.weight.lora_a"], got["blk.3.attn_v.weight.lora_b"]
    assert a.shape == (5, hidden) and b.shape == (kv, 5)  # rank 4 padded to 5 with zeros
    assert np.allclose(a[:4], peft[key.format("v_proj", "A")], atol=0.01) and not a[4].any() and not b[:, 4].any()
    assert np.allclose(b[:, :4], peft[key.format("v_proj", "B")] * 8 / 4)
    # q's rows are permuted as llama.cpp's converter permutes the base weight's rows: the product is permuted too.
    heads = gguf.GGUFReader(BASE).fields["llama.attention.head_count"].contents()
    want = permute_rope(peft[key.format("q_proj", "B")] @ peft[key.format("q_proj", "A")], heads) * 2
    assert np.allclose(got["blk.3.attn_q.weight.lora_b"] @ got["blk.3.attn_q.weight.lora_a"], want, atol=1e-3)


def test_rs_lora_and_per_module_alphas_scale_like_peft(tmp_path):
    src = random_adapter(tmp_path / "rs", seed=1, rank=4, alpha=8, modules=("self_attn.v_proj", "mlp.down_proj"))
    config = json.loads((src / "adapter_config.json").read_text())
    config |= {"use_rslora": True, "alpha_pattern": {"down_proj": 2}}
    (src / "adapter_config.json").write_text(json.dumps(config))
    got = tensors(adapter_gguf(src, BASE, tmp_path / "cache"))
    peft = load_file(str(src / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.{}.lora_B.weight"
    assert np.allclose(got["blk.0.attn_v.weight.lora_b"][:, :4], peft[key.format("self_attn.v_proj")] * 8 / 2)
    assert np.allclose(got["blk.0.ffn_down.weight.lora_b"][:, :4], peft[key.format("mlp.down_proj")] * 2 / 2)


def test_a_converted_adapter_is_reused_and_a_changed_one_converted_again(tmp_path):
    src = random_adapter(tmp_path / "red", seed=0, modules=("self_attn.q_proj",))
    first = adapter_gguf(src, BASE, tmp_path / "cache")
    stamp = first.stat().st_mtime_ns
    assert adapter_gguf(src, BASE, tmp_path / "cache") == first and first.stat().st_mtime_ns == stamp
    random_adapter(src, seed=9, modules=("self_attn.q_proj",))
    assert adapter_gguf(src, BASE, tmp_path / "cache") != first
    assert not list((tmp_path / "cache" / "lora").glob(".tmp-*"))


def test_what_is_not_an_adapter_of_the_base_model_is_refused_with_the_reason(tmp_path):
    layers, hidden, ffn, kv = bundled_dims()
    with pytest.raises(ValueError, match="not a peft adapter directory"):
        adapter_gguf(tmp_path / "missing", BASE, tmp_path / "cache")
    wide = random_adapter(tmp_path / "wide", seed=0, dims=(layers, hidden * 2, ffn, kv), modules=("self_attn.q_proj",))
    with pytest.raises(ValueError, match="an adapter of another model"):
        adapter_gguf(wide, BASE, tmp_path / "cache")
    deep = random_adapter(tmp_path / "deep", seed=0, dims=(layers + 2, hidden, ffn, kv), modules=("self_attn.q_proj",))
    with pytest.raises(ValueError, match="not a weight of the base model"):
        adapter_gguf(deep, BASE, tmp_path / "cache")
    config = json.loads((wide / "adapter_config.json").read_text()) | {"peft_type": "IA3"}
    (wide / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="only LoRA is served"):
        adapter_gguf(wide, BASE, tmp_path / "cache")
