"""`slmserve monitor`: a running server's /metrics, sampled every interval, as a live table, monitor.csv and a
timeline PNG.

Everything comes from the Prometheus text, so it works against a remote server: tokens/s from the generated-token
counter, TTFT and inter-token p50/p95 from the histograms' bucket deltas over the interval (what was observed in
it, not since start), CPU and resident memory from prometheus_client's process_* metrics.
"""

from __future__ import annotations

import csv
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from slmserve.tools import plots
from slmserve.tools.measures import bucket_deltas, histogram_quantile

FIELDS = [
    "time", "elapsed_s", "tokens_per_s", "running", "waiting", "ttft_p50_s", "ttft_p95_s", "itl_p50_s", "itl_p95_s",
    "cpu_percent", "rss_mib",
]  # fmt: skip
_TOKENS = "slmserve_generation_tokens_total"
_HISTOGRAMS = {"ttft": "slmserve_time_to_first_token_seconds", "itl": "slmserve_inter_token_latency_seconds"}
_LIVE_ROWS = 20  # the live table shows the latest rows; the CSV keeps them all


class MonitorError(RuntimeError):
    """The server's /metrics could not be read."""


@dataclass
class Scrape:
    at: float  # time.monotonic() when read
    values: dict[str, float] = field(default_factory=dict)  # counter and gauge samples by name
    buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # histogram -> cumulative (le, n)


