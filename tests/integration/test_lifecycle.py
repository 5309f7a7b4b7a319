"""Deadlines and graceful drain (#15): a request past its deadline is stopped and its slot freed; SIGTERM or
Ctrl-C lets streams in flight finish while new requests get 503, then the server exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from slmserve.settings import Settings
from slmserve.tools.launch import free_port, wait_healthy
from tests.integration.conftest import LiveServer, chat_body

LONG = "Write a long essay about the history of the Roman Empire."


@pytest.fixture(scope="module")
def timed() -> Iterator[LiveServer]:
    live = LiveServer(Settings(request_timeout=1.5, max_running=4, max_waiting=8)).start()
    yield live
    live.stop()


def wait_idle(live: LiveServer, within: float = 5.0) -> float:
    """Seconds until no request runs or waits; fails past `within`."""
    start = time.monotonic()
    while live.metric("slmserve_requests_running") + live.metric("slmserve_requests_waiting"):
        assert time.monotonic() - start < within, "the engine still works on a request past its deadline"
        time.sleep(0.05)
    return time.monotonic() - start


def events(response: httpx.Response) -> list[dict | str]:
    return [
        line[6:] if line == "data: [DONE]" else json.loads(line[6:])
        for line in response.iter_lines()
        if line.startswith("data: ")
    ]


def test_past_the_servers_timeout_a_request_is_stopped_with_504_in_its_shape_and_its_slot_freed(timed):
    start = time.monotonic()
    r = httpx.post(
        f"{timed.url}/v1/chat/completions", json=chat_body(LONG, max_tokens=1900, ignore_eos=True), timeout=30
    )
    took = time.monotonic() - start
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
    assert "deadline of 1.5 s" in r.json()["error"]["message"]
    assert 1.4 <= took < 4
    wait_idle(timed)
    seed = httpx.post(f"{timed.url}/generate", json={"prompt": LONG, "max_length": 200}, timeout=30)
    assert seed.status_code in (200, 504)  # 200 tokens may finish inside 1.5 s on a fast machine
    if seed.status_code == 504:
        assert "deadline" in seed.json()["detail"]


def test_a_client_may_ask_for_less_time_but_not_for_more(timed):
    for asked, cut_at in (("0.3", 0.3), ("100", 1.5)):
        start = time.monotonic()
        r = httpx.post(
            f"{timed.url}/v1/completions",
            json={"prompt": LONG, "max_tokens": 1900, "ignore_eos": True},
            headers={"x-request-timeout": asked},
            timeout=30,
        )
        assert r.status_code == 504 and f"deadline of {cut_at:g} s" in r.json()["error"]["message"]
        assert cut_at <= time.monotonic() - start < cut_at + 2.5
        wait_idle(timed)


def test_a_stream_past_its_deadline_ends_with_an_error_event_then_done(server):
    body = chat_body(LONG, max_tokens=1900, ignore_eos=True, stream=True)
    headers = {"x-request-timeout": "0.5"}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200
        got = events(r)
    assert got[-1] == "[DONE]" and got[-2]["error"]["code"] == "timeout"
    assert len(got) > 3  # some tokens came before the deadline
    assert not any(c.get("finish_reason") for e in got[:-2] for c in e["choices"])
    wait_idle(server)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_timeout_header_is_a_400_in_the_routes_shape(server, value):
    headers = {"x-request-timeout": value}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=chat_body("hi", max_tokens=2), headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-request-timeout"
    seed = httpx.post(f"{server.url}/generate", json={"prompt": "hi"}, headers=headers)
    assert seed.status_code == 400 and "x-request-timeout" in seed.json()["detail"]


class Served:
    """`slmserve serve` in a child process, for what needs signals and exit codes."""

    def __init__(self, *args: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "slmserve.cli", "serve", "--port", str(port), "--max-running", "4", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_healthy(self.url, self.proc, 120)

    def stream(self, max_tokens: int, out: list) -> threading.Thread:
        """A streamed chat in a thread; its events land in out. Returns once its first event is in."""
        first = threading.Event()

        def run() -> None:
            body = chat_body(LONG, max_tokens=max_tokens, ignore_eos=True, stream=True)
            try:
                with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, timeout=60) as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            out.append(line[6:])
                            first.set()
            except httpx.HTTPError as exc:
                out.append(exc)
            first.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert first.wait(30)
        return thread

    def exit_code(self, within: float) -> int:
        try:
            return self.proc.wait(timeout=within)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def finish_reasons(out: list) -> list[str]:
    chunks = [json.loads(e) for e in out if isinstance(e, str) and e != "[DONE]"]
    return [c["finish_reason"] for e in chunks for c in e["choices"] if c.get("finish_reason")]


def test_sigterm_drains_streams_in_flight_refuses_new_requests_with_503_and_exits_0():
    served = Served("--drain-timeout", "30", "--log-format", "json")
    outs: list[list] = [[] for _ in range(3)]
    threads = [served.stream(120, out) for out in outs]
    served.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    late = httpx.post(f"{served.url}/v1/chat/completions", json=chat_body("hi", max_tokens=2))
    health = httpx.get(f"{served.url}/health")
    assert late.status_code == 503 and late.json()["error"]["code"] == "draining" and late.headers["retry-after"]
    assert health.status_code == 503 and health.json()["status"] == "draining"
    seed = httpx.post(f"{served.url}/generate", json={"prompt": "hi"})
    assert seed.status_code == 503 and "shutting down" in seed.json()["detail"]
    assert served.exit_code(within=60) == 0, served.proc.stderr.read()
    for thread, out in zip(threads, outs, strict=True):
        thread.join(5)
        assert out[-1] == "[DONE]" and finish_reasons(out) == ["length"], out[-3:]
    # --log-format json: every line is a JSON object, uvicorn's too; each request's line says how it went.
    lines = [json.loads(line) for line in served.proc.stderr.read().splitlines()]
    requests = [line for line in lines if line["logger"] == "slmserve.access"]
    streamed = [r for r in requests if r["route"] == "/v1/chat/completions" and r["status"] == 200]
    assert len(streamed) == 3 and all(r["completion_tokens"] == 120 and r["prompt_tokens"] > 10 for r in streamed)
    assert {r["status"] for r in requests if r["route"] == "/generate"} == {503}
    assert any(line["logger"] == "uvicorn.error" for line in lines)
    assert all(len(r["id"]) == 32 and r["latency_ms"] >= 0 for r in requests)


def test_past_the_drain_timeout_the_server_exits_0_and_a_second_signal_exits_at_once():
    served = Served("--drain-timeout", "1")
    out: list = []
    thread = served.stream(1900, out)
    start = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    assert served.exit_code(within=15) == 0
    assert time.monotonic() - start < 10  # the stream alone would take 1900 tokens / ~100 tok/s = 19 s
    thread.join(5)
    assert not finish_reasons(out)  # cut at the drain timeout, not finished

    served = Served("--drain-timeout", "60")
    served.stream(1900, [])
    start = time.monotonic()
    served.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    served.proc.send_signal(signal.SIGINT)
    assert served.exit_code(within=15) == 1
    assert time.monotonic() - start < 10  # not the 60 s drain, nor the stream's 19 s
