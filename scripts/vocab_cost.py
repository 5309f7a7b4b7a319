"""What a model's vocabulary size costs the engine a step: sampling, structured-output masks, detokenizing.

SmolLM2 has 49,152 tokens, Gemma 3 270M 262,144. Each part is timed on its own with the engine's own functions,
the models' real tokenizers and fake logits of the right width, for 1 and 32 sequences sampling a step; then, if
--steps, whole decode steps of the real engine (forward, then everything after it: sampling, masks, detokenizing).
Milliseconds per engine step (all rows), the median of --repeat runs. Gemma needs slmserve[gemma].

    python scripts/vocab_cost.py --json runs/vocab_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import numpy as np

from slmserve.engine.detokenizer import Detokenizer
from slmserve.engine.sampling import SamplingParams, make_rng, sample
from slmserve.engine.structured import Grammars, MaskFiller, allowed_tokens, grammar_from
from slmserve.models.llamacpp_vocab import LlamaCppVocab
from slmserve.models.registry import resolve_model_path

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
SAMPLERS = {
    "greedy": {"temperature": 0},
    "t=1": {"temperature": 1},
    "t=0.7 top_p=0.9": {"temperature": 0.7, "top_p": 0.9},
    "t=0.8 top_k=40": {"temperature": 0.8, "top_k": 40},
    "t=1 min_p=0.05": {"temperature": 1, "min_p": 0.05},
    "greedy logprobs=5": {"temperature": 0, "logprobs": 5},
    "greedy repetition_penalty=1.1": {"temperature": 0, "repetition_penalty": 1.1},
}
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
# Grammar states: where a JSON answer begins (few tokens allowed) and inside a string (nearly all allowed).
STATES = {"object start": "", "inside a string": '{"name": "Al'}
TEXT = "The quick brown fox jumps over the lazy dog; naïve café owners say “déjà vu” 42 times. " * 8


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm: first-use caches, allocations
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def fake_logits(vocab_size: int, rows: int) -> np.ndarray:
    """[rows, V] float32: a spread like a small model's (a few tokens far ahead of a long tail)."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((rows, vocab_size), dtype=np.float32) * 2.5
    logits[:, rng.integers(0, vocab_size, 8)] += 12
    return logits


def sampling_costs(vocab_size: int, users: int, repeat: int) -> dict[str, float]:
    logits = fake_logits(vocab_size, users)
    prompt, output = list(range(1000, 1100)), list(range(2000, 2032))
    out = {}
    for name, kw in SAMPLERS.items():
        params = SamplingParams(**kw)
        rngs = [make_rng(i) for i in range(users)]

        def step(p: SamplingParams = params, r: list = rngs) -> None:
            for i in range(users):
                sample(logits[i], p, r[i], prompt, output)

        out[name] = median_ms(step, repeat)
    return out


def structured_costs(tokenizer, vocab_size: int, users: int, repeat: int) -> dict[str, float]:
    """The masks' fill (llguidance, on the helper thread while the model runs), then on the engine thread the
    unpacking, the loop guard's bans and greedy sampling under the mask."""
    grammars = Grammars(tokenizer, vocab_size)
    out = {"first use: token table (once per model)": 1000 * _once(lambda: grammars.lltokenizer)}
    out["first use: guard table (once per model)"] = 1000 * _once(lambda: grammars.guard_vocab)
    grammar = grammar_from("json_schema", SCHEMA)
    logits = fake_logits(vocab_size, users)
    filler = MaskFiller()
    for state, prefix in STATES.items():
        constraints = []
        for _ in range(users):
            c = grammars.matcher(grammar)
            for t in tokenizer.encode(prefix, add_special=False):
                assert c.accept(t), f"the grammar refused {prefix!r}"
            constraints.append(c)
        out[f"{state}: fill masks"] = median_ms(lambda cs=constraints: filler.start(cs, vocab_size).result(), repeat)
        bitmask = filler.start(constraints, vocab_size).result()
        params, rng = SamplingParams(temperature=0), make_rng(0)

        def apply(bm=bitmask, p=params, r=rng) -> None:
            for i in range(users):
                sample(logits[i], p, r, [], [], allowed_tokens(bm[i], vocab_size))

        out[f"{state}: unpack + greedy sample under the mask"] = median_ms(apply, repeat)
    filler.close()
    return out


