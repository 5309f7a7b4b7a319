"""What one llama_decode costs by the tokens of one sequence in it, and what prompt-lookup drafts would save.

In-process, on the file slmserve's --weights auto runs: a greedy answer of 128 tokens to the bench's prompt, then
--repeats decodes of k tokens after it (removed again each time), median per k. Then prompt-lookup speculative
decoding replayed on that answer: at each position the last 3..1 tokens are looked up in the prompt and the answer
so far, and up to --draft tokens after the match are drafted; it counts the verifying decodes the answer would take.
Speculative decoding pays only when drafts are accepted more often than the extra tokens cost a decode.

    python scripts/decode_tokens.py [--threads 2] [--single-thread-decode] [--file GGUF] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import llama_cpp as C
import numpy as np

from slmserve.engine.runner_llamacpp import LlamaCppRunner
from slmserve.models import weights
from slmserve.models.registry import resolve_model_path
from slmserve.settings import Settings

PROMPT = "<|im_start|>user\nTell me a story about a cat.<|im_end|>\n<|im_start|>assistant\n"
SIZES = range(1, 9)


def decode(runner: LlamaCppRunner, tokens: list[int], start: int) -> np.ndarray:
    n = len(tokens)
    runner._tokens[:n], runner._pos[:n], runner._seq_ids[:n], runner._logits[:n] = tokens, range(start, start + n), 0, 1
    return runner._decode(n)


def lookup(history: list[int], draft: int) -> list[int]:
    """The tokens after the latest earlier match of the history's last 3, 2 or 1 tokens."""
    for n in (3, 2, 1):
        tail = history[-n:]
        for s in range(len(history) - n - 1, -1, -1):
            if history[s : s + n] == tail:
                return history[s + n : s + n + draft]
    return []


def verifying_decodes(prompt: list[int], answer: list[int], draft: int) -> list[int]:
    """The tokens of each decode a greedy prompt-lookup run needs for the answer (its last token and the drafted
    ones): each decode keeps the drafted tokens the model agrees with, and one of its own."""
    text, i, decodes = prompt + answer, len(prompt), []
    while i < len(text):
        drafted, accepted = lookup(text[:i], draft), 0
        for token in drafted:
            if i + accepted >= len(text) or text[i + accepted] != token:
                break
            accepted += 1
        i = i + accepted + 1
        decodes.append(1 + len(drafted))
    return decodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--single-thread-decode", action="store_true", help="one thread for one-token decodes")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--draft", type=int, default=4, choices=range(1, 8))
    parser.add_argument("--file", type=Path, help="this GGUF instead of the one --weights auto runs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = Settings()
    path = (
        args.file or weights.plan(resolve_model_path(settings.model), settings.weights, Path(settings.cache_dir)).path
    )
    runner = LlamaCppRunner(
        path, n_ctx=16384, n_seq_max=32, n_batch=256, n_threads=args.threads, kv_cache_type=settings.kv_cache_type
    )
    if args.single_thread_decode:
        C.llama_set_n_threads(runner.ctx, 1, args.threads)
    prompt = runner.tokenizer.encode(PROMPT)
    logits, answer = decode(runner, prompt, 0), []
    for _ in range(128):
        answer.append(int(np.argmax(logits[-1])))
        logits = decode(runner, answer[-1:], len(prompt) + len(answer) - 1)
    end = len(prompt) + len(answer)
    ms = {}
    for k in SIZES:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            decode(runner, answer[:k], end)
            times.append(time.perf_counter() - start)
            runner.trim(0, end)
        ms[k] = round(1000 * statistics.median(times), 2)
    runner.close()
    decodes = verifying_decodes(prompt, answer, args.draft)
    plain_s, lookup_s = len(answer) * ms[1] / 1000, sum(ms[k] for k in decodes) / 1000
    result = {
        "file": path.name,
        "threads": args.threads,
        "single_thread_decode": args.single_thread_decode,
        "ms_by_tokens": ms,
        "answer": runner.tokenizer.decode(answer),
        "prompt_lookup": {
            "draft": args.draft,
            "tokens": len(answer),
            "verifying_decodes": len(decodes),
            "seconds_one_token_a_decode": round(plain_s, 3),
            "seconds_with_lookup": round(lookup_s, 3),
        },  # fmt: skip
    }
    print(" | ".join(f"{k} tokens {v} ms" for k, v in ms.items()))
    print(
        f"prompt lookup (up to {args.draft} drafted): {len(decodes)} decodes for {len(answer)} tokens, "
        f"{lookup_s:.2f} s against {plain_s:.2f} s one token a decode (by the times above)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
