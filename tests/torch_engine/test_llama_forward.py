"""The lean Llama forward: taken for Llama models only, its weights shared with the modules, its logits the bits
that transformers' own modules give through the same slot cache."""

from __future__ import annotations

import numpy as np

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from tests.torch_engine.conftest import torch_settings


def test_llama_models_take_the_lean_forward_and_others_do_not(tiny_llama, tiny_gpt2):
    gpt2 = load_model(torch_settings(tiny_gpt2))
    assert gpt2.runner._llama is None
    gpt2.close()
    llama = load_model(torch_settings(tiny_llama))
    lean = llama.runner._llama
    assert lean is not None
    qkv, _ = lean._qkv[1]
    attn = llama.runner._decoder.layers[1].self_attn
    # The modules' weights are views into the fused matrix: one copy of the weights, which peft's layers wrap.
    for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        assert proj.weight.untyped_storage().data_ptr() == qkv.untyped_storage().data_ptr()
    assert attn.k_proj.weight.data_ptr() == qkv[attn.q_proj.out_features :].data_ptr()
    llama.close()


def step_logits(model_dir, lean: bool, prompts: list[str], n: int) -> list[np.ndarray]:
    """Every step's logits for greedy requests, with the lean forward or with transformers' modules."""
    model = load_model(torch_settings(model_dir, max_running=len(prompts)))
    if not lean:
        model.runner._llama = None
    logits = []
    run = model.runner.run
    model.engine.runner.run = lambda batch: (out := run(batch), logits.append(out.copy()))[0]
    chat = model.chat_template.render
    ids = {p: model.tokenizer.encode(chat([{"role": "user", "content": p}]), False) for p in prompts}
    model.engine.generate(ids, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
    model.close()
    return logits


def test_the_lean_forward_gives_transformers_modules_bits(smollm2_dir):
    """16 sequences: prefill and decode steps both multiply 16 rows or more, MKL's other orientation."""
    prompts = [f"Count from {i} to {i + 5}." for i in range(16)]
    lean = step_logits(smollm2_dir, True, prompts, 6)
    reference = step_logits(smollm2_dir, False, prompts, 6)
    assert len(lean) == len(reference) >= 6
    assert [x.shape for x in lean] == [x.shape for x in reference]
    assert all(np.array_equal(a, b) for a, b in zip(lean, reference, strict=True))
