"""Benchmark slmserve against llama.cpp's own C++ llama-server, one server after the other, in rounds.

Servers (--servers, in this order each round):
  slmserve            `slmserve serve` with its defaults (--weights auto)
  llama-server        llama-server on the bundled file as downloaded (what a llama.cpp user gets)
  llama-server-same   llama-server on the very file slmserve's auto runs (the requantized copy in the cache)
  slmserve-original   slmserve on the bundled file as it is (--weights original)
  slmserve-torch      the torch engine (fp32, dequantized GGUF)
  llama-cpp-python    llama-cpp-python's own server (serves one request at a time; a footnote)

llama-server is built once from the llama.cpp inside the llama-cpp-python sdist (scripts/llama_server.py) and run
with the same slots, context and threads as slmserve (-np 32 -c 65536 -t 2 -tb 2 by default). For each server:
process start to health 200, `slmserve bench` at each concurrency (streaming chat, greedy, EOS banned, so every
request yields exactly --max-tokens), peak RSS. With --seed-shaped, slmserve also runs the seeds' shapes: a
/chat/batched of 8 x 48 tokens against one /chat call, and 32 concurrent 16-token chats against one. With
--long-prompt WORDS, every server also times a prompt of that many words and 1 new token, one at a time (prefill).
Alternating rounds put each server's figures beside its peer's from minutes, not an hour, apart; the summary
takes the median over rounds. Writes one JSON per server and round, and summary.json, to --out.

    python scripts/bench_compare.py --out docs/bench/peer [--rounds 2] [--concurrency 1,8,32,64]
    python scripts/bench_compare.py --out docs/bench/kv --concurrency 1,32 --long-prompt 1900 --no-seed-shaped \
        --variant kv-f16="--kv-cache-type f16" --servers slmserve,kv-f16,llama-server-same
    python scripts/bench_compare.py --out docs/bench/ctx --concurrency 32 --no-seed-shaped \
        --variant ctx2048="--ctx-size 65536" --servers slmserve,ctx2048
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from llama_server import llama_server  # noqa: E402

from slmserve.bench import BenchConfig, median_over_rounds, print_report, run_bench, write_json  # noqa: E402
from slmserve.models import weights  # noqa: E402
from slmserve.models.registry import resolve_model_path  # noqa: E402
from slmserve.settings import Settings  # noqa: E402
from slmserve.tools.launch import RssSampler, wait_healthy  # noqa: E402


def server_commands(args) -> dict[str, tuple[list[str], str]]:
    """Server name -> (command line without the port, health path)."""
    settings = Settings()
    bundled = resolve_model_path(settings.model)
    slm = [str(Path(sys.executable).parent / "slmserve"), "serve", *args.slmserve_args.split()]
    threads = str(settings.n_threads)
    # The same slots, KV cells and threads as slmserve; batch sizes stay llama-server's own defaults.
    peer = ["-np", str(settings.max_running), "-c", str(settings.kv_cells("llama.cpp")), "-t", threads, "-tb", threads,
            "--no-webui", "--log-disable"]  # fmt: skip
    lcp = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled)]
    lcp += f"--n_ctx 8192 --n_threads {threads} --n_threads_batch {threads} --verbose false".split()
    commands = {
        "slmserve": (slm, "/health"),
        "slmserve-original": ([*slm, "--weights", "original"], "/health"),
        "slmserve-torch": ([*slm, "--engine", "torch", "--device", args.torch_device], "/health"),
        "llama-cpp-python": (lcp, "/v1/models"),
    }
    for variant in args.variant:  # NAME=FLAGS: slmserve with other settings, e.g. ctx2048="--ctx-size 65536"
        name, _, flags = variant.partition("=")
        commands[name] = ([*slm, *flags.split()], "/health")
    if any(name.startswith("llama-server") for name in args.servers):
        binary = str(llama_server(Path(settings.cache_dir)))
        same = weights.plan(bundled, settings.weights, Path(settings.cache_dir)).path  # made now if missing
        commands["llama-server"] = ([binary, "-m", str(bundled), *peer], "/health")
        commands["llama-server-same"] = ([binary, "-m", str(same), *peer], "/health")
    return commands


def bench_server(
    name: str, cmd: list[str], health: str, port: int, args, round_no: int, env: dict[str, str] | None = None
) -> dict:
    """env: variables set for the server's process (and what it starts) on top of this one's."""
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    full_env = {**os.environ, **env} if env else None
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=full_env
    )
    try:
        wait_healthy(url, proc, 180, health)
        startup = time.perf_counter() - started
        rss = RssSampler(proc.pid)
        rss.start()
        config = BenchConfig(
            url=url, levels=args.concurrency, requests=None, max_tokens=args.max_tokens, ignore_eos=True,
            eos_token_ids=[0, 2], model=None, prompt="Tell me a story about a cat.", label=name,
            waves=getattr(args, "waves", 2),
        )  # fmt: skip
        results = asyncio.run(run_bench(config))
        # Optional in `args`: this script's own extra runs (seed shapes, a long prompt), other scripts' `waves`.
        seeds = (
            asyncio.run(seed_shaped(url))
            if getattr(args, "seed_shaped", False) and name.startswith("slmserve")
            else None
        )
        prompt_len = getattr(args, "long_prompt", 0)
        long_prompt = asyncio.run(long_prompt_ttft(url, prompt_len)) if prompt_len else None
        peak_rss = rss.stop()
        print_report(config, results)
        write_json(args.out / f"{name}.round{round_no}.json", config, results)
        return {
            "server": name, "round": round_no, "command": " ".join(cmd), "startup_to_health_s": round(startup, 3),
            "peak_rss_mib": round(peak_rss / 2**20, 1), "results": [r.__dict__ for r in results], "seed_shaped": seeds,
            "long_prompt": long_prompt,
        }  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=60)


async def seed_shaped(url: str) -> dict:
    """The seeds' own shapes of load, each against one call of the same kind (median of 3 single calls)."""
    base = {"system_prompt": "You are a storyteller.", "temperature": 0}

    async def chat(client: httpx.AsyncClient, i: int, tokens: int) -> int:
        body = {"chat_id": str(i), "user_prompt": f"Tell a long story about cat number {i}.", "max_tokens": tokens}
        r = await client.post(f"{url}/chat", json={**base, **body})
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]

    async def timed(coro) -> tuple[float, object]:
        start = time.perf_counter()
        result = await coro
        return time.perf_counter() - start, result

    async with httpx.AsyncClient(timeout=600) as client:
        one48 = statistics.median([(await timed(chat(client, 0, 48)))[0] for _ in range(3)])
        queries = [{**base, "chat_id": str(i), "user_prompt": f"Tell a long story about cat number {i}.",
                    "max_tokens": 48} for i in range(8)]  # fmt: skip
        batch_s, r = await timed(client.post(f"{url}/chat/batched", json={"queries": queries}))
        batch_tokens = [x["usage"]["completion_tokens"] for x in r.json()["results"]]
        one16 = statistics.median([(await timed(chat(client, 0, 16)))[0] for _ in range(3)])
        many_s, many_tokens = await timed(asyncio.gather(*(chat(client, i, 16) for i in range(32))))
    return {
        "one_chat_48_s": one48, "batched_8x48_s": batch_s, "batched_ratio": batch_s / one48,
        "batched_tokens": batch_tokens, "one_chat_16_s": one16, "concurrent_32x16_s": many_s,
        "concurrent_ratio": many_s / one16, "concurrent_tokens": list(many_tokens),
    }  # fmt: skip


