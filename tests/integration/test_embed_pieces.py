"""A long embeddings input goes to llama.cpp in pieces of a step's size: the vector is the one-call vector, and
generation streams go on between the pieces instead of stalling for the whole input (RELIABILITY.md's gap)."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np

from slmserve.engine.runner_llamacpp import LlamaCppRunner
from slmserve.models.registry import resolve_model
from tests.integration.conftest import chat_body

LONG = " ".join(f"Sentence {i} says the river runs past the old mill." for i in range(150))  # ~1,900 tokens


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_an_input_in_pieces_embeds_as_in_one_call():
    path = resolve_model("smollm2-135m-instruct").path
    small = LlamaCppRunner(path, n_ctx=256, n_seq_max=1, n_batch=64, n_threads=2)
    whole = LlamaCppRunner(path, n_ctx=256, n_seq_max=1, n_batch=512, n_threads=2)
    try:
        tokens = small.tokenizer.encode(LONG)[:300]
        assert small.embed_chunk == 64 and whole.embed_chunk == 512
        pieces = sum(small.embed([tokens[s : s + 64]], s)[0] for s in range(0, 300, 64))
        again = sum(small.embed([tokens[s : s + 64]], s)[0] for s in range(0, 300, 64))  # sequence 0 starts over
        one = whole.embed([tokens])[0]
        short = whole.embed([tokens[:64], tokens[64:128]])  # whole short inputs beside each other
    finally:
        small.close()
        whole.close()
    assert np.dot(unit(pieces), unit(one)) > 0.9999 and np.allclose(pieces, again)
    assert np.dot(unit(short[0]), unit(one)) < 0.99  # every piece counts, not just the first
    assert np.dot(unit(short[0]), unit(pieces)) < 0.99 and np.dot(unit(short[0]), unit(short[1])) < 0.9999


def test_a_long_embedding_does_not_stall_a_stream(server):
    """A stream's longest wait between tokens while a ~1,900-token input embeds: a piece's time, not the whole's
    (before: the whole input in one llama_decode on the engine thread, ~5 s of no tokens)."""
    arrivals: list[float] = []
    started = threading.Event()

    def stream() -> None:
        body = chat_body("Count to one thousand.", max_tokens=2000, ignore_eos=True, stream=True)
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.monotonic())
                    if len(arrivals) == 20:
                        started.set()
                if embedded.is_set() and len(arrivals) > 20:
                    break

    embedded = threading.Event()
    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(60)
    t0 = time.monotonic()
    r = httpx.post(f"{server.url}/v1/embeddings", json={"input": LONG}, timeout=120)
    t1 = time.monotonic()
    embedded.set()
    reader.join(120)
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] > 1500
    gaps = np.diff([t for t in arrivals if t0 <= t <= t1])
    assert len(gaps) >= 5, "the stream sent nearly nothing while the input embedded"
    assert gaps.max() < (t1 - t0) / 3, (gaps.max(), t1 - t0)
