"""The cluster's Ray Serve application: a gateway deployment (the single process's FastAPI app, every route) and
one model-host deployment per model.

`build(settings, options)` makes it for `slmserve cluster`; `app_builder(args)` makes it from a Serve config
file (`serve run deploy/ray-serve.yaml`, KubeRay's RayService), whose `args` are Settings fields and
ClusterOptions fields by name.
"""

from __future__ import annotations

from dataclasses import fields

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.handle import DeploymentHandle

from slmserve.cluster.client import HostConnector
from slmserve.cluster.host import ModelHost
from slmserve.cluster.options import ClusterOptions
from slmserve.cluster.router import PrefixAffinityRouter
from slmserve.settings import Settings


@serve.ingress()
class Gateway:
    """The FastAPI app of one process, its engines replaced by clients of the model-host deployments."""

    def __init__(self, settings: dict, hosts: dict[str, DeploymentHandle], replicas: int) -> None:
        self._settings = Settings(**settings)
        self._connect = HostConnector(hosts, replicas)

    def __serve_build_asgi_app__(self):
        from slmserve.server.app import create_app

        return create_app(self._settings, connect=self._connect)


def _host(settings: Settings, options: ClusterOptions):
    """One model's host deployment, bound to its settings."""
    settings = settings.model_copy(update={"n_threads": options.threads})
    ongoing = options.max_ongoing_requests or settings.max_running + settings.max_waiting
    deployment = serve.deployment(
        ModelHost,
        name=f"host-{settings.model_name}",
        ray_actor_options={"num_cpus": options.threads},
        # One more place for the gateway's channel call (cluster/channel.py), which holds no engine slot.
        max_ongoing_requests=ongoing + 1,
        # Ray's queue in a gateway holds requests only until its router has picked a replica; a burst can fill it
        # faster than the router (on the gateway's event loop) drains it, so it may hold what all replicas can.
        # The gateway refuses first, at what the hosts hold (cluster/client.py): that is the 429 a client sees.
        max_queued_requests=options.most_replicas * ongoing,
        graceful_shutdown_timeout_s=options.drain_seconds,
        health_check_period_s=5,
        health_check_timeout_s=30,
        request_router_config=RequestRouterConfig(request_router_class=PrefixAffinityRouter),
        **options.scaling(),
    )
    return deployment.bind(settings.model_dump(), options.stream_interval_ms / 1000)


def build(settings: Settings, options: ClusterOptions):
    """The application: a gateway in front of one host deployment per model. ValueError for a bad model list."""
    models = settings.per_model()
    hosts = {m.model_name: _host(m, options) for m in models}
    gateway = serve.deployment(
        Gateway,
        name="gateway",
        ray_actor_options={"num_cpus": 0},  # it waits on hosts; its CPU share is tokenizing and JSON
        max_ongoing_requests=10_000,
        graceful_shutdown_timeout_s=options.drain_seconds,
        num_replicas=options.gateways,
    )
    return gateway.bind(settings.model_dump(), hosts, options.most_replicas)


def app_builder(args: dict):
    """For Serve config files: `import_path: slmserve.cluster.app:app_builder`, `args` naming Settings fields
    (model, max_running, ...) and ClusterOptions fields (replicas, threads, ...)."""
    option_names = {f.name for f in fields(ClusterOptions)}
    options = ClusterOptions(**{k: v for k, v in args.items() if k in option_names})
    return build(Settings(**{k: v for k, v in args.items() if k not in option_names}), options)
