"""`slmserve cluster --ray-proxy`: every request through Ray Serve's proxy actor, as Ray's own config files run
it, instead of the default direct ingress (the gateway replica serving the port itself, tested in
test_cluster.py). One replica: the same routes answer, streams come through, SIGTERM stops it."""

from __future__ import annotations

import json
import signal
import time

import httpx
import psutil


def test_rays_proxy_actor_serves_the_port_and_the_routes_answer(proxy):
    assert "ProxyActor" in proxy.listener()
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 12}
    r = httpx.post(f"{proxy.url}/v1/chat/completions", json={**body, "temperature": 0}, timeout=60)
    assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["message"]["content"]
    assert r.headers["x-slmserve-replica"].startswith("smollm2-135m-instruct#")
    stream = {**body, "stream": True, "max_tokens": 48, "ignore_eos": True}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=stream, timeout=60) as r:
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert r.status_code == 200 and data[-1] == "[DONE]"
    pieces = [json.loads(d)["choices"][0]["delta"].get("content") for d in data[:-1] if json.loads(d)["choices"]]
    # The first token alone, then what came in each 100 ms (one thread takes longer than that for 47), the last.
    assert len([p for p in pieces if p]) >= 3


def test_sigterm_stops_it(proxy):
    processes = proxy.processes()
    start = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    proxy.proc.wait(timeout=60)
    _, alive = psutil.wait_procs(processes, timeout=max(1.0, 60 - (time.monotonic() - start)))
    assert not alive and proxy.proc.returncode == 0
    assert time.monotonic() - start < 60
