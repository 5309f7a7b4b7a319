"""`slmserve compare`: the same work on each model, one model at a time, side by side.

Each model gets its own `slmserve serve` child (tools/launch.py), started only after the previous one is gone, so
neither the figures nor the memory of one model disturb the next: file size, load time (process start to /health
200), resident memory idle and at peak, tok/s and TTFT at each concurrency (bench.py's load generator), and the
answers to a fixed set of short questions, scored by expected keywords.

The models take turns over several rounds (A, B, A, B), as scripts/bench_compare.py does, and the figures are
medians over rounds: a neighbour's burst then falls on both models, not on one. A machine that is busy before the
start, or rounds of one model that disagree, are said (tools/busy.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.markup import escape

from slmserve.bench import BenchConfig, median_over_rounds, run_bench
from slmserve.models.registry import resolve_model
from slmserve.tools import busy, launch, plots

# (question, keywords): an answer scores when it holds one of the keywords as a whole word, in any case.
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("What is 2 + 2?", ("4", "four")),
    ("What is the opposite of hot?", ("cold",)),
    ("Which animal says meow?", ("cat", "cats", "kitten")),
    ("What do bees make?", ("honey",)),
    ("What is the largest planet in the solar system?", ("jupiter",)),
]
BENCH_PROMPT = "Tell me a story about a cat."
# Rounds of one model whose tok/s differ by more than this factor were disturbed (a busy machine).
SPREAD = 1.5


class CompareError(RuntimeError):
    """A model could not be found or served."""


@dataclass
class CompareConfig:
    models: list[str]
    levels: list[int]
    max_tokens: int
    requests: int | None  # per concurrency level; None: bench's default (2 x concurrency, at least 8)
    serve_args: list[str]
    rounds: int = 2


def file_size(model: str) -> int | None:
    """Bytes on disk: the GGUF file, or all files of a Hugging Face directory; None for a hub id."""
    source = resolve_model(model)
    if source.path is None:
        return None
    if source.path.is_file():
        return source.path.stat().st_size
    return sum(f.stat().st_size for f in source.path.rglob("*") if f.is_file())


def labels(models: list[str]) -> list[str]:
    """Short names for the charts: the file or id's name, or the argument as given where two names clash."""
    names = [resolve_model(m).name for m in models]
    return [n if names.count(n) == 1 else m for n, m in zip(names, models, strict=True)]


def correct(answer: str, keywords: tuple[str, ...]) -> bool:
    return any(re.search(rf"\b{re.escape(k)}\b", answer, re.IGNORECASE) for k in keywords)


async def ask(url: str, max_tokens: int) -> list[dict]:
    """Every question at once (the server batches them), greedy, each answer scored."""

    async def one(client: httpx.AsyncClient, question: str, keywords: tuple[str, ...]) -> dict:
        body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "temperature": 0}
        resp = await client.post(f"{url}/v1/chat/completions", json=body)
        if resp.status_code != 200:
            raise CompareError(f"{question!r}: HTTP {resp.status_code}: {resp.text[:300]}")
        answer = resp.json()["choices"][0]["message"].get("content") or ""
        return {"question": question, "answer": answer, "correct": correct(answer, keywords)}

    async with httpx.AsyncClient(timeout=600) as client:
        return list(await asyncio.gather(*(one(client, q, k) for q, k in QUESTIONS)))


def measure(model: str, label: str, config: CompareConfig) -> dict:
    """One model from start to stop: load, memory, answers, then the load test at each concurrency."""
    with launch.serve(["--model", model, *config.serve_args]) as served:
        rss = launch.RssSampler(served.pid)
        idle = rss.now()
        rss.start()
        answers = asyncio.run(ask(served.url, config.max_tokens))
        bench = BenchConfig(
            url=served.url, levels=config.levels, requests=config.requests, max_tokens=config.max_tokens,
            ignore_eos=True, eos_token_ids=[], model=None, prompt=BENCH_PROMPT, label=label,
        )  # fmt: skip
        levels = asyncio.run(run_bench(bench))
        peak = rss.stop()
    return {
        "model": model,
        "label": label,
        "file_size_bytes": file_size(model),
        "load_s": served.load_s,
        "rss_idle_mib": idle / 2**20,
        "rss_peak_mib": peak / 2**20,
        "score": sum(a["correct"] for a in answers) / len(answers),
        "answers": answers,
        "bench": [asdict(r) for r in levels],
    }


def schedule(models: int, rounds: int) -> list[tuple[int, int]]:
    """(round, model index) in the order they are measured: every model once a round, rounds one after another."""
    return [(r, m) for r in range(1, rounds + 1) for m in range(models)]


def combine(runs: list[dict]) -> dict:
    """One model's rounds -> one row: medians (load time, idle memory, every bench figure), the peak memory's
    maximum, the answers of the first round (greedy: the same each round)."""
    return {
        **runs[0],
        "rounds": len(runs),
        "load_s": statistics.median(r["load_s"] for r in runs),
        "rss_idle_mib": statistics.median(r["rss_idle_mib"] for r in runs),
        "rss_peak_mib": max(r["rss_peak_mib"] for r in runs),
        "bench": median_over_rounds([r["bench"] for r in runs]),
    }


