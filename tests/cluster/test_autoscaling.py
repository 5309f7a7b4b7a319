"""`slmserve cluster --min-replicas 1 --max-replicas 2`: Ray's autoscaler adds a model host under load, the new
host serves, and it goes again once the load has gone."""

from __future__ import annotations

import asyncio
import time

import httpx


def _wait_for_hosts(cluster, count: int, timeout: float) -> float:
    """Seconds until exactly `count` model-host replicas run; AssertionError past timeout."""
    start = time.monotonic()
    while len(cluster.hosts()) != count:
        assert time.monotonic() - start < timeout, f"{len(cluster.hosts())} hosts, not {count}, after {timeout} s"
        time.sleep(0.5)
    return time.monotonic() - start


def _hi(client: httpx.Client | httpx.AsyncClient, url: str, **kw):
    return client.post(url, json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}, **kw)


def test_load_adds_a_replica_that_serves_and_quiet_removes_it(autoscaling):
    assert len(autoscaling.hosts()) == 1
    url = f"{autoscaling.url}/v1/chat/completions"
    with httpx.Client(timeout=60) as client:
        first = _hi(client, url).headers["x-slmserve-replica"]

    async def scale_up() -> tuple[float, str | None]:
        # 16 long streams against a target of 4 a replica: the autoscaler wants 2 replicas (its most).
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:

            async def stream(i: int) -> None:
                body = {"messages": [{"role": "user", "content": f"Story {i}"}], "max_tokens": 2000,
                        "ignore_eos": True, "stream": True}  # fmt: skip
                async with client.stream("POST", url, json=body) as r:
                    async for _ in r.aiter_lines():
                        pass

            load = [asyncio.create_task(stream(i)) for i in range(16)]
            waited = await asyncio.to_thread(_wait_for_hosts, autoscaling, 2, 90)
            # The new replica takes requests once Ray has it running (its process is up before its model is);
            # until then a short request waits behind the first replica's long ones, so ask again.
            other = None
            deadline = time.monotonic() + 60
            while other is None and time.monotonic() < deadline:
                try:
                    r = await _hi(client, url, timeout=5)
                except httpx.TimeoutException:
                    continue
                assert r.status_code == 200
                if r.headers["x-slmserve-replica"] != first:
                    other = r.headers["x-slmserve-replica"]
            for task in load:
                task.cancel()
            await asyncio.gather(*load, return_exceptions=True)
            return waited, other

    waited, other = asyncio.run(scale_up())
    assert other is not None  # the added replica answered, while the first was busy with the load
    print(f"scaled up to 2 replicas {waited:.1f} s into the load")
    waited = _wait_for_hosts(autoscaling, 1, 120)
    print(f"back to 1 replica {waited:.1f} s after the load")
    assert _hi(httpx, url, timeout=60).status_code == 200
