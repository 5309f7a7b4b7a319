"""`slmserve cluster`: a local Ray head, the application deployed on it, served until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import threading

from slmserve.settings import Settings

log = logging.getLogger(__name__)

# Ray's shared-memory object store; our messages are small (token ids, outputs), so a small one fits a small box.
OBJECT_STORE_BYTES = 256 * 1024**2


def run_cluster(settings: Settings, options) -> None:
    """Start Ray (dashboard off), deploy, serve on settings.host:port, and on SIGTERM/SIGINT drain and stop."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from machines without internet
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
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(app, name="slmserve", route_prefix="/", blocking=False)
        print(f"slmserve cluster: serving on http://{settings.host}:{settings.port}", flush=True)
        stop.wait()
        log.info("stopping: draining replicas for up to %.0f s", options.drain_seconds)
    finally:
        serve.shutdown()
        ray.shutdown()
