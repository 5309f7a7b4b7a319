"""`slmserve serve` (one process) and `slmserve cluster` (Ray Serve)."""

from __future__ import annotations

import functools
import logging
import os
from typing import Annotated

import typer

from slmserve.cli.options import checked, setup_logging
from slmserve.cluster.options import ClusterOptions
from slmserve.settings import Settings


def serve(settings: Settings) -> None:
    """Start the HTTP server (OpenAI API, /health, /metrics) on the configured model.

    SIGTERM or Ctrl-C drains it (up to --drain-timeout) and exits 0; a second signal exits at once (exit 1)."""
    import uvicorn

    from slmserve.server.app import create_app
    from slmserve.server.shutdown import DrainingServer

    setup_logging(settings)
    app = checked(create_app, settings)
    checked(_check_sources, settings)
    json_logs = settings.log_format == "json"
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # json: uvicorn's loggers go through the root's JSON handler, and the app logs each request itself.
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
        access_log=not json_logs,
        # After the drain, uvicorn waits for connections to flush what they were sent (a slow reader's last
        # chunks) for up to this long; what is left is cut.
        timeout_graceful_shutdown=5,
    )
    server = DrainingServer(config, app.state.slm.drain, settings.drain_timeout)
    server.run()
    if server.forced:
        logging.shutdown()
        os._exit(1)  # the engine thread may be mid-step: do not wait for it


def _check_sources(settings: Settings) -> None:
    """ValueError naming a model that is not there, before the server starts: a server that can never load the
    model it was started with exits at once (restart policies of systemd, Docker and Ray depend on that)."""
    from slmserve.models.registry import resolve_model

    for each in settings.per_model():
        try:
            resolve_model(each.model, each.cache_dir)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from exc


# The autoscaling flags get a --help panel of their own: beside --direct-ingress/--ray-proxy, 80 columns cut them.
_autoscaling = functools.partial(typer.Option, rich_help_panel="Autoscaling")
CLUSTER = ClusterOptions()  # the defaults, declared once there


def cluster(
    settings: Settings,
    replicas: Annotated[int, typer.Option(help="Model-host replicas per model (fixed).")] = CLUSTER.replicas,
    min_replicas: Annotated[int, _autoscaling(help="Fewest replicas (with --max-replicas).")] = CLUSTER.min_replicas,
    max_replicas: Annotated[int | None, _autoscaling(help="Most replicas; turns autoscaling on.")] = None,
    target_ongoing_requests: Annotated[
        float, _autoscaling(help="Requests per replica to aim at.")
    ] = CLUSTER.target_ongoing_requests,
    upscale_delay: Annotated[
        float, _autoscaling(help="Seconds over target before adding a replica.")
    ] = CLUSTER.upscale_delay_s,
    downscale_delay: Annotated[
        float, _autoscaling(help="Seconds under target before removing one.")
    ] = CLUSTER.downscale_delay_s,
    threads: Annotated[int, typer.Option(help="llama.cpp threads per replica.")] = CLUSTER.threads,
    drain_seconds: Annotated[
        float, typer.Option(help="On stop, replicas finish requests for this long.")
    ] = CLUSTER.drain_seconds,
    stream_interval_ms: Annotated[
        float,
        typer.Option(help="Most ms a model host holds tokens before it sends them (0: at every step; longer: faster)."),
    ] = CLUSTER.stream_interval_ms,
    gateways: Annotated[
        int, typer.Option(help="Gateway replicas (with --ray-proxy); share state with --store-url.")
    ] = CLUSTER.gateways,
    direct_ingress: Annotated[
        bool,
        typer.Option(
            "--direct-ingress/--ray-proxy",
            help="Ray Serve's throughput-optimized mode: the gateway serves --port itself, hosts over gRPC. Or every"
            " request through Ray's proxy actor: slower, the mode of Ray's own config files.",
        ),
    ] = True,
) -> None:
    """Serve on a local Ray Serve cluster: a gateway, N model-host replicas per model (extra slmserve\\[cluster])."""
    try:
        from slmserve.cluster.run import run_cluster
        from slmserve.cluster.startup import ClusterFailed
    except ImportError as exc:
        typer.echo(f"Error: the cluster needs Ray Serve: pip install 'slmserve[cluster]' ({exc})", err=True)
        raise typer.Exit(1) from exc
    setup_logging(settings)
    options = checked(
        functools.partial(
            ClusterOptions,
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_ongoing_requests=target_ongoing_requests,
            upscale_delay_s=upscale_delay,
            downscale_delay_s=downscale_delay,
            threads=threads,
            drain_seconds=drain_seconds,
            stream_interval_ms=stream_interval_ms,
            gateways=gateways,
        )
    )
    checked(settings.per_model)
    try:
        checked(functools.partial(run_cluster, settings, options, direct_ingress=direct_ingress))
    except ClusterFailed as exc:  # the port taken, a deployment failed: its cause in a line or two, no traceback
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
