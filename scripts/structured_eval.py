"""Answers an app can use (issue 31): JSON that validates and closes, no repeated list items, tool calls that end.

Runs the tasks of structured_eval_tasks.json (schemas, json_object, tools; prompts as users write them) against
`slmserve serve`, once per weight layout (`--weights auto`, `--weights original`) and per arm:

    guards      the server's defaults: budget close and loop guard on under response_format / tools
    off         "loop_guard": false, "budget_close": false
    dry         off, plus llama.cpp's DRY sampler ("dry_multiplier": 0.8; the server's dry_base etc.)
    guards+dry  the defaults plus DRY

A server that does not know these extras ignores them, so every arm then measures the same baseline. Per layout,
arm, temperature, max_tokens and task: valid % (jsonschema), closed before the budget % (finish stop / tool_calls
and no closed_at_budget), repeated list items (equal to an earlier item of the same list; answers that do not parse
are read leniently), repeated tool calls, mean tokens. Speed: tok/s of the constrained requests against the same
prompts unconstrained for as many tokens (ignore_eos), in rounds at each --concurrency. --small-budgets
sweeps max_tokens from a few tokens above each schema's minimum (from the server's 400, else 8) up to 64 at T=0.
Writes summary.json and results.jsonl (every request) to --out.

    python scripts/structured_eval.py --out docs/bench/structured_eval --small-budgets
    python scripts/structured_eval.py --quick --out /tmp/se    # smoke: 2 tasks x 2 prompts, T 0, max_tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from slmserve.tools import launch
from slmserve.tools.structured_metrics import score, summarize, targets

TASKS = Path(__file__).with_name("structured_eval_tasks.json")
DRY, OFF = {"dry_multiplier": 0.8}, {"loop_guard": False, "budget_close": False}
ARMS = {"guards": {}, "off": OFF, "dry": OFF | DRY, "guards+dry": DRY}
console = Console()


def load_tasks(path: Path = TASKS) -> list[dict]:
    return json.loads(path.read_text())["tasks"]


def conversation(task: dict, prompt: str | dict) -> tuple[list[dict], list[dict]]:
    """(messages, tool calls already in them) for a prompt: a user's text, or {user, call, result}."""
    messages = [{"role": "system", "content": task["system"]}] if task.get("system") else []
    if isinstance(prompt, str):
        return [*messages, {"role": "user", "content": prompt}], []
    fn = {"name": prompt["call"]["name"], "arguments": json.dumps(prompt["call"]["arguments"])}
    call = {"id": "call_0", "type": "function", "function": fn}
    return [
        *messages, {"role": "user", "content": prompt["user"]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": json.dumps(prompt["result"])},
    ], [call]  # fmt: skip


def request(task: dict, prompt, max_tokens: int, temperature: float, extras: dict, constrained: bool = True) -> dict:
    """A job: the /v1/chat/completions body (under the task's format or tools unless not constrained) and the
    history's calls."""
    messages, history = conversation(task, prompt)
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature, "seed": 7, **extras}
    if constrained and task["kind"] == "json_schema":
        schema = {"name": task["name"], "schema": task["schema"]}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif constrained and task["kind"] == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif constrained:
        body |= {"tools": task["tools"], "tool_choice": task.get("tool_choice", "auto")}
    meta = {"task": task["name"], "max_tokens": max_tokens, "temperature": temperature}
    return meta | {"body": body, "history": history}


async def run_jobs(url: str, jobs: list[dict], concurrency: int) -> float:
    """Send the jobs with `concurrency` users (each sends its next one when its last is answered); each job gets
    status, response and latency_s. Returns the wall time."""
    pending = list(reversed(jobs))
    async with httpx.AsyncClient(base_url=url, timeout=1800) as client:

        async def user() -> None:
            while pending:
                job, start = pending.pop(), time.perf_counter()
                try:
                    r = await client.post("/v1/chat/completions", json=job["body"])
                    job["status"], job["response"] = r.status_code, r.json()
                except (httpx.HTTPError, ValueError) as exc:
                    job["status"], job["response"] = 0, {"error": {"message": repr(exc)}}
                job["latency_s"] = round(time.perf_counter() - start, 3)

        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(min(concurrency, len(jobs)))))
        return time.perf_counter() - start


