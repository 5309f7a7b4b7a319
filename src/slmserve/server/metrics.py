"""Prometheus instruments, one registry per app (no process-wide globals)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from slmserve.engine.engine import RequestOutput
from slmserve.engine.scheduler import QueueFullError

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.ttft = Histogram(
            "slmserve_time_to_first_token_seconds",
            "Request arrival to first token.",
            buckets=_LATENCY,
            registry=r,
        )
        self.itl = Histogram(
            "slmserve_inter_token_latency_seconds",
            "Time between a request's tokens.",
            buckets=_ITL,
            registry=r,
        )
        self.e2e = Histogram(
            "slmserve_request_latency_seconds", "Request arrival to last token.", buckets=_LATENCY, registry=r
        )
        self.queue = Histogram(
            "slmserve_queue_time_seconds", "Request arrival to first scheduled.", buckets=_LATENCY, registry=r
        )
        self.running = Gauge("slmserve_requests_running", "Requests being decoded.", registry=r)
        self.waiting = Gauge("slmserve_requests_waiting", "Requests waiting for a slot.", registry=r)
        self.prompt_tokens = Counter("slmserve_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.generation_tokens = Counter("slmserve_generation_tokens", "Tokens generated.", registry=r)
        self.requests = Counter("slmserve_requests_finished", "Finished requests.", ["finish_reason"], registry=r)
        self.rejected = Counter("slmserve_requests_rejected", "Requests refused with 429.", registry=r)
        # process_cpu_seconds_total, process_resident_memory_bytes, ...: the dashboard's and monitor's CPU and memory.
        ProcessCollector(registry=r)

    def bind_gauges(self, running: Callable[[], float], waiting: Callable[[], float]) -> None:
        """Gauges read at scrape time, so an idle engine never reports stale counts."""
        self.running.set_function(running)
        self.waiting.set_function(waiting)

    async def observe(self, outputs: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
        """Pass a request's outputs through, timing them; finish reasons also count abort, error and 429s."""
        start = last = time.monotonic()
        first, finished = True, False
        try:
            async for out in outputs:
                now = time.monotonic()
                if out.token_ids:
                    if first:
                        self.ttft.observe(now - start)
                        self.prompt_tokens.inc(out.num_prompt_tokens)
                    else:  # an output may carry several tokens (a cluster's hosts send a few at once)
                        gap = (now - last) / len(out.token_ids)
                        for _ in out.token_ids:
                            self.itl.observe(gap)
                    first, last = False, now
                    self.generation_tokens.inc(len(out.token_ids))
                if out.queue_time is not None:
                    self.queue.observe(out.queue_time)
                if out.finished:
                    finished = True
                    self.e2e.observe(now - start)
                    self.requests.labels(out.finish_reason).inc()
                yield out
        except QueueFullError:
            finished = True
            self.rejected.inc()
            raise
        except Exception:
            finished = True
            self.requests.labels("error").inc()
            raise
        finally:
            if not finished:  # the consumer went away (client disconnect, cancellation)
                self.requests.labels("abort").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
