"""The cluster's Ray Serve application: a gateway deployment (the single process's FastAPI app, every route) and
one model-host deployment per model.

`build(settings, options)` makes it for `slmserve cluster`; `app_builder(args)` makes it from a Serve config
file (`serve run deploy/ray-serve.yaml`, KubeRay's RayService), whose `args` are Settings fields and
ClusterOptions fields by name.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.handle import DeploymentHandle

from slmserve.cluster.client import HostConnector
from slmserve.cluster.host import ModelHost
from slmserve.cluster.router import PrefixAffinityRouter
from slmserve.settings import Settings


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
