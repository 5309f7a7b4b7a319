"""The cost of the cluster's gateway hop: the single process against `slmserve cluster` on the same machine.

Servers (in this order each round): the single process (`slmserve serve`, --n-threads 2), the cluster with 1 model-
host replica of 2 threads, and with 2 replicas of 1 thread, with `--direct-ingress` (the default) and behind Ray's
proxy (`--ray-proxy`), and 1 x 2 sending at every engine step (`--stream-interval-ms 0`). Each gets `slmserve bench`
(streaming chat, greedy, EOS banned, so every request yields exactly --max-tokens) at each concurrency; rounds
alternate the servers so each one's figures sit minutes from its peers'. The summary takes the median over rounds
and puts each cluster's tok/s and TTFT beside the single process's. Writes one JSON per server and round, and
summary.json.

    python scripts/bench_cluster.py --out docs/bench/cluster-interval [--rounds 2] [--concurrency 1,32] [--waves 2] \
        [--servers single,direct-1x2,NAME --variant NAME="cluster --replicas 1 --threads 2 --stream-interval-ms 80"]

A variant's leading VAR=VALUE words are set in its server's environment, e.g. Ray's own settings:
`--variant ray-pace="RAY_SERVE_CONTROL_LOOP_INTERVAL_S=0.1 cluster --replicas 1 --threads 2"`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_compare import bench_server  # noqa: E402

from slmserve.tools.launch import free_port  # noqa: E402


def cluster(mode: str, replicas: int, threads: int, *extra: str) -> list[str]:
    return ["cluster", mode, "--replicas", str(replicas), "--threads", str(threads), *extra]


SERVERS = {
    "single": ["serve", "--n-threads", "2"],
    # Ray's throughput-optimized mode (the default): the gateway serves the port itself, model hosts over gRPC.
    "direct-1x2": cluster("--direct-ingress", 1, 2),
    "direct-2x1": cluster("--direct-ingress", 2, 1),
    # Every request through Ray's proxy actor.
    "proxy-1x2": cluster("--ray-proxy", 1, 2),
    "proxy-2x1": cluster("--ray-proxy", 2, 1),
    # A model host sends at every engine step (the default holds tokens up to 100 ms).
    "direct-1x2-each-step": cluster("--direct-ingress", 1, 2, "--stream-interval-ms", "0"),
}


def summarize(runs: list[dict], levels: list[int], servers: list[str]) -> dict:
    def median(server: str, level: int, field: str) -> float:
        picked = [r for run in runs if run["server"] == server for r in run["results"] if r["concurrency"] == level]
        values = [r[field] for r in picked]
        return statistics.median(values)

    out = {}
    for server in servers:
        row = {}
        for level in levels:
            tps, ttft = median(server, level, "tokens_per_s"), median(server, level, "ttft_p50_s")
            base_tps, base_ttft = median("single", level, "tokens_per_s"), median("single", level, "ttft_p50_s")
            row[f"c{level}"] = {
                "tokens_per_s": round(tps, 1),
                "ttft_p50_ms": round(ttft * 1000, 1),
                "throughput_vs_single": round(tps / base_tps, 3),
                "ttft_added_ms": round((ttft - base_ttft) * 1000, 1),
            }
        out[server] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/cluster"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--waves", type=int, default=2, help="requests per user at each concurrency (8 at least)")
    parser.add_argument("--servers", type=lambda s: s.split(","), default=list(SERVERS), help=",".join(SERVERS))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="a further server, `slmserve FLAGS`, to name in --servers")  # fmt: skip
    args = parser.parse_args()
    envs: dict[str, dict[str, str]] = {}
    for variant in args.variant:  # NAME=FLAGS, e.g. i80="cluster --replicas 1 --threads 2 --stream-interval-ms 80"
        name, _, flags = variant.partition("=")
        words = flags.split()
        while words and "=" in words[0] and not words[0].startswith("-"):
            var, _, value = words.pop(0).partition("=")
            envs.setdefault(name, {})[var] = value
        SERVERS[name] = words
    if "single" not in args.servers or not set(args.servers) <= set(SERVERS):
        parser.error(f"--servers: some of {','.join(SERVERS)}, single among them")
    args.out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "slmserve.cli"]
    runs = [
        bench_server(name, [*cli, *SERVERS[name]], "/health", free_port(), args, r, envs.get(name))
        for r in range(1, args.rounds + 1)
        for name in args.servers
    ]
    summary = {
        "machine": {"cpu_count": os.cpu_count()},
        "max_tokens": args.max_tokens,
        "waves": args.waves,
        "rounds": args.rounds,
        "startup_to_health_s": {run["server"]: run["startup_to_health_s"] for run in runs},
        "environment": envs,
        "median": summarize(runs, args.concurrency, args.servers),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["median"], indent=2))


if __name__ == "__main__":
    main()
