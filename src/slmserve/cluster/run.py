"""`slmserve cluster`: a local Ray head, the application deployed on it, served until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import threading

from slmserve.cluster.startup import ClusterFailed, check_port, failure_message, wait_port_free
from slmserve.settings import Settings
from slmserve.tools.launch import free_port

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
        # The mode also runs the handle's router and the user's code on the replica's one event loop. Measured
        # here, that loop then took a burst of requests before the router could place any: a replica got more
        # than its max_ongoing_requests (its engine refused with 429 while the other had room), and after a
        # replica's replacement every request went to one replica (tests/cluster/test_cluster.py fails both).
        # On loops of their own, as in Ray's default mode, the tests pass.
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1",
    }


def run_cluster(settings: Settings, options, *, direct_ingress: bool = True) -> None:
    """Start Ray (dashboard off), deploy, serve on settings.host:port, and on SIGTERM/SIGINT drain and stop.

    direct_ingress: the gateway serves the port itself (see direct_ingress_env), about 8 ms sooner to a first
    token than through Ray's proxy actor and with more of the machine left to the engines (docs/PERFORMANCE.md).
    ClusterFailed, its message a line or two, when the port is taken or the deployment fails.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from machines without internet
    if direct_ingress and options.gateways > 1:
        raise ValueError("several gateways share one port through Ray's proxy: add --ray-proxy")
    check_port(settings.host, settings.port)  # before Ray's ~20 s start, not after
    if direct_ingress:
        os.environ.update(direct_ingress_env(settings.port))
    import ray
    from ray import serve

    from slmserve.cluster.app import build

    app = build(settings, options)
    quiet = settings.log_level != "debug"
    if quiet:
        # Ray's "Application 'slmserve' is ready at http://...:PROXY_PORT/" names its idle proxy's port, not ours.
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    # Logical CPUs: enough for every replica's threads even on a machine with fewer cores (oversubscribed then).
    cpus = max(os.cpu_count() or 1, options.most_replicas * options.threads)
    context = ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        logging_level=logging.WARNING,
        log_to_driver=not quiet,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        # Ray's own proxy still starts with direct ingress (HAProxy's fallback) but serves nobody here.
        proxy_port = free_port(settings.host) if direct_ingress else settings.port
        serve.start(http_options={"host": settings.host, "port": proxy_port})
        if direct_ingress:
            wait_port_free(settings.host, settings.port)
        try:
            serve.run(app, name="slmserve", route_prefix="/", blocking=False)
        except RuntimeError as exc:  # "Deploying application slmserve failed: ..."; the cause is in Ray's log
            session = context.address_info.get("session_dir")
            raise ClusterFailed(failure_message(session, settings.host, settings.port, direct_ingress)) from exc
        print(f"slmserve cluster: serving on http://{settings.host}:{settings.port}", flush=True)
        stop.wait()
        log.info("stopping: draining replicas for up to %.0f s", options.drain_seconds)
    finally:
        if quiet:
            # Serve's controller ends its own graceful_shutdown task by killing itself, and Ray reports that task
            # as failed ("Task ServeController.graceful_shutdown failed ... will be retried"). Ray's debugger
            # (ray/util/rpdb.py) silences the driver's log printing the same way.
            ray._private.worker._worker_logs_enabled = False
        serve.shutdown()
        ray.shutdown()
