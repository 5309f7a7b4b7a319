"""Structured outputs' cost: tok/s with every request under a JSON schema against none, in one server, one run.

Starts `slmserve serve` once and runs `slmserve bench` in alternating rounds (plain, then schema) at each
concurrency: greedy, EOS banned, --max-tokens per request. The schema asks for an array of at least 64 records,
so no request can finish before --max-tokens: both modes generate exactly the same number of tokens, and the
schema's requests spend them on JSON's structure (keys, enums, numbers, brackets), where masks cost the most.
Then, offline, it times the mask of each token of a schema answer on the model's vocabulary: one request
alone (the c=1 cost) and 32 at once (the c=32 cost of a step). Writes summary.json to --out.

    python scripts/bench_structured.py --out docs/bench/structured [--rounds 3] [--concurrency 1,32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_compare import wait_healthy  # noqa: E402

from slmserve.bench import BenchConfig, print_report, run_bench  # noqa: E402
from slmserve.engine.structured import Grammars, MaskFiller, grammar_from  # noqa: E402

RECORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "species": {"enum": ["cat", "dog", "bird", "fish"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 40},
        "weight_kg": {"type": "number"},
        "friendly": {"type": "boolean"},
    },
    "required": ["name", "species", "age", "weight_kg", "friendly"],
    "additionalProperties": False,
}
SCHEMA = {"type": "array", "items": RECORD, "minItems": 64}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "pets", "schema": SCHEMA}}
PROMPT = "List the pets at the shelter as JSON records."


def bench_rounds(url: str, args) -> list[dict]:
    runs = []
    for round_no in range(1, args.rounds + 1):
        for mode, fmt in (("plain", None), ("schema", RESPONSE_FORMAT)):
            config = BenchConfig(
                url=url, levels=args.concurrency, requests=None, max_tokens=args.max_tokens, ignore_eos=True,
                eos_token_ids=[0, 2], model=None, prompt=PROMPT, label=f"{mode} r{round_no}", response_format=fmt,
            )  # fmt: skip
            results = asyncio.run(run_bench(config))
            print_report(config, results)
            runs += [{"mode": mode, "round": round_no, **r.__dict__} for r in results]
    return runs


def mask_times(url: str, args) -> dict:
    """Per-token mask time on the served model's vocabulary, replaying one greedy schema answer."""
    body = {"messages": [{"role": "user", "content": PROMPT}], "temperature": 0, "max_tokens": args.max_tokens}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body | {"response_format": RESPONSE_FORMAT}, timeout=120)
    text = answer.json()["choices"][0]["message"]["content"]
    from slmserve.engine.loader import load_model
    from slmserve.settings import Settings

    model = load_model(Settings())
    grammars, filler = Grammars(model.tokenizer), MaskFiller()
    grammar = grammar_from("json_schema", SCHEMA)
    tokens = model.tokenizer.encode(text, add_special=False)
    started = time.perf_counter()
    grammars.lltokenizer  # noqa: B018 - built once per model; timed apart
    build = time.perf_counter() - started
    out = {"answer_tokens": len(tokens), "lltokenizer_build_s": round(build, 3)}
    for batch in (1, 32):
        constraints = [grammars.matcher(grammar) for _ in range(batch)]
        steps = []
        for token in tokens:
            started = time.perf_counter()
            filler.start(constraints, grammars.vocab_size).result()
            steps.append(time.perf_counter() - started)
            assert all(c.accept(token) for c in constraints)
        out[f"batch{batch}_step_us"] = {
            "mean": round(1e6 * statistics.mean(steps), 1),
            "p50": round(1e6 * float(np.percentile(steps, 50)), 1),
            "p95": round(1e6 * float(np.percentile(steps, 95)), 1),
        }
    started = time.perf_counter()
    for _ in range(100):
        grammars.matcher(grammar)
    out["compile_ms"] = round(10 * (time.perf_counter() - started), 3)
    filler.close()
    model.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    cmd = [str(Path(sys.executable).parent / "slmserve"), "serve", "--port", str(args.port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, "/health", proc)
        runs = bench_rounds(url, args)
        masks = mask_times(url, args)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    summary = []
    for c in args.concurrency:
        med = {
            mode: statistics.median(r["tokens_per_s"] for r in runs if r["mode"] == mode and r["concurrency"] == c)
            for mode in ("plain", "schema")
        }
        summary.append({"concurrency": c, **med, "ratio": round(med["schema"] / med["plain"], 3)})
        print(f"c={c}: plain {med['plain']:.1f} tok/s, schema {med['schema']:.1f} tok/s, ratio {summary[-1]['ratio']}")
    print(json.dumps(masks, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"command": " ".join(sys.argv), "summary": summary, "mask_times": masks, "runs": runs}
    (args.out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
