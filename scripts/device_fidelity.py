"""Greedy output of the torch engine against transformers' generate, on a tiny random Llama (GQA), on any device.

tests/torch_engine/test_fidelity.py checks this on the CPU; this script is for a lent GPU machine, where the tests'
models cannot be built from the bundled GGUF. It needs only a tokenizer directory (SmolLM2's, for example):

    python scripts/device_fidelity.py --tokenizer DIR --device cuda --dtypes float32,bfloat16

For each dtype it prints how many prompts match generate token for token, and for the others the index of the
first token that differs.
"""

from __future__ import annotations

import argparse

import torch
from bench_engine import chat_ids, random_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.settings import Settings

QUESTIONS = ["What is the capital of France?", "Write a poem about rain.", "List three fruits.", "Explain gravity."]


def tiny_llama(tokenizer_dir: str) -> str:
    config = LlamaConfig(
        vocab_size=len(AutoTokenizer.from_pretrained(tokenizer_dir)), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.2, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return random_model(tokenizer_dir, config)


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The index of the first token where a and b differ (one ending first counts), or None if they are equal."""
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    return at if at is not None or len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="a directory with a Hugging Face tokenizer")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    path = tiny_llama(args.tokenizer)
    for dtype in args.dtypes.split(","):
        model = load_model(Settings(model=path, engine="torch", device=args.device, dtype=dtype, max_running=8))
        prompts = {f"q{i}": chat_ids(model, q) for i, q in enumerate(QUESTIONS)}
        ours = model.engine.generate(prompts, SamplingParams(max_tokens=args.max_tokens, temperature=0))
        model.close()
        reference = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(args.device).eval()
        differs = {}
        for key, ids in prompts.items():
            out = reference.generate(
                torch.tensor([ids], device=args.device), max_new_tokens=args.max_tokens, do_sample=False
            )
            if (at := first_difference(out[0, len(ids) :].tolist(), ours[key])) is not None:
                differs[key] = at
        same = len(prompts) - len(differs)
        detail = f"; first differing token: {differs}" if differs else ""
        print(f"{args.device} {dtype}: {same}/{len(prompts)} prompts token-identical to generate{detail}")


if __name__ == "__main__":
    main()
