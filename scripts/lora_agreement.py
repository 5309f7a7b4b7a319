"""A fine-tuned LoRA adapter on llama.cpp against the torch engine's: greedy agreement and the style kept.

Every question of the adapter's dataset (examples/finetune/pirate.jsonl by default, training and validation rows)
plus questions it never saw goes through the chat template to both engines with the adapter, greedy, --max-tokens
each. Prints and writes JSON: the share of identical answers, of identical first 32 tokens, and of answers starting
with --style ("Arr") on each engine, for each llama.cpp weight layout asked for. The torch engine runs the bundled
GGUF dequantized to fp32; llama.cpp runs the layouts named, so the figures hold the quantization's effect too.

    python scripts/lora_agreement.py --adapter ./pirate --layouts auto,original,f16 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.settings import Settings

DATASET = Path(__file__).parents[1] / "examples" / "finetune" / "pirate.jsonl"
UNSEEN = [
    "What is the capital of Italy?", "How many legs does a dog have?", "What colour is grass?",
    "Why is the sky blue?", "What do bees make?", "How many days are in a week?", "What is ice made of?",
    "Who wrote Romeo and Juliet?", "What is the largest ocean?", "How do plants drink water?",
]  # fmt: skip


def questions(dataset: Path) -> list[str]:
    rows = [json.loads(line) for line in dataset.read_text().splitlines() if line.strip()]
    asked = [r["instruction"] if "instruction" in r else r["messages"][0]["content"] for r in rows]
    return asked + [q for q in UNSEEN if q not in asked]


def answers(settings: Settings, asked: list[str], max_tokens: int, adapter: str | None = "a") -> list[list[int]]:
    model = load_model(settings)
    render = model.chat_template.render
    prompts = {
        str(i): model.tokenizer.encode(render([{"role": "user", "content": q}]), False) for i, q in enumerate(asked)
    }
    out = model.engine.generate(
        prompts, SamplingParams(max_tokens=max_tokens, temperature=0), dict.fromkeys(prompts, adapter)
    )
    decoded = [out[str(i)] for i in range(len(asked))]
    model.close()
    return decoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--layouts", default="auto,original,f16", help="llama.cpp --weights layouts to compare")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--style", default="Arr")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    asked = questions(args.dataset)
    common = dict(lora=[f"a={args.adapter}"], max_running=16)
    torch_ids = answers(Settings(engine="torch", device="cpu", **common), asked, args.max_tokens)
    torch_base = answers(Settings(engine="torch", device="cpu", **common), asked, args.max_tokens, None)
    tokenizer = load_model(Settings(max_running=1)).tokenizer  # the same vocabulary on both engines
    styled = lambda ids: tokenizer.decode(ids).lstrip().startswith(args.style)  # noqa: E731
    rows = []
    for layout in args.layouts.split(","):
        for adapter, reference in (("a", torch_ids), (None, torch_base)):
            ids = answers(Settings(weights=layout, **common), asked, args.max_tokens, adapter)
            pairs = list(zip(ids, reference, strict=True))
            rows.append({
                "weights": layout,
                "model": "adapter" if adapter else "base",
                "identical_answers": sum(a == b for a, b in pairs) / len(pairs),
                "identical_first_32": sum(a[:32] == b[:32] for a, b in pairs) / len(pairs),
                "style_llama_cpp": sum(map(styled, ids)) / len(ids),
                "style_torch": sum(map(styled, reference)) / len(ids),
            })  # fmt: skip
    print(f"{len(asked)} questions, {args.max_tokens} greedy tokens, adapter {args.adapter}")
    for r in rows:
        same = f"identical answers {r['identical_answers']:.0%}, first 32 tokens {r['identical_first_32']:.0%}"
        style = f"'{args.style}' llama.cpp {r['style_llama_cpp']:.0%}, torch {r['style_torch']:.0%}"
        print(f"  {r['model']:>7}, llama.cpp --weights {r['weights']:>8}: {same}; {style}")
    if args.json:
        report = {"adapter": str(args.adapter), "questions": len(asked), "max_tokens": args.max_tokens, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