def scored(jobs: list[dict], tasks: dict[str, dict], **meta) -> list[dict]:
    out = []
    for job in jobs:
        record = {**meta, "task": job["task"], "prompt": job["prompt"], "max_tokens": job["max_tokens"]}
        record |= {"temperature": job["temperature"], "latency_s": job["latency_s"]}
        measures = score(tasks[job["task"]], job["history"], job["status"], job["response"], job["max_tokens"])
        out.append(record | measures)
    return out


def tokens(job: dict) -> int:
    return (job["response"].get("usage") or {}).get("completion_tokens", 0) if job["status"] == 200 else 0


def quality(url: str, args, tasks: list[dict], arm: str, layout: str) -> tuple[list[dict], list[dict]]:
    """Every task x prompt at each temperature: the records and one summary row per task (and "ALL")."""
    records, rows, by_name = [], [], {t["name"]: t for t in tasks}
    for temperature in args.temperatures:
        jobs = [
            request(t, p, args.max_tokens, temperature, ARMS[arm]) | {"prompt": i}
            for t in tasks for i, p in enumerate(t["prompts"][: args.prompts])
        ]  # fmt: skip
        wall = asyncio.run(run_jobs(url, jobs, max(args.concurrency)))
        meta = {"layout": layout, "arm": arm, "temperature": temperature, "max_tokens": args.max_tokens}
        got = scored(jobs, by_name, phase="quality", layout=layout, arm=arm)
        records += got
        for name in [*by_name, "ALL"]:
            summary = summarize([r for r in got if name in ("ALL", r["task"])])
            rows.append(meta | {"task": name} | summary)
        rows[-1]["tok_s"] = round(sum(map(tokens, jobs)) / wall, 1)
        console.print(f"{layout} {arm} T={temperature}: {len(jobs)} requests in {wall:.0f} s, ALL: {rows[-1]}")
    return records, rows


def minimum_tokens(url: str, task: dict) -> int | None:
    """The fewest tokens the server says a schema's answer needs (its 400 at max_tokens=1), None if it does not say."""
    job = request(task, task["prompts"][0], 1, 0.0, {})
    asyncio.run(run_jobs(url, [job], 1))
    if job["status"] != 400:
        return None
    numbers = [int(n) for n in re.findall(r"\d+", json.dumps(job["response"])) if int(n) > 1]
    return max(numbers) if numbers else None


def small_budgets(url: str, args, tasks: list[dict], arms: list[str], layout: str) -> tuple[list[dict], list[dict]]:
    """max_tokens from a few above each json_schema task's minimum up to 64, T=0, --small-prompts prompts."""
    records, rows = [], []
    for task in (t for t in tasks if t["kind"] == "json_schema"):
        least = minimum_tokens(url, task)
        start = least + 3 if least else 8
        budgets = sorted(b for b in {start, start + 4, start + 8, 24, 32, 48, 64} if start <= b <= 64)
        for arm in arms:
            jobs = [
                request(task, p, b, 0.0, ARMS[arm]) | {"prompt": i}
                for b in budgets for i, p in enumerate(task["prompts"][: args.small_prompts])
            ]  # fmt: skip
            asyncio.run(run_jobs(url, jobs, max(args.concurrency)))
            got = scored(jobs, {task["name"]: task}, phase="small", layout=layout, arm=arm)
            records += got
            rows.append({"layout": layout, "arm": arm, "task": task["name"], "minimum": least, "budgets": budgets}
                        | summarize(got))  # fmt: skip
    return records, rows


