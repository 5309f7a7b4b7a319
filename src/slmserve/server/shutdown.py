"""Graceful drain: on SIGTERM or SIGINT stop admitting, let requests in flight finish, then exit 0.

While draining, new requests get 503 with Retry-After in their route's shape (middleware/drain.py) and /health
answers 503 `draining` (load balancers take the server out), but the port stays open so those answers reach
clients. The server exits once nothing is in flight or --drain-timeout has passed, whichever comes first; a second
signal exits at once. uvicorn alone closes the port on the first signal (new clients see connection refused) and
re-raises the signal after shutdown, so SIGTERM exited 143 while SIGINT exited 0.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)


@dataclass
class Drain:
    """Whether the server drains, and how many requests it still serves."""

    draining: bool = False
    in_flight: int = 0


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain before its shutdown, and exit code 0 after a drain, SIGTERM as SIGINT."""

    def __init__(self, config: uvicorn.Config, drain: Drain, timeout: float) -> None:
        super().__init__(config)
        self.drain, self.timeout = drain, timeout
        self.drain_until: float | None = None
        self.forced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: set flags only; on_tick, on the event loop, acts on them within 0.1 s.
        if self.drain_until is None:
            self.drain.draining = True
            self.drain_until = time.monotonic() + self.timeout
        else:
            self.should_exit = self.force_exit = self.forced = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and not self.should_exit:
            if counter % 10 == 0 or self.drain.in_flight == 0:
                log.info("draining: %d request(s) in flight", self.drain.in_flight)
            if self.drain.in_flight == 0 or time.monotonic() >= self.drain_until:
                if self.drain.in_flight:
                    log.warning("drain timeout: %d request(s) cut", self.drain.in_flight)
                    self.config.timeout_graceful_shutdown = 0.5  # no more waiting for them in uvicorn's shutdown
                self.should_exit = True
        return await super().on_tick(counter)