def parse(text: str, at: float) -> Scrape:
    """The samples of one /metrics page; a histogram's buckets keyed by its family's name.

    Samples of one name under several labels (a gauge per model, say) are added up: the server's total.
    """
    scrape, buckets = Scrape(at), {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_bucket"):
                counts = buckets.setdefault(family.name, {})
                le = float(s.labels["le"])
                counts[le] = counts.get(le, 0.0) + s.value
            else:
                scrape.values[s.name] = scrape.values.get(s.name, 0.0) + s.value
    scrape.buckets = {name: sorted(counts.items()) for name, counts in buckets.items()}
    return scrape


def scrape(client: httpx.Client, url: str) -> Scrape:
    resp = client.get(f"{url}/metrics")
    resp.raise_for_status()
    return parse(resp.text, time.monotonic())


def _rate(prev: Scrape, cur: Scrape, name: str) -> float | None:
    """A counter's increase per second; a counter that fell (a restarted server) counts from zero."""
    if name not in cur.values:
        return None
    before, after = prev.values.get(name, 0.0), cur.values[name]
    return (after - before if after >= before else after) / (cur.at - prev.at)


def row(prev: Scrape, cur: Scrape, start: float) -> dict:
    """One interval's figures, None where the server has no such metric or nothing was observed."""
    r: dict = {"time": time.strftime("%H:%M:%S"), "elapsed_s": round(cur.at - start, 2)}
    r["tokens_per_s"] = _rate(prev, cur, _TOKENS)
    r["running"] = cur.values.get("slmserve_requests_running")
    r["waiting"] = cur.values.get("slmserve_requests_waiting")
    for key, name in _HISTOGRAMS.items():
        observed = bucket_deltas(prev.buckets.get(name, []), cur.buckets.get(name, []))
        r[f"{key}_p50_s"] = histogram_quantile(0.50, observed)
        r[f"{key}_p95_s"] = histogram_quantile(0.95, observed)
    cpu = _rate(prev, cur, "process_cpu_seconds_total")
    r["cpu_percent"] = None if cpu is None else 100 * cpu  # 100 = one core busy
    rss = cur.values.get("process_resident_memory_bytes")
    r["rss_mib"] = None if rss is None else rss / 2**20
    return r


def _cell(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def live_table(rows: list[dict], url: str) -> Table:
    table = Table(title=f"slmserve monitor — {url}, latencies in ms (Ctrl-C to stop)")
    for col in ["s", "tok/s", "run", "wait", "TTFT p50", "TTFT p95", "ITL p50", "ITL p95", "CPU %", "RSS MiB"]:
        table.add_column(col, justify="right")
    for r in rows[-_LIVE_ROWS:]:
        table.add_row(
            f"{r['elapsed_s']:.1f}", _cell(r["tokens_per_s"]), _cell(r["running"], digits=0),
            _cell(r["waiting"], digits=0),
            *(_cell(r[k], 1000, 0) for k in ("ttft_p50_s", "ttft_p95_s", "itl_p50_s", "itl_p95_s")),
            _cell(r["cpu_percent"], digits=0), _cell(r["rss_mib"], digits=0),
        )  # fmt: skip
    return table


def sample(url: str, duration: float | None, interval: float, console: Console) -> list[dict]:
    """Rows every `interval` seconds until `duration` has passed or Ctrl-C; MonitorError if the first read fails."""
    rows: list[dict] = []
    with httpx.Client(timeout=httpx.Timeout(max(interval, 5.0))) as client:
        try:
            prev = scrape(client, url)
        except httpx.HTTPError as exc:
            raise MonitorError(f"cannot read {url}/metrics: {exc}") from exc
        until = f"for {duration:g} s" if duration is not None else "until Ctrl-C"
        Console(stderr=True).print(f"watching {escape(url)}/metrics every {interval:g} s {until}", highlight=False)
        start, tick = prev.at, 0
        # Ctrl-C is the normal way to end a monitor without --duration, and the files are still written: it sets a
        # flag the loop checks between samples, rather than a KeyboardInterrupt landing wherever the main thread
        # is (inside rich's Live or an HTTP read, which could leave the process hanging on its way out).
        stop = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            with Live(live_table(rows, url), console=console, refresh_per_second=4) as live:
                while not stop.is_set() and (duration is None or time.monotonic() - start < duration):
                    # Wait for the next tick of a fixed grid, so slow scrapes do not stretch the intervals.
                    tick += 1
                    if stop.wait(max(0.0, start + tick * interval - time.monotonic())):
                        break
                    try:
                        cur = scrape(client, url)
                    except httpx.HTTPError as exc:  # a restart or a hiccup: keep watching
                        console.print(f"[yellow]{escape(f'{url}/metrics: {exc}')}[/yellow]")
                        continue
                    rows.append(row(prev, cur, start))
                    prev = cur
                    live.update(live_table(rows, url))
        finally:
            signal.signal(signal.SIGINT, previous)
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows({k: "" if r[k] is None else r[k] for k in FIELDS} for r in rows)
    return path


def timeline(rows: list[dict], path: Path, url: str) -> Path:
    """Six panels over time: tokens/s, running and waiting, TTFT, inter-token latency, CPU, resident memory."""

    def col(key: str, scale: float = 1.0) -> list[float]:
        return [float("nan") if r[key] is None else r[key] * scale for r in rows]

    t = col("elapsed_s")
    fig, (tps, load, ttft, itl, cpu, mem) = plots.figure(2, 3, width=4.0, height=2.6, title=f"slmserve monitor — {url}")
    tps.plot(t, col("tokens_per_s"), color="C0")
    tps.set_title("generated tokens/s", fontsize=9)
    load.step(t, col("running"), where="post", label="running", color="C2")
    load.step(t, col("waiting"), where="post", label="waiting", color="C3")
    load.set_title("requests", fontsize=9)
    for ax, key, name in ((ttft, "ttft", "time to first token (ms)"), (itl, "itl", "inter-token latency (ms)")):
        ax.plot(t, col(f"{key}_p50_s", 1000), "o-", ms=3, color="C1", label="p50")
        ax.plot(t, col(f"{key}_p95_s", 1000), "s--", ms=3, color="C4", label="p95")
        ax.set_title(name, fontsize=9)
    cpu.plot(t, col("cpu_percent"), color="C5")
    cpu.set_title("server CPU % (100 = one core)", fontsize=9)
    mem.plot(t, col("rss_mib"), color="C6")
    mem.set_title("server resident memory (MiB)", fontsize=9)
    for ax in (load, ttft, itl):
        ax.legend(fontsize=7)
    for ax in (tps, load, ttft, itl, cpu, mem):
        ax.set_xlabel("seconds", fontsize=8)
        ax.set_xlim(0, max(t[-1], 1.0))  # the same time axis in every panel, even where a series has gaps
        ax.set_ylim(0, _top(ax) * 1.15)  # headroom: a flat series at its maximum would hide under the frame
    return plots.save(fig, path)


def _top(ax) -> float:
    """The largest finite value drawn in the panel, at least 1."""
    values = [y for line in ax.get_lines() for y in line.get_ydata() if y == y and abs(y) != float("inf")]
    return max([*values, 1.0])


def run_monitor(url: str, out: Path, duration: float | None, interval: float) -> list[Path]:
    """Sample, then write monitor.csv and monitor.png (the PNG once there is a row to draw)."""
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: the whole table on one line per row, not wrapped at 80
        console = Console(width=120)
    rows = sample(url, duration, interval, console)
    files = [write_csv(rows, out / "monitor.csv")]
    if rows:
        files.append(timeline(rows, out / "monitor.png", url))
    return files
