"""`slmserve bench`: an asyncio load generator for any OpenAI-compatible server (streaming chat completions)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table


@dataclass
class BenchConfig:
    url: str
    levels: list[int]
    requests: int | None
    max_tokens: int
    ignore_eos: bool
    eos_token_ids: list[int]
    model: str | None
    prompt: str
    label: str
    response_format: dict | None = None  # e.g. a json_schema: every request decodes under its grammar
    waves: int = 2  # without `requests`: each user sends this many, one after another (8 requests at least)

    def requests_for(self, concurrency: int) -> int:
        return self.requests or max(8, self.waves * concurrency)


@dataclass
class RequestResult:
    ttft: float = 0.0
    latency: float = 0.0
    tokens: int = 0
    itls: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    duration_s: float
    completion_tokens: int
    tokens_per_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    itl_p50_s: float
    itl_p95_s: float
    latency_p50_s: float
    latency_p95_s: float
    first_error: str | None = None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _body(config: BenchConfig) -> dict:
    body = {
        "messages": [{"role": "user", "content": config.prompt}],
        "max_tokens": config.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if config.model:
        body["model"] = config.model
    if config.response_format:
        body["response_format"] = config.response_format
    if config.ignore_eos:
        body["ignore_eos"] = True
        body["logit_bias"] = {str(t): -100 for t in config.eos_token_ids}
    return body


async def one_request(client: httpx.AsyncClient, config: BenchConfig, retry: bool = True) -> RequestResult:
    result, start, last, chunks, answered = RequestResult(), time.perf_counter(), None, 0, False
    try:
        async with client.stream("POST", f"{config.url}/v1/chat/completions", json=_body(config)) as resp:
            answered = True
            if resp.status_code != 200:
                result.error = f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"
                return result
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    result.error = str(data["error"])[:200]
                    return result
                if data.get("usage"):
                    result.tokens = data["usage"].get("completion_tokens", 0)
                if any((c.get("delta") or {}).get("content") for c in data.get("choices", [])):
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - start
                    else:
                        result.itls.append(now - last)
                    last, chunks = now, chunks + 1
    except httpx.HTTPError as exc:
        if retry and not answered and isinstance(exc, httpx.RemoteProtocolError):
            # The server closed a kept-alive connection as this request went out (llama-server closes each
            # connection after a few requests): nothing was served, so it is sent once more, as browsers do.
            return await one_request(client, config, retry=False)
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    result.latency = time.perf_counter() - start
    result.tokens = result.tokens or chunks  # servers that send no usage: one chunk per token
    return result


async def run_level(client: httpx.AsyncClient, config: BenchConfig, concurrency: int, progress) -> LevelResult:
    n = config.requests_for(concurrency)
    task = progress.add_task(f"{config.label} c={concurrency}", total=n)
    gate = asyncio.Semaphore(concurrency)

    async def worker() -> RequestResult:
        async with gate:
            r = await one_request(client, config)
            progress.advance(task)
            return r

    start = time.perf_counter()
    results = await asyncio.gather(*(worker() for _ in range(n)))
    duration = time.perf_counter() - start
    ok = [r for r in results if r.error is None]
    tokens = sum(r.tokens for r in ok)
    itls = [x for r in ok for x in r.itls]
    errors = [r.error for r in results if r.error]
    return LevelResult(
        concurrency=concurrency,
        requests=n,
        errors=len(errors),
        duration_s=duration,
        completion_tokens=tokens,
        tokens_per_s=tokens / duration,
        ttft_p50_s=percentile([r.ttft for r in ok], 0.50),
        ttft_p95_s=percentile([r.ttft for r in ok], 0.95),
        itl_p50_s=percentile(itls, 0.50),
        itl_p95_s=percentile(itls, 0.95),
        latency_p50_s=percentile([r.latency for r in ok], 0.50),
        latency_p95_s=percentile([r.latency for r in ok], 0.95),
        first_error=errors[0] if errors else None,
    )


async def run_bench(config: BenchConfig) -> list[LevelResult]:
    timeout = httpx.Timeout(600.0, connect=10.0)
    limits = httpx.Limits(max_connections=max(config.levels) + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await one_request(client, config)  # warm-up: first-call costs stay out of the figures
        with Progress(console=Console(stderr=True), transient=True) as progress:
            return [await run_level(client, config, c, progress) for c in config.levels]


def _median(values: list[float]) -> float:
    """The median; an int for ints whose median is whole (a count stays a count in the JSON)."""
    m = statistics.median(values)
    return int(m) if all(isinstance(v, int) for v in values) and m == int(m) else m


def median_over_rounds(rounds: list[list[dict]]) -> list[dict]:
    """One server's results from several rounds (each a list of LevelResult dicts) -> one row per concurrency:
    the median of each figure, the errors summed, and each round's tok/s in `tokens_per_s_all`, so a spread
    that a median hides stays in sight."""
    rows = []
    for level in [r["concurrency"] for r in rounds[0]]:
        at = [r for results in rounds for r in results if r["concurrency"] == level]
        row = {
            key: _median([r[key] for r in at])
            for key, value in at[0].items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        firsts = [r["first_error"] for r in at if r.get("first_error")]
        row.update(
            concurrency=level,
            errors=sum(r["errors"] for r in at),
            first_error=firsts[0] if firsts else None,
            tokens_per_s_all=[round(r["tokens_per_s"], 1) for r in at],
        )
        rows.append(row)
    return rows


def print_report(config: BenchConfig, results: list[LevelResult]) -> None:
    table = Table(title=f"{config.label} — {config.url}, {config.max_tokens} tokens per request")
    for col in ["conc", "reqs", "err", "tok/s", "TTFT p50", "TTFT p95", "ITL p50", "ITL p95", "lat p50", "lat p95"]:
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            str(r.concurrency), str(r.requests), str(r.errors), f"{r.tokens_per_s:.1f}",
            *(f"{v * 1000:.0f} ms" for v in (r.ttft_p50_s, r.ttft_p95_s, r.itl_p50_s, r.itl_p95_s)),
            *(f"{v:.2f} s" for v in (r.latency_p50_s, r.latency_p95_s)),
        )  # fmt: skip
    Console().print(table)
    for r in results:
        if r.first_error:
            Console(stderr=True).print(f"[red]c={r.concurrency}: {r.errors} errors, first: {r.first_error}[/red]")


def write_json(path: Path, config: BenchConfig, results: list[LevelResult]) -> None:
    doc = {
        "label": config.label,
        "config": asdict(config),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [asdict(r) for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def write_plot(path: Path, config: BenchConfig, results: list[LevelResult], others: list[tuple[str, list]]) -> Path:
    """This run's tokens/s and TTFT against concurrency, beside saved runs (tools.plots.load_bench_results)."""
    from slmserve.tools.plots import bench_chart

    runs = [(config.label, [asdict(r) for r in results]), *others]
    return bench_chart(runs, path, title=f"slmserve bench — {config.max_tokens} tokens per request")
