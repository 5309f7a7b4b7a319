"""How often does a greedy request give the same tokens alone and among 16 concurrent others?

Runs 8 different target prompts, each alone and then beside --crowd (16) other requests, in both KV layouts of the
llama.cpp engine (split streams, the default, and --kv-unified) and on the torch engine (fp32, the same weights
dequantized), and reports how many matched and where the others first diverged.

    python scripts/batch_invariance.py [--json docs/bench/batch_invariance.json] [--engines llama.cpp,torch]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.settings import Settings

TOPICS = ["the sea", "a cat", "Paris", "rain", "computers", "music", "a forest", "the moon"]


def measure(kv_unified: bool, max_tokens: int, crowd: int, engine: str = "llama.cpp") -> dict:
    settings = Settings(
        kv_unified=kv_unified, ctx_size=8192 if kv_unified else 16384, max_running=crowd + 1, engine=engine
    )
    model = load_model(settings)
    enc = lambda text: model.tokenizer.encode(  # noqa: E731
        model.chat_template.render([{"role": "user", "content": text}]), add_special=False
    )
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    divergences = []
    for i, topic in enumerate(TOPICS):
        target = enc(f"Write a paragraph about {topic}.")
        alone = model.engine.generate({"t": target}, params)["t"]
        others = {f"o{k}": enc(f"Question {i}.{k}: name a number.") for k in range(crowd)}
        among = model.engine.generate({**others, "t": target}, params)["t"]
        first = next((k for k, (a, b) in enumerate(zip(alone, among, strict=True)) if a != b), None)
        divergences.append(first)
    model.close()
    same = sum(d is None for d in divergences)
    return {
        "engine": engine,
        "kv_unified": kv_unified,
        "trials": len(TOPICS),
        "identical": same,
        "first_divergence_token": [d for d in divergences if d is not None],
        "max_tokens": max_tokens,
        "crowd": crowd,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--crowd", type=int, default=16, help="concurrent other requests")
    parser.add_argument("--engines", default="llama.cpp,torch")
    args = parser.parse_args()
    engines = args.engines.split(",")
    results = []
    if "llama.cpp" in engines:
        results += [measure(False, args.max_tokens, args.crowd), measure(True, args.max_tokens, args.crowd)]
    if "torch" in engines:
        results.append(measure(False, args.max_tokens, args.crowd, "torch"))
    for r in results:
        layout = (
            "torch engine, slot cache"
            if r["engine"] == "torch"
            else ("unified KV buffer" if r["kv_unified"] else "split KV streams")
        )
        diverged = r["first_divergence_token"]
        print(f"{layout}, {r['crowd']} others: {r['identical']}/{r['trials']} identical; diverged at tokens {diverged}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
