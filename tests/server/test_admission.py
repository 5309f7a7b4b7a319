"""Admission under a burst (#32): with --max-running 4 --max-waiting 8, 120 streams at once got 9 places (one
running, eight waiting) where the server has 12. A burst that arrives while a step runs may take the running slots
that step leaves free as well as the waiting places."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.fakes import ChatRunner


class HeldRunner(ChatRunner):
    """A runner whose first step waits until the test lets it go: the burst lands while one request runs."""

    def __init__(self, script: bytes) -> None:
        super().__init__(script)
        self.running, self.go = threading.Event(), threading.Event()

    def run(self, batch):
        self.running.set()
        self.go.wait(timeout=30)
        return super().run(batch)


def test_a_burst_gets_every_slot_and_waiting_place_and_no_more(serve):
    runner = HeldRunner(b"x" * 5000)
    served = serve(runner=runner, max_running=4, max_waiting=8)
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1900, "stream": True}
    streams = []

    def open_stream(_):
        r = served.stream("POST", "/v1/chat/completions", json=body)
        streams.append(r)
        return r.__enter__().status_code

    with ThreadPoolExecutor(max_workers=24) as pool:
        first = pool.submit(open_stream, 0)
        assert runner.running.wait(timeout=30)  # one request is in the engine's first step, which waits
        burst = [pool.submit(open_stream, i) for i in range(1, 24)]
        time.sleep(1.0)  # the burst reaches admission while that step still runs
        runner.go.set()
        codes = [first.result(), *(f.result() for f in burst)]
    try:
        assert codes.count(200) == 12 and codes.count(429) == 12, codes
    finally:
        for r in streams:
            r.__exit__(None, None, None)
