"""`slmserve cluster`: a local Ray head, the application deployed on it, served until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

from slmserve.settings import Settings

log = logging.getLogger(__name__)

# Ray's shared-memory object store; our messages are small (token ids, outputs), so a small one fits a small box.
OBJECT_STORE_BYTES = 256 * 1024**2


def direct_ingress_env(port: int) -> dict[str, str]:
    """Ray Serve's throughput-optimized mode (RAY_SERVE_THROUGHPUT_OPTIMIZED, Ray >= 2.55; Ray's guide "Enable
    High Throughput on Ray Serve with KubeRay"): the gateway replica answers HTTP itself on `port` (direct ingress:
    no hop through Ray's proxy actor) and reaches the model hosts over gRPC instead of Ray actor calls. Each
    streamed token then crosses one process boundary fewer. Ray reads these when its modules are imported, in
    every process, so they must be in the environment before `import ray` and before Ray starts its workers."""
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # Ray's range leaves out its end
        # Ray holds a stopping ingress replica open this long for a load balancer to let go of it (30 s by
        # default); one machine has none in front, so a stop need not wait for it.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    }


def _spare_port(host: str) -> int:
    """A free port for Ray's own proxy, which still starts (HAProxy's fallback) but serves nobody here."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_cluster(settings: Settings, options, *, direct_ingress: bool = False) -> None:
    """Start Ray (dashboard off), deploy, serve on settings.host:port, and on SIGTERM/SIGINT drain and stop.

    direct_ingress: the gateway serves the port itself (see direct_ingress_env), ~25% more tokens/s at 32 users
    here; but in that mode Ray let a burst past a replica's max_ongoing_requests (its engine then refused with
    429 while the other replica had room) and kept routing to one replica after a replacement, which the cluster
    tests catch. So the default stays Ray's proxy actor in front of the gateway (docs/PERFORMANCE.md)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from machines without internet
    if direct_ingress:
        os.environ.update(direct_ingress_env(settings.port))
    import ray
    from ray import serve

    from slmserve.cluster.app import build

    app = build(settings, options)
    # Logical CPUs: enough for every replica's threads even on a machine with fewer cores (oversubscribed then).
    cpus = max(os.cpu_count() or 1, options.most_replicas * options.threads)
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        logging_level=logging.WARNING,
        log_to_driver=settings.log_level == "debug",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        proxy_port = _spare_port(settings.host) if direct_ingress else settings.port
        serve.start(http_options={"host": settings.host, "port": proxy_port})
        serve.run(app, name="slmserve", route_prefix="/", blocking=False)
        print(f"slmserve cluster: serving on http://{settings.host}:{settings.port}", flush=True)
        stop.wait()
        log.info("stopping: draining replicas for up to %.0f s", options.drain_seconds)
    finally:
        serve.shutdown()
        ray.shutdown()
