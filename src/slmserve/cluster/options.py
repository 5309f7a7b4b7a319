"""The cluster's own options (replicas, autoscaling, threads, drain, streaming), beside the server's Settings; no
ray here, so `slmserve cluster --help` takes its defaults from them without Ray Serve installed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClusterOptions:
    """How many model-host replicas, and how each runs. Autoscaling when max_replicas is given."""

    replicas: int = 1
    min_replicas: int = 1
    max_replicas: int | None = None
    target_ongoing_requests: float = 16.0  # per replica, for the autoscaler
    # How long load must stay above (below) target before the autoscaler adds (removes) a replica. A model host
    # starts in seconds, so upscaling need not wait Ray's default 30 s; downscaling waits to ride out pauses.
    upscale_delay_s: float = 10.0
    downscale_delay_s: float = 120.0
    threads: int = 1  # llama.cpp threads per replica (and the CPUs Ray reserves for it)
    drain_seconds: float = 30.0  # a stopping replica finishes its requests for this long
    # The most requests a replica holds: its engine's running and waiting. Ray's default of 5 would starve a
    # continuous-batching engine; past what the replicas hold, the gateway answers 429.
    max_ongoing_requests: int | None = None
    # The longest a model host holds a request's tokens before sending them to the gateway (the first and last
    # go at once). Each message costs CPU in both processes, and each SSE chunk the gateway and the client; with a
    # channel open, one message carries the held tokens of all the gateway's requests at the replica (cluster/
    # channel.py). 100 ms: a user sees text 10 times a second, and on 2 cores 32 streams got 0.87-0.97 of the single
    # process's tokens/s in three runs, ahead of a message a request per 4 tokens in 8 of 12 rounds
    # (docs/PERFORMANCE.md).
    stream_interval_ms: float = 100.0
    # Gateway replicas (the FastAPI app) behind Ray's proxy; with more than one, give them a shared --store-url so
    # stored responses and rate limits are the same whichever answers.
    gateways: int = 1

    def __post_init__(self) -> None:
        if self.upscale_delay_s < 0 or self.downscale_delay_s < 0 or self.stream_interval_ms < 0:
            raise ValueError("upscale and downscale delays and stream_interval_ms cannot be negative")
        if self.replicas < 1 or self.min_replicas < 0 or self.threads < 1 or self.gateways < 1:
            raise ValueError("replicas, gateways and threads must be at least 1, min_replicas at least 0")
        if self.max_replicas is not None and self.max_replicas < max(self.min_replicas, 1):
            raise ValueError("max_replicas must be at least min_replicas and 1")

    @property
    def most_replicas(self) -> int:
        return self.max_replicas or self.replicas

    def scaling(self) -> dict:
        if self.max_replicas is None:
            return {"num_replicas": self.replicas}
        return {
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "initial_replicas": max(self.min_replicas, 1),
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
            }
        }
