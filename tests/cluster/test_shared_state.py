"""Two gateway replicas behind Ray's proxy, sharing a real redis-server (--store-url): a response stored through
one is read through the other, and a key's rate limit is one bucket over both (issue #33)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.cluster.conftest import Cluster
from tests.services import redis_server

GATEWAY_TITLE = "ServeReplica:slmserve:gateway"
KEY = {"Authorization": "Bearer sk-test"}


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    with redis_server() as url:
        live = Cluster(
            "--ray-proxy", "--gateways", "2", "--replicas", "1", "--threads", "1", "--max-running", "4",
            "--store-url", url, "--api-keys", "sk-test", "--rate-limit-rpm", "12",
        )  # fmt: skip
        try:
            live.wait_healthy()
            yield live
        finally:
            live.stop()


def _gateways(cluster: Cluster) -> set[int]:
    pids = set()
    for p in cluster.processes():
        try:
            if any(GATEWAY_TITLE in part for part in p.cmdline()):
                pids.add(p.pid)
        except psutil.Error:
            pass
    return pids


def test_two_gateways_share_stored_responses_and_rate_limits(shared):
    assert len(_gateways(shared)) == 2
    with httpx.Client(base_url=shared.url, headers=KEY, timeout=60) as client:
        created = client.post("/v1/responses", json={"input": "Say hi.", "max_output_tokens": 5})
        assert created.status_code == 200, created.text
        rid = created.json()["id"]
        # Ray's proxy spreads these over both gateways: each reads the response the other may have stored.
        reads = [client.get(f"/v1/responses/{rid}") for _ in range(8)]
        assert [r.status_code for r in reads] == [200] * 8
        assert {r.json()["output"][0]["content"][0]["text"] for r in reads} == {
            created.json()["output"][0]["content"][0]["text"]
        }
        # 12 requests a minute for the key over both gateways: the 9 above and 3 more pass, the next is refused
        # (two buckets of 12 would have let it through).
        more = [client.get(f"/v1/responses/{rid}").status_code for _ in range(4)]
    assert more == [200, 200, 200, 429]
