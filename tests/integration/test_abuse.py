"""Staying up under abuse: a bounded burst of misbehaving clients on loopback, then normal service."""

import asyncio
import random
import time

import httpx

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
