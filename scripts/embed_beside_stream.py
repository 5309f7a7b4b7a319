"""What a long /v1/embeddings input costs a chat stream running beside it, against a live server.

Embeds a ~2,000-token input alone --tries times, then once while one streaming chat completion runs (greedy, EOS
ignored), and reports the tokens the stream got during the embedding and its longest wait between two of them.

    slmserve serve --port 8123 &
    python scripts/embed_beside_stream.py --url http://127.0.0.1:8123 [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import httpx

LONG = " ".join(f"Sentence {i} says the river runs past the old mill." for i in range(150))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    alone = []
    for _ in range(args.tries):
        start = time.monotonic()
        r = httpx.post(f"{args.url}/v1/embeddings", json={"input": LONG}, timeout=300)
        r.raise_for_status()
        alone.append(round(time.monotonic() - start, 2))
    tokens = r.json()["usage"]["prompt_tokens"]

    arrivals: list[float] = []
    done = threading.Event()

    def stream() -> None:
        body = {"messages": [{"role": "user", "content": "Count to one thousand."}], "max_tokens": 1500,
                "ignore_eos": True, "stream": True, "temperature": 0}  # fmt: skip
        with httpx.stream("POST", f"{args.url}/v1/chat/completions", json=body, timeout=300) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.monotonic())
                if done.is_set():
                    break

    reader = threading.Thread(target=stream)
    reader.start()
    time.sleep(2)  # the stream is under way
    start = time.monotonic()
    httpx.post(f"{args.url}/v1/embeddings", json={"input": LONG}, timeout=300).raise_for_status()
    end = time.monotonic()
    done.set()
    reader.join()
    # The wait spanning the embedding: from the last token before its end to the first after its start.
    before = [t for t in arrivals if t <= end]
    during = [t for t in arrivals if start <= t <= end]
    after = next((t for t in arrivals if t > end), end)
    waits = [b - a for a, b in zip(before, [*before[1:], after], strict=True) if b >= start]
    result = {
        "input_tokens": tokens,
        "embed_alone_s": alone,
        "embed_beside_stream_s": round(end - start, 2),
        "stream_tokens_during": len(during),
        "longest_wait_s": round(max(waits), 3),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
