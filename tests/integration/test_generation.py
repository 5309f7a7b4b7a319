"""Generation on the bundled model through the HTTP API: determinism, streaming, stop strings, logprobs."""

import json

import httpx

from tests.integration.conftest import chat_body


def chat(server, **kw) -> dict:
    r = httpx.post(f"{server.url}/v1/chat/completions", json=chat_body("Name three colours.", **kw), timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def stream_text(server, path: str, body: dict) -> tuple[str, list[dict]]:
    chunks = []
    with httpx.stream("POST", f"{server.url}{path}", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    key = "delta" if path.endswith("chat/completions") else None
    text = "".join(
        (c["delta"].get("content") or "") if key else c["text"] for chunk in chunks for c in chunk["choices"]
    )
    return text, chunks


def test_greedy_answers_are_identical_and_counted(server):
    a, b = chat(server, max_tokens=40), chat(server, max_tokens=40)
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    assert a["choices"][0]["message"]["content"].strip()
    usage = a["usage"]
    assert (
        usage["completion_tokens"] <= 40
        and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )
    assert a["choices"][0]["finish_reason"] in ("stop", "length")


def test_streamed_text_equals_non_streamed_text(server):
    body = chat_body("Write a short poem about the sea.", max_tokens=60)
    full = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    text, chunks = stream_text(server, "/v1/chat/completions", body)
    assert text == full["choices"][0]["message"]["content"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == full["choices"][0]["finish_reason"]


def test_stop_string_cuts_the_answer_the_same_way_streamed_or_not(server):
    body = chat_body("Write a short poem about the sea.", max_tokens=60)
    full = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]
    words = full["content"].split()
    stop = " ".join(words[3:5])  # a phrase from the middle, usually spanning several tokens
    body["stop"] = [stop]
    cut = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
    streamed, _ = stream_text(server, "/v1/chat/completions", body)
    assert cut["finish_reason"] == "stop"
    assert cut["message"]["content"] == full["content"][: full["content"].index(stop)]
    assert streamed == cut["message"]["content"]


def test_completions_with_a_list_of_prompts_logprobs_and_usage(server):
    body = {"prompt": ["The capital of France is", "1, 2, 3,"], "max_tokens": 6, "temperature": 0, "logprobs": 3}
    r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
    assert [c["index"] for c in r["choices"]] == [0, 1]
    for c in r["choices"]:
        lp = c["logprobs"]
        assert "".join(lp["tokens"]) == c["text"]
        assert all(v <= 0 for v in lp["token_logprobs"])
        assert all(len(top) == 3 for top in lp["top_logprobs"])
    assert r["usage"]["completion_tokens"] == 12
    streamed, _ = stream_text(server, "/v1/completions", {**body, "prompt": body["prompt"][1], "logprobs": None})
    assert streamed == r["choices"][1]["text"]


def test_n_choices_with_a_seed_are_reproducible(server):
    body = chat_body("Tell me a fun fact.", max_tokens=20, temperature=1.0, seed=123, n=2)
    a = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    b = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    texts = [c["message"]["content"] for c in a["choices"]]
    assert texts == [c["message"]["content"] for c in b["choices"]]
    assert len(texts) == 2 and a["usage"]["completion_tokens"] <= 40


def test_chat_logprobs_in_openai_shape(server):
    r = chat(server, max_tokens=5, logprobs=True, top_logprobs=2)
    content = r["choices"][0]["logprobs"]["content"]
    assert len(content) == r["usage"]["completion_tokens"]
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in content)


def test_ignore_eos_yields_exactly_max_tokens(server):
    r = chat(server, max_tokens=50, ignore_eos=True, logit_bias={"2": -100, "0": -100})
    assert r["usage"]["completion_tokens"] == 50 and r["choices"][0]["finish_reason"] == "length"
