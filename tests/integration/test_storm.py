"""A disconnect storm (#15): 1,000 streams closed after their first chunk, and plain clients that time out.
The engine lets go of every one (gauges back to 0 soon after the last close) and memory does not grow."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.integration.conftest import chat_body
from tests.integration.test_lifecycle import Served

STREAMS = 1000
AT_ONCE = 64  # clients open together: inside --max-running 32 + --max-waiting 256, so none is refused


def sample(text: str, name: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


async def storm(url: str) -> tuple[int, int]:
    """(streams that got a first chunk, plain requests that timed out)."""
    limits = httpx.Limits(max_connections=AT_ONCE)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(AT_ONCE)

        async def one_stream(i: int) -> bool:
            body = chat_body(f"Story number {i}, please.", max_tokens=200, stream=True, ignore_eos=True)
            async with gate, client.stream("POST", "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        return True  # leaving the block closes the connection mid-stream
            return False

        async def one_plain(i: int) -> bool:
            body = chat_body(f"Essay number {i}, please.", max_tokens=400, ignore_eos=True)
            try:
                await client.post("/v1/chat/completions", json=body, timeout=0.3)
            except httpx.TimeoutException:
                return True
            return False

        streamed = sum(await asyncio.gather(*(one_stream(i) for i in range(STREAMS))))
        timed_out = sum(await asyncio.gather(*(one_plain(i) for i in range(48))))
        return streamed, timed_out


def test_a_thousand_abandoned_streams_and_timed_out_clients_leave_no_work_and_no_memory_behind():
    served = Served("--max-running", "32", "--max-waiting", "256")
    try:
        # Warm up first: the first requests grow the KV cache and the allocator's pools to their working size.
        for _ in range(2):
            asyncio.run(storm_small(served.url))
        before = sample(httpx.get(f"{served.url}/metrics").text, "process_resident_memory_bytes")
        streamed, timed_out = asyncio.run(storm(served.url))
        closed_at = time.monotonic()
        assert streamed == STREAMS and timed_out == 48
        while True:
            metrics = httpx.get(f"{served.url}/metrics").text
            busy = sample(metrics, "slmserve_requests_running") + sample(metrics, "slmserve_requests_waiting")
            if not busy:
                break
            assert time.monotonic() - closed_at < 2, f"{busy} requests still held after the clients left"
            time.sleep(0.05)
        after = sample(metrics, "process_resident_memory_bytes")
        idle_s = time.monotonic() - closed_at
        print(f"idle {idle_s:.2f} s after the last close; RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB")
        assert after <= before * 1.10, f"RSS grew from {before / 2**20:.0f} MiB to {after / 2**20:.0f} MiB"
        ok = httpx.post(f"{served.url}/v1/chat/completions", json=chat_body("Say hi.", max_tokens=4), timeout=30)
        assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] == "length"
    finally:
        served.proc.terminate()
        served.proc.wait(timeout=60)


async def storm_small(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(i: int) -> None:
            body = chat_body(f"Story number {i}, please.", max_tokens=200, stream=True, ignore_eos=True)
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        return

        await asyncio.gather(*(one(i) for i in range(AT_ONCE)))
