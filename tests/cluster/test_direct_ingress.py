"""`slmserve cluster --direct-ingress`: Ray Serve's throughput-optimized mode, where the gateway replica serves
the port itself (no proxy actor in the path) and calls model hosts over gRPC. One replica; the routing tests of
test_cluster.py run on the default mode (see cluster/run.py for why this one is not the default yet)."""

from __future__ import annotations

import json
import signal
import time
from urllib.parse import urlparse

import httpx
import psutil


def listener(port: int) -> str:
    """The command line of the process that listens on port."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid is not None:
            try:
                return " ".join(psutil.Process(conn.pid).cmdline())
            except psutil.Error:  # gone meanwhile: look on
                continue
    return ""


def test_the_gateway_replica_itself_serves_the_port_and_answers(direct):
    assert "ServeReplica:slmserve:gateway" in listener(urlparse(direct.url).port)  # not Ray's proxy actor
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 12}
    r = httpx.post(f"{direct.url}/v1/chat/completions", json={**body, "temperature": 0}, timeout=60)
    assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["message"]["content"]
    assert r.headers["x-slmserve-replica"].startswith("smollm2-135m-instruct#")
    with httpx.stream(
        "POST", f"{direct.url}/v1/chat/completions", json={**body, "stream": True, "max_tokens": 16}, timeout=60
    ) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and data[-1] == "[DONE]"
    pieces = [json.loads(d)["choices"][0]["delta"].get("content") for d in data[:-1] if json.loads(d)["choices"]]
    assert len([p for p in pieces if p]) >= 8


def test_sigterm_stops_it_without_waiting_for_a_load_balancer(direct):
    # Ray holds a stopping direct-ingress replica open 30 s by default for a load balancer; we set 1 s.
    processes = direct.processes()
    start = time.monotonic()
    direct.proc.send_signal(signal.SIGTERM)
    direct.proc.wait(timeout=60)
    _, alive = psutil.wait_procs(processes, timeout=max(1.0, 60 - (time.monotonic() - start)))
    assert not alive and direct.proc.returncode == 0
    assert time.monotonic() - start < 25
