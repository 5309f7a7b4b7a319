"""API keys and per-key rate limits (#15), on a live server with keys."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from slmserve.settings import Settings
from tests.integration.conftest import LiveServer, chat_body

KEYS = {"alice": "sk-alice-0123456789", "bob": "sk-bob-0123456789", "carol": "sk-carol", "dave": "sk-dave"}
RPM, TPM = 20, 1200
EOS = 2  # <|im_end|>: a logit_bias of +100 on it ends an answer at once


@pytest.fixture(scope="module")
def keyed() -> Iterator[LiveServer]:
    settings = Settings(
        api_keys=[f"{name}:{key}" for name, key in KEYS.items()] + ["sk-unnamed"],
        rate_limit_rpm=RPM,
        rate_limit_tpm=TPM,
        log_format="json",
        max_running=4,
        max_waiting=16,
    )
    live = LiveServer(settings).start()
    yield live
    live.stop()


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


CLOSED = [
    ("POST", "/v1/chat/completions", "openai"),
    ("POST", "/chat/completions", "openai"),
    ("POST", "/v1/completions", "openai"),
    ("POST", "/v1/embeddings", "openai"),
    ("POST", "/tokenize", "openai"),
    ("GET", "/v1/models", "openai"),
    ("POST", "/infer", "seed"),
    ("POST", "/chat", "seed"),
    ("POST", "/chat/batched", "seed"),
    ("POST", "/generate", "seed"),
    ("GET", "/info", "seed"),
    ("POST", "/slm/unload", "seed"),
    ("POST", "/slm/load", "seed"),
    ("GET", "/metrics", "seed"),
]


@pytest.mark.parametrize(("method", "path", "shape"), CLOSED)
def test_a_route_that_runs_the_model_or_changes_state_needs_a_key_and_says_so_in_its_shape(keyed, method, path, shape):
    for headers, says in (
        ({}, "Missing API key"),
        ({"x-api-key": "sk-wrong"}, "Incorrect API key"),
        ({"Authorization": "Bearer sk-wrong"}, "Incorrect API key"),
        ({"Authorization": f"Basic {KEYS['alice']}"}, "Missing API key"),
    ):
        r = httpx.request(method, keyed.url + path, headers=headers, json={})
        assert r.status_code == 401, (path, headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        message = r.json()["error"]["message"] if shape == "openai" else r.json()["detail"]
        assert says in message
        assert "sk-" not in r.text  # the key sent is never echoed
        if shape == "openai":
            assert r.json()["error"]["code"] == "invalid_api_key"


def test_health_the_root_the_pages_and_the_api_description_need_no_key(keyed):
    for path in ("/health", "/", "/ui", "/ui/dashboard", "/favicon.ico", "/openapi.json", "/docs"):
        assert httpx.get(keyed.url + path).status_code == 200, path


def test_a_key_works_as_a_bearer_token_and_as_x_api_key(keyed):
    body = chat_body("Say hi.", max_tokens=4)
    bearer = httpx.post(f"{keyed.url}/v1/chat/completions", json=body, headers=auth("alice"), timeout=60)
    header = httpx.post(f"{keyed.url}/v1/chat/completions", json=body, headers={"x-api-key": KEYS["alice"]}, timeout=60)
    unnamed = httpx.post(
        f"{keyed.url}/generate", json={"prompt": "Hi"}, headers={"x-api-key": "sk-unnamed"}, timeout=60
    )
    assert bearer.status_code == header.status_code == unnamed.status_code == 200
    assert bearer.json()["choices"][0]["message"]["content"] == header.json()["choices"][0]["message"]["content"]


def test_logs_name_the_key_and_neither_logs_nor_metrics_hold_a_key(keyed, caplog):
    with caplog.at_level(logging.INFO, logger="slmserve"):
        r = httpx.post(
            f"{keyed.url}/v1/chat/completions",
            json=chat_body("Count to three.", max_tokens=6),
            headers={**auth("bob"), "X-Request-ID": "req-42"},
            timeout=60,
        )
        httpx.post(f"{keyed.url}/v1/chat/completions", json={}, headers={"x-api-key": "sk-unnamed"})
        httpx.post(f"{keyed.url}/v1/chat/completions", json={}, headers={"x-api-key": "sk-intruder"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    lines = [getattr(rec, "request", None) for rec in caplog.records if rec.name == "slmserve.access"]
    mine = next(line for line in lines if line and line["id"] == "req-42")
    usage = r.json()["usage"]
    assert mine["key"] == "bob" and mine["status"] == 200 and mine["route"] == "/v1/chat/completions"
    assert (mine["prompt_tokens"], mine["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert mine["latency_ms"] > 0
    unnamed = [line["key"] for line in lines if line and line["status"] == 400]
    assert unnamed and unnamed[0].startswith("key-") and "unnamed" not in unnamed[0]
    everything = caplog.text + json.dumps(lines) + httpx.get(f"{keyed.url}/metrics", headers=auth("bob")).text
    assert not any(key in everything for key in [*KEYS.values(), "sk-unnamed", "sk-intruder"])


def test_past_its_requests_a_minute_a_key_gets_429_with_retry_after_and_another_key_does_not(keyed):
    remaining = []
    for _ in range(RPM):
        r = httpx.get(f"{keyed.url}/v1/models", headers=auth("carol"))
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == str(RPM)
        remaining.append(int(r.headers["x-ratelimit-remaining-requests"]))
    assert remaining == list(range(RPM - 1, -1, -1))
    refused = httpx.get(f"{keyed.url}/v1/models", headers=auth("carol"))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert f"requests: {RPM} a minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60 / RPM + 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    other = httpx.get(f"{keyed.url}/v1/models", headers=auth("dave"))
    assert other.status_code == 200 and other.headers["x-ratelimit-remaining-requests"] == str(RPM - 1)


def test_tokens_a_minute_are_reserved_at_admission_and_given_back_when_the_request_ends(keyed):
    url = f"{keyed.url}/v1/chat/completions"
    # Ends at its first token: the 800 reserved for max_tokens come back.
    short = httpx.post(
        url, json=chat_body("Hi", max_tokens=800, logit_bias={str(EOS): 100}), headers=auth("alice"), timeout=60
    )
    assert short.status_code == 200
    spent = short.json()["usage"]["total_tokens"]
    assert short.json()["usage"]["completion_tokens"] <= 1
    remaining = int(short.headers["x-ratelimit-remaining-tokens"])
    assert remaining >= TPM - spent - 60  # earlier tests' use is refilled at TPM/60 a second
    assert short.headers["x-ratelimit-limit-tokens"] == str(TPM)

    too_big = httpx.post(url, json=chat_body("Hi", max_tokens=TPM), headers=auth("alice"))
    assert too_big.status_code == 400 and too_big.json()["error"]["param"] == "max_tokens"
    assert f"{TPM} tokens a minute" in too_big.json()["error"]["message"]

    # A stream holds its reservation while it runs: a second request that does not fit beside it waits (429).
    held = chat_body("Tell me a long story.", max_tokens=900, stream=True, ignore_eos=True)
    with httpx.stream("POST", url, json=held, headers=auth("alice"), timeout=60) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()  # held: a dropped iterator closes the response, and the server aborts it
        next(lines)
        quick = chat_body("Hi", max_tokens=400, logit_bias={str(EOS): 100})
        refused = httpx.post(url, json=quick, headers=auth("alice"), timeout=60)
        beside = httpx.post(url, json=quick, headers=auth("bob"), timeout=60)
    assert refused.status_code == 429 and "tokens: 1200 a minute" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert beside.status_code == 200  # one key's use never limits another's
    # The stream was closed after a few tokens: what it did not use comes back once the server has aborted it.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        tokens = httpx.post(f"{keyed.url}/tokenize", json={"prompt": "x"}, headers=auth("alice"))
        if int(tokens.headers["x-ratelimit-remaining-tokens"]) > TPM - 600:
            break
        time.sleep(0.2)
    assert int(tokens.headers["x-ratelimit-remaining-tokens"]) > TPM - 600