def speed(url: str, args, tasks: list[dict], arms: list[str], layout: str) -> tuple[list[dict], list[dict]]:
    """tok/s at each concurrency, T=0, in rounds: the prompts under each arm's constraints, then the same prompts
    unconstrained for as many tokens as the first arm's answer to each took (ignore_eos), so both sides do the same
    work; unconstrained answers to these prompts mostly run to max_tokens, and a shorter answer pays its prefill
    over fewer tokens (tool definitions are in the constrained prompts only: that cost stays in)."""
    records, rows = [], []
    for c in args.concurrency:
        prompts = [(t, i, p) for t in tasks for i, p in enumerate(t["prompts"][: args.speed_prompts])]
        prompts = (prompts * (2 * c // len(prompts) + 1))[: max(len(prompts), 2 * c)]  # at least 2 per user
        rates: dict[str, list[float]] = {}
        for round_no in range(1, args.rounds + 1):
            lengths: list[int] = []
            for mode in [*arms, "plain"]:
                jobs = [
                    request(t, p, args.max_tokens, 0.0, ARMS.get(mode, {}), mode != "plain") | {"prompt": i}
                    for t, i, p in prompts
                ]  # fmt: skip
                if mode == "plain":
                    for job, n in zip(jobs, lengths, strict=True):
                        job["body"] |= {"max_tokens": max(n, 1), "ignore_eos": True}
                wall = asyncio.run(run_jobs(url, jobs, c))
                lengths = lengths or [tokens(j) for j in jobs]
                rates.setdefault(mode, []).append(sum(map(tokens, jobs)) / wall)
                records += [{"phase": "speed", "layout": layout, "mode": mode, "concurrency": c, "round": round_no,
                             "task": j["task"], "prompt": j["prompt"], "status": j["status"], "tokens": tokens(j),
                             "latency_s": j["latency_s"]} for j in jobs]  # fmt: skip
        plain = statistics.median(rates["plain"])
        for arm in arms:
            tok_s = statistics.median(rates[arm])
            rows.append({"layout": layout, "arm": arm, "concurrency": c, "plain_tok_s": round(plain, 1),
                         "constrained_tok_s": round(tok_s, 1), "ratio": round(tok_s / plain, 3),
                         "rounds": [round(r, 1) for r in rates[arm]],
                         "plain_rounds": [round(r, 1) for r in rates["plain"]]})  # fmt: skip
            console.print(f"{layout} c={c} {arm}: {rows[-1]}")
    return records, rows


def print_tables(summary: dict) -> None:
    arms = list(ARMS)
    columns = sorted({(r["layout"], r["arm"]) for r in summary["quality"]}, key=lambda k: (k[0], arms.index(k[1])))
    cell = {(r["temperature"], r["max_tokens"], r["task"], r["layout"], r["arm"]): r for r in summary["quality"]}
    for temperature, max_tokens in sorted({(r["temperature"], r["max_tokens"]) for r in summary["quality"]}):
        title = f"T={temperature} max_tokens={max_tokens}: valid % / closed % / repeated items % / mean tokens"
        table = Table(title=title)
        table.add_column("task")
        for layout, arm in columns:
            table.add_column(f"{layout} {arm}", justify="right")
        for task in dict.fromkeys(r["task"] for r in summary["quality"]):
            rows = [cell.get((temperature, max_tokens, task, *k)) for k in columns]
            text = "{valid_pct:g} / {closed_pct:g} / {repeated_pct:g} / {mean_tokens:g}"
            table.add_row(task, *(text.format(**r) if r else "" for r in rows))
        console.print(table)
    if summary["small_budgets"]:
        table = Table(title="max_tokens from the schema's minimum to 64, T=0: valid % / closed at budget % (minimum)")
        table.add_column("task")
        for layout, arm in columns:
            table.add_column(f"{layout} {arm}", justify="right")
        small = {(r["task"], r["layout"], r["arm"]): r for r in summary["small_budgets"]}
        for task in dict.fromkeys(r["task"] for r in summary["small_budgets"]):
            rows = [small.get((task, *k)) for k in columns]
            table.add_row(task, *(f"{r['valid_pct']:g} / {r['closed_at_budget_pct']:g} ({r['minimum']})" if r else ""
                                  for r in rows))  # fmt: skip
        console.print(table)
    table = Table(title="tok/s: unconstrained -> constrained (ratio), median of rounds, T=0")
    for name in ("layout", "arm", "users", "unconstrained", "constrained", "ratio"):
        table.add_column(name, justify="right")
    for r in summary["speed"]:
        table.add_row(r["layout"], r["arm"], str(r["concurrency"]), f"{r['plain_tok_s']:g}",
                      f"{r['constrained_tok_s']:g}", f"{r['ratio']:.2f}x")  # fmt: skip
    console.print(table)
    for check in summary["targets"]:
        if not check["met"]:
            console.print(f"[red]target missed[/red]: {check}")


def evaluate(url: str, args, tasks: list[dict], layout: str, summary: dict, out) -> None:
    for arm in args.arms:
        records, rows = quality(url, args, tasks, arm, layout)
        summary["quality"] += rows
        out.writelines(json.dumps(r) + "\n" for r in records)
    if args.small_budgets:
        records, rows = small_budgets(url, args, tasks, args.arms, layout)
        summary["small_budgets"] += rows
        out.writelines(json.dumps(r) + "\n" for r in records)
    if args.rounds > 0:  # --rounds 0: quality only
        records, rows = speed(url, args, tasks, args.arms, layout)
        summary["speed"] += rows
        out.writelines(json.dumps(r) + "\n" for r in records)


def parse_args(argv=None) -> argparse.Namespace:
    words = lambda s: s.split(",")  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server to measure, instead of starting one per layout")
    p.add_argument("--model", help="passed to `slmserve serve --model`")
    p.add_argument("--layouts", type=words, default=["auto", "original"], help="`slmserve serve --weights` values")
    p.add_argument("--arms", type=words, default=["guards", "off"], help=f"of {', '.join(ARMS)}")
    p.add_argument("--temperatures", type=lambda s: [float(t) for t in s.split(",")], default=[0.0, 0.8])
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--prompts", type=int, default=10, help="prompts per task (the first N)")
    p.add_argument("--tasks", type=words, help="task names (default: all)")
    p.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 32],
                   help="users in the speed rounds; the quality requests run at the largest")  # fmt: skip
    p.add_argument("--rounds", type=int, default=2, help="speed rounds (plain, then each arm) per concurrency; 0: none")
    p.add_argument("--speed-prompts", type=int, default=1, help="prompts per task in a speed round")
    p.add_argument("--small-budgets", action="store_true", help="sweep max_tokens from each schema's minimum to 64")
    p.add_argument("--small-prompts", type=int, default=2, help="prompts per task in the small-budget sweep")
    p.add_argument("--quick", action="store_true", help="smoke: 2 tasks x 2 prompts, T 0, 1 layout, 64 tokens, 1 user")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if unknown := set(args.arms) - set(ARMS):
        p.error(f"unknown arms {sorted(unknown)}; known: {list(ARMS)}")
    if args.quick:
        args.prompts, args.temperatures, args.layouts, args.max_tokens = 2, [0.0], args.layouts[:1], 64
        args.concurrency, args.rounds, args.small_prompts = [1], 1, 1
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    tasks = load_tasks()
    if args.tasks:
        tasks = [t for t in tasks if t["name"] in args.tasks]
    elif args.quick:
        tasks = [next(t for t in tasks if t["kind"] == kind) for kind in ("json_schema", "tools")]
    summary = {"command": " ".join(sys.argv), "args": {k: str(v) for k, v in vars(args).items()},
               "quality": [], "small_budgets": [], "speed": [], "load_s": {}}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "results.jsonl").open("w") as out:
        if args.url:
            evaluate(args.url, args, tasks, "url", summary, out)
        for layout in [] if args.url else args.layouts:
            serve_args = ["--weights", layout] + (["--model", args.model] if args.model else [])
            with launch.serve(serve_args) as served:
                summary["load_s"][layout] = round(served.load_s, 1)
                evaluate(served.url, args, tasks, layout, summary, out)
    summary["targets"] = targets(summary, args.max_tokens)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_tables(summary)


if __name__ == "__main__":
    main()