def spread(rows: list[dict]) -> list[str]:
    """The levels at which a model's rounds measured tok/s more than SPREAD apart."""
    out = []
    for r in rows:
        for b in r["bench"]:
            low, high = min(b["tokens_per_s_all"]), max(b["tokens_per_s_all"])
            if high > SPREAD * max(low, 1e-9):
                out.append(f"{r['label']} at c={b['concurrency']}: {low:.1f} to {high:.1f} tok/s across rounds")
    return out


def run_compare(config: CompareConfig, out: Path, console: Console) -> tuple[list[dict], list[Path]]:
    """Measure the models in turn, round after round, then write compare.json, compare.md and compare.png."""
    plots.require()
    launch.require_psutil()
    names = labels(config.models)  # FileNotFoundError for a model that is nowhere, before any server starts
    busy_now = busy.machine_busy()
    if busy_now:
        console.print(
            "[yellow]warning: the machine is busy, so tok/s will be low and vary between rounds: "
            + escape("; ".join(busy_now))
            + ". Compare on an idle machine for figures that are the models' own.[/yellow]"
        )
    runs: list[list[dict]] = [[] for _ in names]
    for round_no, i in schedule(len(names), config.rounds):
        model, label = config.models[i], names[i]
        console.print(
            f"[bold]round {round_no}/{config.rounds}, {i + 1}/{len(names)}[/bold] {escape(label)}: "
            f"starting `slmserve serve --model {escape(model)}`"
        )
        try:
            runs[i].append(measure(model, label, config))
        except launch.ServerFailed as exc:
            raise CompareError(f"{model}: {exc}") from exc
        r = runs[i][-1]
        tps = ", ".join(f"c={b['concurrency']} {b['tokens_per_s']:.1f}" for b in r["bench"])
        console.print(
            f"  loaded in {r['load_s']:.1f} s, {r['rss_peak_mib']:.0f} MiB at peak, score {r['score']:.0%}, tok/s {tps}"
        )
    rows = [combine(model_runs) for model_runs in runs]
    disagree = spread(rows)
    if disagree:
        console.print("[yellow]warning: rounds disagree: " + escape("; ".join(disagree)) + "[/yellow]")
    out.mkdir(parents=True, exist_ok=True)
    doc = {"config": asdict(config), "questions": [q for q, _ in QUESTIONS], "busy": busy_now, "spread": disagree}
    doc["models"] = rows
    (out / "compare.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "compare.md").write_text(markdown(rows, config, busy_now + disagree))
    png = plots.compare_chart(rows, config.levels, out / "compare.png")
    return rows, [out / "compare.json", out / "compare.md", png]


def _mib(n: float | None) -> str:
    return "–" if n is None else f"{n / 2**20:.1f}"


def markdown(rows: list[dict], config: CompareConfig, warnings: Sequence[str] = ()) -> str:
    """The figures, tok/s and TTFT per concurrency, then the answers side by side. warnings: why the figures may
    not be the models' own (a busy machine, rounds that disagree)."""
    levels = config.levels
    head = ["model", "file MiB", "load s", "RSS idle MiB", "RSS peak MiB", "score"]
    head += [f"tok/s c={c}" for c in levels] + [f"TTFT p50 c={c}" for c in levels]
    lines = [
        "# slmserve compare",
        "",
        f"One model at a time, {config.rounds} round(s) in turn; medians over rounds, tok/s with each round's "
        f"lowest and highest. {config.max_tokens} tokens per load-test request and at most that many per answer. "
        "load s: `slmserve serve` start to its first /health 200 (Python's start included). RSS: the server "
        "process's resident memory once ready (idle) and the most it held during the answers and the load test.",
        "",
    ]
    if warnings:
        lines += ["**Not the models' own figures:** " + "; ".join(warnings) + ".", ""]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r["label"], _mib(r["file_size_bytes"]), f"{r['load_s']:.2f}", f"{r['rss_idle_mib']:.0f}"]
        cells += [f"{r['rss_peak_mib']:.0f}", f"{r['score']:.0%}"]
        cells += [_tps_cell(b) for b in r["bench"]] + [f"{b['ttft_p50_s'] * 1000:.0f} ms" for b in r["bench"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![compare](compare.png)", "", "## Answers", ""]
    lines += ["| question | " + " | ".join(r["label"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for i, (question, _) in enumerate(QUESTIONS):
        cells = [_answer_cell(r["answers"][i]) for r in rows]
        lines.append(f"| {question} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tps_cell(b: dict) -> str:
    each = b.get("tokens_per_s_all") or [b["tokens_per_s"]]
    return f"{b['tokens_per_s']:.1f}" + (f" ({min(each):.1f}–{max(each):.1f})" if len(each) > 1 else "")


def _answer_cell(a: dict) -> str:
    text = " ".join(a["answer"].split()).replace("|", "\\|")
    return ("✓ " if a["correct"] else "✗ ") + (text[:80] + "…" if len(text) > 80 else text)
