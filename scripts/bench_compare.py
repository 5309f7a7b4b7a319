"""Benchmark slmserve's two engines and llama-cpp-python's own server on the bundled model, one after another.

For each server: process start to /health 200, `slmserve bench` at each concurrency, the server's peak resident
memory while under load. Writes one JSON per server plus a summary JSON, and prints a markdown table.
slmserve-torch serves the same GGUF dequantized to fp32 through transformers (converted once, then cached).

    python scripts/bench_compare.py --out bench-results [--concurrency 1,8,32] [--max-tokens 128]
        [--servers slmserve,slmserve-torch,llama-cpp-python] [--torch-device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from slmserve.bench import BenchConfig, print_report, run_bench, write_json
from slmserve.models.registry import resolve_model_path


def wait_healthy(url: str, paths: list[str], timeout: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        for path in paths:
            try:
                if httpx.get(url + path, timeout=1).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} not healthy after {timeout} s")


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                rss = self.proc.memory_info().rss + sum(c.memory_info().rss for c in self.proc.children(True))
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            time.sleep(0.1)


def bench_server(label: str, cmd: list[str], port: int, health: list[str], args) -> dict:
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url, health)
        startup = time.perf_counter() - started
        rss = PeakRss(proc.pid)
        rss.start()
        config = BenchConfig(
            url=url,
            levels=[int(c) for c in args.concurrency.split(",")],
            requests=None,
            max_tokens=args.max_tokens,
            ignore_eos=True,
            eos_token_ids=[0, 2],
            model=None,
            prompt="Tell me a story about a cat.",
            label=label,
        )
        results = asyncio.run(run_bench(config))
        rss.stop.set()
        print_report(config, results)
        write_json(args.out / f"{label}.json", config, results)
        return {
            "label": label,
            "command": " ".join(cmd),
            "startup_to_health_s": round(startup, 3),
            "peak_rss_mib": round(rss.peak / 2**20, 1),
            "results": [r.__dict__ for r in results],
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--servers", default="slmserve,slmserve-torch,llama-cpp-python", help="which, in order")
    parser.add_argument("--torch-device", default="auto", help="slmserve-torch's --device (cpu, cuda, auto)")
    parser.add_argument("--torch-max-running", type=int, default=32, help="slmserve-torch's --max-running")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gguf = str(resolve_model_path("smollm2-135m-instruct"))
    bindir = Path(sys.executable).parent
    threads = str(os.cpu_count() or 1)
    servers = [
        ("slmserve", [str(bindir / "slmserve"), "serve", "--port", "8101"], 8101, ["/health"]),
        (
            "slmserve-torch",
            [str(bindir / "slmserve"), "serve", "--engine", "torch", "--device", args.torch_device, "--port", "8103",
             "--max-running", str(args.torch_max_running),
             "--ctx-size", str(512 * args.torch_max_running)],
            8103,
            ["/health"],
        ),
        (
            "llama-cpp-python",
            [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--port", "8102", "--n_ctx", "8192",
             "--n_threads", threads, "--n_threads_batch", threads, "--verbose", "false"],
            8102,
            ["/v1/models"],
        ),
    ]  # fmt: skip
    wanted = args.servers.split(",")
    summary = [bench_server(*s, args) for name in wanted for s in servers if s[0] == name]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n| server | conc | tok/s | TTFT p50 | TTFT p95 | ITL p50 | latency p50 | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        for r in s["results"]:
            print(
                f"| {s['label']} | {r['concurrency']} | {r['tokens_per_s']:.1f} | {r['ttft_p50_s'] * 1000:.0f} ms | "
                f"{r['ttft_p95_s'] * 1000:.0f} ms | {r['itl_p50_s'] * 1000:.1f} ms | {r['latency_p50_s']:.2f} s | "
                f"{r['errors']} |"
            )
    for s in summary:
        print(f"{s['label']}: start to /health 200 {s['startup_to_health_s']} s, peak RSS {s['peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
