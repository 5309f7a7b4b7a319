"""Greedy output of the torch engine is token-identical to transformers' generate on the same weights."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.engine.scheduler import Copy
from tests.torch_engine.conftest import torch_settings

QUESTIONS = ["What is the capital of France?", "Write a poem about rain.", "List three fruits.", "Explain gravity."]


def hf_greedy(model_dir, prompts: dict[str, list[int]], max_new_tokens: int) -> dict[str, list[int]]:
    """transformers' own generate, one prompt at a time: the reference."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = {}
    for key, ids in prompts.items():
        gen = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
        out[key] = gen[0, len(ids) :].tolist()
    return out


def ours(model_dir, max_new_tokens: int, kv_ops: list | None = None, **kw):
    """The torch engine on the same directory, all prompts batched together: (prompts, outputs).

    kv_ops, when given, collects the KV cache operations the scheduler sent to the runner.
    """
    model = load_model(torch_settings(model_dir, max_running=8, **kw))
    if kv_ops is not None:
        run = model.runner.run
        model.engine.runner.run = lambda batch: (kv_ops.extend(batch.kv_ops), run(batch))[1]
    prompts = {
        f"q{i}": model.tokenizer.encode(model.chat_template.render([{"role": "user", "content": q}]), False)
        for i, q in enumerate(QUESTIONS)
    }
    outputs = model.engine.generate(prompts, SamplingParams(max_tokens=max_new_tokens, temperature=0))
    model.close()
    return prompts, outputs


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_tiny_random_models_match_generate(fixture, request):
    model_dir = request.getfixturevalue(fixture)
    prompts, outputs = ours(model_dir, 32)
    reference = hf_greedy(model_dir, prompts, 32)
    assert outputs == reference
    assert all(len(v) == 32 for v in outputs.values())  # random weights rarely pick EOS: full-length comparisons


def test_bundled_smollm2_matches_generate(smollm2_dir):
    prompts, outputs = ours(smollm2_dir, 48)
    assert outputs == hf_greedy(smollm2_dir, prompts, 48)
    assert sum(len(v) for v in outputs.values()) > 80  # real answers, not early stops


def test_chunked_prefill_and_prefix_reuse_keep_the_output(smollm2_dir):
    """Prompts prefilled in 16-token chunks, later ones copying the shared system prompt's KV, match generate."""
    kv_ops = []
    prompts, outputs = ours(smollm2_dir, 24, kv_ops, step_token_budget=16)
    assert outputs == hf_greedy(smollm2_dir, prompts, 24)
    assert any(isinstance(op, Copy) and op.n >= 16 for op in kv_ops)  # the prefix was reused, not recomputed
