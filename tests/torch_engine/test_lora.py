"""LoRA adapters in the torch engine: each request gets its own adapter, mixed in one step, as peft computes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from tests.torch_engine.conftest import torch_settings


def random_adapter(base_dir: Path, out: Path, seed: int, targets=("q_proj", "v_proj", "down_proj")) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so it changes the model's output without training."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_llama, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: random_adapter(tiny_llama, root / name, seed) for seed, name in enumerate(["red", "blue"])}


def peft_greedy(base_dir: Path, adapter: Path | None, ids: list[int], n: int) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    gen = model.eval().generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return gen[0, len(ids) :].tolist()


def test_mixed_adapters_in_one_step_match_peft(tiny_llama, adapters):
    """Base, red and blue requests run together (one forward per step) and each equals peft's own generate."""
    lora = [f"{name}={path}" for name, path in adapters.items()]
    model = load_model(torch_settings(tiny_llama, max_running=8, lora=lora))
    ids = model.tokenizer.encode("Once upon a time", add_special=False)
    which = {"base": None, "red": "red", "blue": "blue", "red2": "red"}
    steps = []
    run = model.runner.run
    model.engine.runner.run = lambda batch: (steps.append({c.seq.adapter for c in batch.chunks}), run(batch))[1]
    out = model.engine.generate(dict.fromkeys(which, ids), SamplingParams(max_tokens=16, temperature=0), which)
    model.close()
    assert {None, "red", "blue"} in steps  # the adapters shared steps, not one step per adapter
    for key, adapter in which.items():
        assert out[key] == peft_greedy(tiny_llama, adapters[adapter] if adapter else None, ids, 16), key
    assert len({tuple(out["base"]), tuple(out["red"]), tuple(out["blue"])}) == 3  # the adapters do change outputs


def test_adapter_kv_is_not_reused_across_adapters(tiny_llama, adapters):
    """The same prompt under another adapter must recompute its KV, not copy the first one's."""
    model = load_model(torch_settings(tiny_llama, max_running=2, lora=[f"red={adapters['red']}"]))
    ids = model.tokenizer.encode("The same long prompt for both requests, word for word.", add_special=False)
    params = SamplingParams(max_tokens=8, temperature=0)
    base_first = model.engine.generate({"a": ids}, params)["a"]
    red_after_base = model.engine.generate({"b": ids}, params, {"b": "red"})["b"]
    model.close()
    assert red_after_base == peft_greedy(tiny_llama, adapters["red"], ids, 8)
    assert red_after_base != base_first


def test_bad_lora_flags_are_refused_with_a_message(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="NAME=PATH"):
        load_model(torch_settings(tiny_llama, lora=["no-equals-sign"]))
    with pytest.raises(ValueError, match="cannot load the LoRA adapter"):
        load_model(torch_settings(tiny_llama, lora=[f"x={tmp_path}"]))


def test_base_steps_keep_the_fused_products_while_adapters_are_loaded(tiny_llama, adapters):
    """The lean forward's fused matrices hold the base weights: steps with no adapter use them, steps with one call
    the LoRA-wrapped modules; both give what transformers and peft give."""
    model = load_model(torch_settings(tiny_llama, max_running=2, lora=[f"red={adapters['red']}"]))
    lean, calls = model.runner._llama, []

    def spy(input_ids, step, fused: bool):
        calls.append(fused)
        return lean(input_ids, step, fused=fused)

    model.runner._llama = spy
    ids = model.tokenizer.encode("Once upon a time", add_special=False)
    params = SamplingParams(max_tokens=8, temperature=0)
    base = model.engine.generate({"a": ids}, params)["a"]
    base_calls = calls.copy()
    calls.clear()
    red = model.engine.generate({"b": ids}, params, {"b": "red"})["b"]
    model.close()
    assert base_calls and all(base_calls)
    assert calls and not any(calls)
    assert base == peft_greedy(tiny_llama, None, ids, 8)
    assert red == peft_greedy(tiny_llama, adapters["red"], ids, 8)
