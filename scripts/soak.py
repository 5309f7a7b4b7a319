"""Soak: hold a share of the server's capacity for a long time and watch memory and latency stay flat.

Starts `slmserve serve` (or uses --url), then runs --clients closed-loop clients (default 80% of --max-running)
for --minutes. Each client sends a streamed or a plain chat completion in turn (--max-tokens, sampled, so answers
vary), and every tenth request is one that the client abandons after its first chunk. Every --every seconds it
records the server's RSS (its /metrics), the requests finished in that window and their p50/p95 latency and TTFT.
The verdict compares minute --settle onwards: RSS and p95 latency within ±10% of their mean.

    python scripts/soak.py --minutes 30 --json docs/bench/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

from slmserve.tools.launch import serve

PROMPTS = [
    "Tell me a story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Write a short poem about rain.",
    "What should I pack for a weekend hike?",
    "Describe the water cycle to a child.",
]


def rss(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("process_resident_memory_bytes "))
    return float(line.rsplit(" ", 1)[1])


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


async def client(url: str, i: int, max_tokens: int, stop_at: float, done: list) -> None:
    n = 0
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        while time.monotonic() < stop_at:
            n += 1
            body = {
                "messages": [{"role": "user", "content": PROMPTS[(i + n) % len(PROMPTS)]}],
                "max_tokens": max_tokens,
                "temperature": 0.8,
                "stream": n % 2 == 0,
            }
            start, abandoned = time.monotonic(), False
            try:
                if body["stream"]:
                    first = None
                    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                        async for line in r.aiter_lines():
                            if line.startswith("data: ") and first is None:
                                first = time.monotonic() - start
                                if n % 10 == 0:
                                    abandoned = True
                                    break
                        status = r.status_code
                else:
                    r = await http.post("/v1/chat/completions", json=body)
                    status, first = r.status_code, None
            except httpx.HTTPError:
                status, first = 0, None
            done.append((time.monotonic() - start, first, status, abandoned))


async def soak(url: str, clients: int, minutes: float, every: float, max_tokens: int) -> list[dict]:
    stop_at = time.monotonic() + minutes * 60
    done: list = []
    tasks = [asyncio.create_task(client(url, i, max_tokens, stop_at, done)) for i in range(clients)]
    samples, begin, last = [], time.monotonic(), 0
    while time.monotonic() < stop_at:
        await asyncio.sleep(every)
        window, last = done[last:], len(done)
        ok = [d for d in window if d[2] == 200]
        latencies = [d[0] for d in ok if not d[3]]  # whole answers only, not the abandoned streams
        ttfts = [d[1] for d in ok if d[1] is not None]
        sample = {
            "t_s": round(time.monotonic() - begin, 1),
            "rss_mib": round(await asyncio.to_thread(rss, url) / 2**20, 1),
            "requests": len(window),
            "errors": len(window) - len(ok),
            "latency_p50_s": round(pct(latencies, 50), 3),
            "latency_p95_s": round(pct(latencies, 95), 3),
            "ttft_p50_s": round(pct(ttfts, 50), 3),
        }
        samples.append(sample)
        print(json.dumps(sample), flush=True)
    await asyncio.gather(*tasks)
    return samples


def verdict(samples: list[dict], settle_min: float) -> dict:
    steady = [s for s in samples if s["t_s"] >= settle_min * 60]

    def spread(field: str) -> dict:
        values = [s[field] for s in steady]
        mean = statistics.mean(values)
        return {
            "mean": round(mean, 3),
            "min_vs_mean": round(min(values) / mean - 1, 3),
            "max_vs_mean": round(max(values) / mean - 1, 3),
            "flat_within_10pct": max(abs(min(values) / mean - 1), abs(max(values) / mean - 1)) <= 0.10,
        }

    return {
        "from_minute": settle_min,
        "samples": len(steady),
        "rss_mib": spread("rss_mib"),
        "latency_p95_s": spread("latency_p95_s"),
        "requests": sum(s["requests"] for s in samples),
        "errors": sum(s["errors"] for s in samples),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="A running server; default: start `slmserve serve` on the bundled model.")
    parser.add_argument("--max-running", type=int, default=32, help="The server's --max-running.")
    parser.add_argument("--clients", type=int, help="Concurrent clients (default: 80%% of --max-running).")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--settle", type=float, default=5, help="Minutes left out of the verdict (warm-up).")
    parser.add_argument("--every", type=float, default=10, help="Seconds between samples.")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path, help="Write the samples and the verdict here.")
    args = parser.parse_args()
    clients = args.clients or max(1, round(args.max_running * 0.8))

    def run(url: str) -> list[dict]:
        return asyncio.run(soak(url, clients, args.minutes, args.every, args.max_tokens))

    if args.url:
        samples = run(args.url)
    else:
        with serve(["--max-running", str(args.max_running)]) as served:
            samples = run(served.url)
    result = {
        "command": " ".join(["python", "scripts/soak.py", *sys.argv[1:]]),
        "clients": clients,
        "max_running": args.max_running,
        "max_tokens": args.max_tokens,
        "minutes": args.minutes,
        "verdict": verdict(samples, min(args.settle, args.minutes / 2)),
        "samples": samples,
    }
    print(json.dumps(result["verdict"], indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["verdict"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
