"""Staying up under abuse: a bounded burst of misbehaving clients on loopback, then normal service."""

import asyncio
import random
import time

import httpx
import pytest

from tests.integration.conftest import chat_body


async def disconnect_mid_stream(client: httpx.AsyncClient, url: str, rng: random.Random) -> str:
    body = chat_body("Tell me a long story.", max_tokens=300, ignore_eos=True, stream=True)
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        lines = 0
        async for _ in r.aiter_lines():
            lines += 1
            if lines > rng.randint(1, 12):
                break
    return "disconnected"


async def garbage(client: httpx.AsyncClient, url: str, rng: random.Random) -> str:
    payloads = [
        b"{", b"null", b"[]", b'{"messages": "x"}', b'{"messages": [{"role": "user"}], "max_tokens": 1e9}',
        b'{"prompt": [[-5]]}', bytes(rng.getrandbits(8) for _ in range(64)),
    ]  # fmt: skip
    path = rng.choice(["/v1/chat/completions", "/v1/completions", "/generate", "/chat/batched", "/infer"])
    r = await client.post(f"{url}{path}", content=rng.choice(payloads), headers={"content-type": "application/json"})
    assert r.status_code in (400, 404, 422), (path, r.status_code, r.text)
    return f"refused {r.status_code}"


async def huge_then_gone(client: httpx.AsyncClient, url: str, rng: random.Random) -> str:
    try:
        await client.post(f"{url}/v1/chat/completions", json=chat_body("Go on forever.", max_tokens=400), timeout=0.3)
    except httpx.TimeoutException:
        return "timed out"
    return "finished"


def test_a_burst_of_misbehaving_clients_leaves_the_server_healthy(server):
    rng = random.Random(7)
    kinds = [disconnect_mid_stream, garbage, huge_then_gone]

    async def main():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(*(rng.choice(kinds)(client, server.url, rng) for _ in range(150)))

    outcomes = asyncio.run(main())
    assert len(outcomes) == 150 and any(o.startswith("refused") for o in outcomes)
    # Every abandoned request is aborted: nothing stays running or queued.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        server.metric("slmserve_requests_running") or server.metric("slmserve_requests_waiting")
    ):
        time.sleep(0.1)
    assert server.metric("slmserve_requests_running") == 0 and server.metric("slmserve_requests_waiting") == 0
    assert httpx.get(f"{server.url}/health").status_code == 200
    r = httpx.post(f"{server.url}/v1/chat/completions", json=chat_body("Say hi.", max_tokens=8), timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


ROUTES = {
    "/v1/chat/completions": '{"messages": [{"role": "user", "content": %s}], "max_tokens": 2}',
    "/chat/completions": '{"messages": [{"role": "user", "content": %s}], "max_tokens": 2}',
    "/v1/completions": '{"prompt": %s, "max_tokens": 2}',
    "/v1/embeddings": '{"input": %s}',
    "/tokenize": '{"prompt": %s}',
    "/infer": '{"system_prompt": %s, "user_prompt": "hi"}',
    "/chat": '{"chat_id": "1", "user_prompt": %s}',
    "/chat/batched": '{"queries": [{"chat_id": "1", "user_prompt": %s}]}',
    "/generate": '{"prompt": %s}',
    "/slm/generate": '{"prompt": %s}',
    "/slm/stream": '{"prompt": %s}',
}
OPENAI = {"/v1/chat/completions", "/chat/completions", "/v1/completions", "/v1/embeddings", "/tokenize"}


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('"\\ud800"', "lone surrogate"),  # valid JSON syntax, not text: once a 500 in the tokenizer
        ('"ok \\udfff end"', "lone surrogate"),
        ("NaN", "NaN is not a JSON number"),  # Python's json takes these; a 422 that echoed them was a 500
        ("Infinity", "Infinity is not a JSON number"),
        ("1e400", "too large"),
    ],
)
def test_bodies_that_are_not_json_text_are_4xx_in_the_route_shape(server, path, value, says):
    r = httpx.post(
        f"{server.url}{path}",
        content=(ROUTES[path] % value).encode(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == (400 if path in OPENAI else 422), r.text
    assert says in (r.json()["error"]["message"] if path in OPENAI else r.json()["detail"][0]["ctx"]["error"])


def test_an_escaped_surrogate_pair_is_text_and_invalid_utf8_is_refused(server):
    emoji = '{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}], "max_tokens": 2}'
    r = httpx.post(
        f"{server.url}/v1/chat/completions", content=emoji, headers={"content-type": "application/json"}, timeout=60
    )
    assert r.status_code == 200
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b'{"prompt": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "not UTF-8" in r.json()["error"]["message"]


def test_a_negative_seed_is_a_seed_streamed_or_not(server):
    body = chat_body("Name a color.", max_tokens=6, temperature=1.0, seed=-1)
    first = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    again = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    assert first["choices"][0]["message"]["content"] == again["choices"][0]["message"]["content"]
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and '"finish_reason":"length"' in lines[-2].replace(" ", "")