async def long_prompt_ttft(url: str, words: int, tries: int = 3) -> dict:
    """One user at a time, a prompt of `words` words (~1 token each) and 1 new token: the prefill's time. Each prompt
    starts differently, so no server answers from its prompt cache. Median of `tries`."""
    seconds, tokens = [], None
    async with httpx.AsyncClient(timeout=600) as client:
        for i in range(tries):
            body = {"prompt": f"{i} {time.time_ns()}" + " word" * words, "max_tokens": 1, "temperature": 0}
            start = time.perf_counter()
            r = await client.post(f"{url}/v1/completions", json=body)
            seconds.append(time.perf_counter() - start)
            r.raise_for_status()
            tokens = r.json()["usage"]["prompt_tokens"]
    return {"prompt_tokens": tokens, "seconds": [round(x, 3) for x in seconds], "median_s": statistics.median(seconds)}


def summarize(runs: list[dict]) -> list[dict]:
    """Median over rounds, per server and concurrency."""
    rows = []
    for name in dict.fromkeys(r["server"] for r in runs):
        mine = [r for r in runs if r["server"] == name]
        for row in median_over_rounds([r["results"] for r in mine]):
            rows.append({
                "server": name, **row,
                "startup_to_health_s": statistics.median(r["startup_to_health_s"] for r in mine),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
            })  # fmt: skip
    return rows


