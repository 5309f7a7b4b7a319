"""Where a structured answer's time goes (issue 31): the engine in process, no HTTP, the bundled model.

Runs the first --prompts prompts of each json_schema task of structured_eval_tasks.json together (up to --users at
once), under the server's guards (grammar, loop guard, budget close, DRY 0.8 over the answer; --no-guards: the
grammar alone), then the same prompts unconstrained for as many tokens as each structured answer took (ignore_eos),
every prompt's KV cached first so neither side pays its prefill. Prints tok/s of both, the tokens the runner was
fed (a token taken back by the guard was fed and thrown away), the steps that carried a KV trim and their time,
the masks' time (computed in line here, not on the helper thread, to be counted) and a cProfile of the structured
run. Writes JSON to --out.

    python scripts/structured_cost.py --users 32 --out /tmp/cost.json
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import pstats
import time
from concurrent.futures import Future
from pathlib import Path

import llguidance as llg

from slmserve.engine import structured
from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.engine.structured import grammar_from
from slmserve.models.chat_template import chat_prompt_ids
from slmserve.settings import Settings

TASKS = Path(__file__).with_name("structured_eval_tasks.json")


class Counted:
    """The runner's calls, counted: steps, tokens fed, steps with KV ops and their seconds, masks' seconds."""

    def __init__(self, engine) -> None:
        self.n = collections.Counter()
        self.seconds = collections.Counter()
        run = engine.runner.run

        def counted_run(batch):
            start = time.perf_counter()
            out = run(batch)
            took = time.perf_counter() - start
            self.n["steps"] += 1
            self.n["fed"] += sum(c.length for c in batch.chunks)
            self.seconds["runner"] += took
            if batch.kv_ops:
                self.n["steps_with_kv_ops"] += 1
                self.seconds["steps_with_kv_ops"] += took
            return out

        engine.runner.run = counted_run

        def masks_in_line(filler, constraints, vocab_size):
            if filler._executor is None:
                filler._executor = llg.LLExecutor()
            start, done = time.perf_counter(), Future()
            done.set_result(filler._fill(constraints, vocab_size))
            self.seconds["masks"] += time.perf_counter() - start
            return done

        structured.MaskFiller.start = masks_in_line

    def take(self) -> dict:
        out = dict(self.n) | {f"{k}_s": round(v, 3) for k, v in self.seconds.items()}
        self.n.clear()
        self.seconds.clear()
        return out


def conversation(task: dict, prompt: str) -> list[dict]:
    system = [{"role": "system", "content": task["system"]}] if task.get("system") else []
    return [*system, {"role": "user", "content": prompt}]


def run(engine, jobs: list[tuple[list[int], SamplingParams]]) -> tuple[list[int], float]:
    """All jobs together to the end: each one's output tokens, and the wall time."""
    for i, (ids, params) in enumerate(jobs):
        engine.add_request(f"r{i}", ids, params)
    done, start = {}, time.perf_counter()
    while engine.has_work:
        for out in engine.step():
            done[out.request_id] = out.num_output_tokens
    return [done[f"r{i}"] for i in range(len(jobs))], time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=32, help="requests at once (--max-running)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per json_schema task")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--no-guards", action="store_true", help="the grammar alone: no loop guard, budget close, DRY")
    p.add_argument("--weights", default="auto")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    model = load_model(Settings(max_running=args.users, weights=args.weights))
    engine, tokenizer = model.engine, model.tokenizer
    tasks = [t for t in json.loads(TASKS.read_text())["tasks"] if t["kind"] == "json_schema"]
    prompts = [(t, chat_prompt_ids(model.chat_template, tokenizer, conversation(t, q))) for t in tasks
               for q in t["prompts"][: args.prompts]][: args.users]  # fmt: skip
    guards = not args.no_guards
    counted = Counted(engine)

    def structured_params(task: dict) -> SamplingParams:
        dry = {"dry_multiplier": 0.8, "dry_answer_only": True} if guards else {}
        return SamplingParams(max_tokens=args.max_tokens, temperature=0, grammar=grammar_from("json_schema",
                              task["schema"]), loop_guard=guards, budget_close=guards, **dry)  # fmt: skip

    run(engine, [(ids, structured_params(t)) for t, ids in prompts[:1]])  # the grammar tables built once
    run(engine, [(ids, SamplingParams(max_tokens=4, ignore_eos=True)) for _, ids in prompts])  # the KV cached
    counted.take()
    profile = cProfile.Profile()
    profile.enable()
    lengths, structured_s = run(engine, [(ids, structured_params(t)) for t, ids in prompts])
    profile.disable()
    structured_counts = counted.take()
    plain = [(ids, SamplingParams(max_tokens=max(n, 1), temperature=0, ignore_eos=True)) for (_, ids), n in
             zip(prompts, lengths, strict=True)]  # fmt: skip
    _, plain_s = run(engine, plain)
    plain_counts = counted.take()

    tokens = sum(lengths)
    result = {
        "users": len(prompts), "guards": guards, "weights": model.weights, "tokens": tokens,
        "structured_tok_s": round(tokens / structured_s, 1), "plain_tok_s": round(tokens / plain_s, 1),
        "ratio": round(plain_s / structured_s, 3), "structured": structured_counts, "plain": plain_counts,
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
    print(text.getvalue())
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
