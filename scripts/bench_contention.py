"""What a little CPU beside llama.cpp's threads costs: the single process alone, and beside a process that uses a
given share of one core in small slices (busy 1.5 ms, then asleep), as a cluster's gateway and Ray's processes
use theirs. Rounds alternate the two; the summary takes medians and puts each share's tok/s beside the alone's.

    python scripts/bench_contention.py --out docs/bench/contention [--rounds 3] [--shares 0.08,0.15] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_compare import bench_server  # noqa: E402

from slmserve.tools.launch import free_port  # noqa: E402

SERVER = [sys.executable, "-m", "slmserve.cli", "serve", "--n-threads", "2"]


def burn(share: float) -> None:
    """Use `share` of one core: 1.5 ms busy, then asleep for the rest of the slice."""
    busy = 0.0015
    rest = busy * (1 - share) / share
    while True:
        end = time.perf_counter() + busy
        while time.perf_counter() < end:
            pass
        time.sleep(rest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/contention"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shares", type=lambda s: [float(x) for x in s.split(",")], default=[0.08, 0.15])
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[32])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--waves", type=int, default=3)
    parser.add_argument("--burn", type=float, help=argparse.SUPPRESS)  # the burner's own process
    args = parser.parse_args()
    if args.burn:
        burn(args.burn)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for r in range(1, args.rounds + 1):
        runs.append(bench_server("alone", SERVER, "/health", free_port(), args, r))
        for share in args.shares:
            burner = subprocess.Popen([sys.executable, __file__, "--burn", str(share)])
            try:
                runs.append(bench_server(f"beside-{share}", SERVER, "/health", free_port(), args, r))
            finally:
                burner.kill()
                burner.wait()
    median = {}
    for name in ["alone", *(f"beside-{s}" for s in args.shares)]:
        for level in args.concurrency:
            tps = [x["tokens_per_s"] for run in runs if run["server"] == name for x in run["results"]
                   if x["concurrency"] == level]  # fmt: skip
            median.setdefault(name, {})[f"c{level}"] = {"tokens_per_s": round(statistics.median(tps), 1), "rounds": tps}
    for row in median.values():
        for level, cell in row.items():
            cell["vs_alone"] = round(cell["tokens_per_s"] / median["alone"][level]["tokens_per_s"], 3)
    summary = {"rounds": args.rounds, "waves": args.waves, "max_tokens": args.max_tokens, "median": median}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(median, indent=2))


if __name__ == "__main__":
    main()
