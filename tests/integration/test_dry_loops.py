"""DRY on the bundled model: a greedy answer that loops verbatim without it, and loops far less with it."""

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import chat_body

MAX_TOKENS = 200

# User-like requests on which SmolLM2-135M at temperature 0 repeats itself: the robot story says "The town's
# mayor had hired the robot to help with construction work ..." again and again; the cats go on with "a majestic
# feline, " to the end. Measured here (of ~190 8-token n-grams): 118 and 188 repeats without DRY, 2 and 0 with 0.8.
LOOPING = ["Write a story about a robot.", "Write 20 sentences about cats."]


def answer(server, content: str, **kw) -> tuple[str, list[int]]:
    r = httpx.post(
        f"{server.url}/v1/chat/completions", json=chat_body(content, max_tokens=MAX_TOKENS, **kw), timeout=300
    )
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["message"]["content"]
    ids = httpx.post(f"{server.url}/tokenize", json={"prompt": text, "add_special_tokens": False}, timeout=60).json()
    return text, ids["tokens"]


def repeated_ngrams(ids: list[int], n: int = 8) -> int:
    """Token n-grams that occur again: each occurrence after the first counts once. 0 for text that never repeats
    8 tokens verbatim; a loop of a sentence scores close to its length in tokens."""
    counts = Counter(tuple(ids[i : i + n]) for i in range(len(ids) - n + 1))
    return sum(c - 1 for c in counts.values())


@pytest.mark.parametrize("prompt", LOOPING)
def test_dry_breaks_a_verbatim_loop(server, prompt):
    with ThreadPoolExecutor(2) as pool:  # decoded side by side, in one batch
        off, on = pool.submit(answer, server, prompt), pool.submit(answer, server, prompt, dry_multiplier=0.8)
        (plain, plain_ids), (dried, dried_ids) = off.result(), on.result()
    before, after = repeated_ngrams(plain_ids), repeated_ngrams(dried_ids)
    assert before >= 80, f"the premise: without DRY the answer loops ({before} repeated 8-grams): {plain!r}"
    assert after <= before // 10, f"{after} repeated 8-grams with DRY, {before} without: {dried!r}"
    assert dried[:40] == plain[:40]  # the same start: DRY only steps in once something repeats


def test_dry_streams_the_same_text_as_it_answers(server):
    body = chat_body(LOOPING[0], max_tokens=MAX_TOKENS, dry_multiplier=0.8, stream=True)
    with ThreadPoolExecutor(1) as pool:
        whole = pool.submit(answer, server, LOOPING[0], dry_multiplier=0.8)
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=300) as r:
            assert r.status_code == 200
            chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        text = whole.result()[0]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == text