def print_summary(rows: list[dict], runs: list[dict]) -> None:
    print("\n| server | conc | tok/s (median) | each round | TTFT p50 | TTFT p95 | ITL p50 | ITL p95 | errors |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['server']} | {r['concurrency']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s_all']} | "
            f"{r['ttft_p50_s'] * 1000:.0f} ms | {r['ttft_p95_s'] * 1000:.0f} ms | {r['itl_p50_s'] * 1000:.1f} ms | "
            f"{r['itl_p95_s'] * 1000:.1f} ms | {r['errors']} |"
        )
    by = {(r["server"], r["concurrency"]): r for r in rows}
    for peer in ("llama-server", "llama-server-same"):
        ratios = [f"c={c}: {r['tokens_per_s'] / by[peer, c]['tokens_per_s']:.2f}x" for (s, c), r in by.items()
                  if s == "slmserve" and (peer, c) in by]  # fmt: skip
        if ratios:
            print(f"slmserve / {peer} tok/s: " + ", ".join(ratios))
    for name in dict.fromkeys(r["server"] for r in rows):
        r = next(x for x in rows if x["server"] == name)
        print(f"{name}: start to health 200 {r['startup_to_health_s']:.2f} s, peak RSS {r['peak_rss_mib']} MiB")
    for run in runs:
        if lp := run.get("long_prompt"):
            print(
                f"{run['server']} round {run['round']}: a {lp['prompt_tokens']}-token prompt, 1 new token: "
                f"{lp['median_s']:.2f} s ({lp['prompt_tokens'] / lp['median_s']:.0f} prompt tokens/s)"
            )
        if run["seed_shaped"]:
            s = run["seed_shaped"]
            print(
                f"{run['server']} round {run['round']}: /chat/batched 8x48 {s['batched_8x48_s']:.2f} s = "
                f"{s['batched_ratio']:.2f}x one /chat ({s['one_chat_48_s']:.2f} s); 32 concurrent 16-token chats "
                f"{s['concurrent_32x16_s']:.2f} s = {s['concurrent_ratio']:.2f}x one ({s['one_chat_16_s']:.2f} s)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8, 32, 64])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", type=lambda s: s.split(","), default=["slmserve", "llama-server",
                        "llama-server-same"])  # fmt: skip
    parser.add_argument("--seed-shaped", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--long-prompt", type=int, default=0, metavar="WORDS",
                        help="also time a prompt of this many words and 1 new token (the prefill)")  # fmt: skip
    parser.add_argument("--slmserve-args", default="", help="extra flags for every slmserve server")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="a further slmserve server with these flags, to name in --servers")  # fmt: skip
    parser.add_argument("--torch-device", default="auto", help="slmserve-torch's --device (cpu, cuda, auto)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    commands = server_commands(args)
    runs = []
    for round_no in range(1, args.rounds + 1):
        for i, name in enumerate(args.servers):
            cmd, health = commands[name]
            runs.append(bench_server(name, cmd, health, 8101 + i, args, round_no))
    rows = summarize(runs)
    (args.out / "summary.json").write_text(json.dumps({"summary": rows, "runs": runs}, indent=2) + "\n")
    print_summary(rows, runs)


if __name__ == "__main__":
    main()