def _once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def detokenize_cost(tokenizer, users: int, repeat: int) -> dict[str, float]:
    """One token pushed into each of `users` detokenizers (a stop string held back), a step at a time."""
    ids = tokenizer.encode(TEXT, add_special=False)
    steps = min(64, len(ids))

    def run() -> None:
        detoks = [Detokenizer(tokenizer.token_bytes, ["\n\nUser:"]) for _ in range(users)]
        for t in ids[:steps]:
            for d in detoks:
                d.push(t)

    return {"push (per step)": median_ms(run, repeat) / steps}


def step_costs(model: str, users: int, max_tokens: int) -> dict[str, float]:
    """Whole decode steps of the real engine: ms a step for the forward (runner.run) and for the rest."""
    from slmserve.engine.loader import load_model
    from slmserve.settings import Settings

    loaded = load_model(Settings(model=model, max_running=users, ctx_size=users * 256, max_waiting=64))
    engine, out = loaded.engine, {}
    prompt = loaded.tokenizer.encode("Tell me a story about a cat.")
    try:
        for name in ("greedy", "t=1"):
            run_s = [0.0]
            real_run = loaded.runner.run

            def timed_run(batch, real=real_run, acc=run_s):
                start = time.perf_counter()
                try:
                    return real(batch)
                finally:
                    acc[0] += time.perf_counter() - start

            params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, seed=1, **SAMPLERS[name])
            for i in range(users):
                engine.add_request(f"{name}-{i}", prompt, params)
            for _ in range(3):  # prefill and the first decode steps, not counted
                engine.step()
            engine.runner.run, steps, start = timed_run, 0, time.perf_counter()
            while engine.has_work:
                engine.step()
                steps += 1
            wall = time.perf_counter() - start
            engine.runner.run = real_run
            out[f"{name}: forward"] = 1000 * run_s[0] / steps
            out[f"{name}: after the forward"] = 1000 * (wall - run_s[0]) / steps
    finally:
        loaded.close()
    return out


def cpu_name() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--users", default="1,32", help="sequences sampling a step, comma-separated")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--steps", action="store_true", help="also time whole decode steps of the real engine")
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens per request in --steps")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    users_list = [int(u) for u in args.users.split(",")]
    doc = {"cpu": cpu_name(), "command": "python scripts/vocab_cost.py " + " ".join(_argv()), "models": {}}
    for model in args.models.split(","):
        vocab = LlamaCppVocab(resolve_model_path(model))
        tok = vocab.tokenizer
        entry = doc["models"][model] = {"vocab_size": tok.vocab_size, "ms_per_step": {}}
        for users in users_list:
            figures = {f"sample {k}": v for k, v in sampling_costs(tok.vocab_size, users, args.repeat).items()}
            structured = structured_costs(tok, tok.vocab_size, users, args.repeat)
            figures.update({f"structured {k}": v for k, v in structured.items()})
            figures.update({f"detokenize {k}": v for k, v in detokenize_cost(tok, users, args.repeat).items()})
            if args.steps:
                figures.update({f"step {k}": v for k, v in step_costs(model, users, args.max_tokens).items()})
            entry["ms_per_step"][str(users)] = figures
        vocab.close()
    report(doc, users_list)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


def report(doc: dict, users_list: list[int]) -> None:
    models = list(doc["models"])
    print(f"CPU: {doc['cpu']}; ms per engine step (all rows)")
    header = [f"{m} ({doc['models'][m]['vocab_size']:,}) x{u}" for m in models for u in users_list]
    print(f"{'':58s}" + "".join(f"{h:>34s}" for h in header))
    first = doc["models"][models[0]]["ms_per_step"][str(users_list[0])]
    for key in first:
        cells = [doc["models"][m]["ms_per_step"][str(u)].get(key) for m in models for u in users_list]
        print(f"{key:58s}" + "".join(f"{c:34.3f}" if c is not None else f"{'-':>34s}" for c in cells))


if __name__ == "__main__":
    main()
