"""The engine client of a cluster's gateway: a model-host deployment behind a Ray Serve DeploymentHandle.

Serving and the routes see the same EngineClient protocol as in one process; only this class knows Ray. Ray's
failures become ours here: a full queue (the host's engine, or Ray's own queue in front of the hosts) is
QueueFullError (429), a host that died under a request is EngineDeadError (503), and a host's own error (a bad
grammar, an input too long) is raised as itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import numpy as np
from ray import exceptions as ray_errors
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from slmserve.cluster.channel import ChannelRequest, GatewayChannels, Moved
from slmserve.cluster.host import HostRequest
from slmserve.engine.async_engine import EngineDeadError
from slmserve.engine.engine import RequestOutput
from slmserve.engine.loader import LoadedModel, load_vocab
from slmserve.engine.sampling import SamplingParams
from slmserve.engine.scheduler import QueueFullError
from slmserve.server.engine_client import EngineClient
from slmserve.server.middleware.replica import served_by
from slmserve.settings import Settings


@contextlib.contextmanager
def _as_ours() -> Iterator[None]:
    """Ray's exceptions as the ones serving answers with a status of its own."""
    try:
        yield
    except (ray_errors.RayError, BackPressureError, DeploymentUnavailableError) as exc:
        # A host's exception comes wrapped in RayTaskError; so, at times, does Ray's own backpressure.
        cause = exc.cause if isinstance(exc, ray_errors.RayTaskError) else exc
        if isinstance(cause, BackPressureError):
            raise QueueFullError(f"the model hosts' queue is full: {cause}") from exc
        if isinstance(exc, ray_errors.RayTaskError) and not isinstance(cause, ray_errors.RayError):
            raise cause from None  # the host raised it: a bad grammar, an input too long
        if isinstance(cause, (ray_errors.RayActorError, ray_errors.ActorUnavailableError, DeploymentUnavailableError)):
            raise EngineDeadError(f"the model host serving this request is gone: {type(cause).__name__}") from exc
        raise EngineDeadError(f"the model host failed: {cause}") from exc


class RayEngineClient:
    def __init__(self, handle: DeploymentHandle, info: dict, replicas: int) -> None:
        self._handle = handle
        self._stream = handle.options(stream=True)
        self._channels = GatewayChannels(self._channel)
        # This gateway's own count of its requests at the hosts: waiting until their first token, then running.
        self._running = self._waiting = 0
        # What the hosts can hold: each replica's engine (Ray sends it no more than that), and as many again as
        # one engine's waiting queue in Ray's queue in front of them. Past it, a 429 from here.
        self._max_waiting = replicas * (info["max_running"] + info["max_waiting"]) + info["max_waiting"]
        self._embed_len = info["embed_len"]

    @property
    def num_running(self) -> int:
        return self._running

    @property
    def num_waiting(self) -> int:
        return self._waiting

    @property
    def max_waiting(self) -> int:
        return self._max_waiting

    @property
    def room(self) -> int:
        return self._max_waiting - self._waiting

    @property
    def embed_len(self) -> int:
        return self._embed_len

    async def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        adapter: str | None = None,
    ) -> AsyncIterator[RequestOutput]:
        if self._waiting >= self._max_waiting:
            raise QueueFullError(f"{self._waiting} requests are already waiting")
        request = HostRequest(prompt_token_ids, params, request_id or uuid.uuid4().hex, adapter, self._channels.gateway)
        self._waiting += 1
        self._channels.register(request.request_id)
        running = finished = False
        response = None
        try:
            with _as_ours():
                response = self._stream.generate.remote(request)
                async for item in self._outputs(response, request.request_id):
                    if item.token_ids and not running:
                        running, self._waiting, self._running = True, self._waiting - 1, self._running + 1
                    finished = item.finished
                    yield item
        finally:
            self._channels.unregister(request.request_id)
            if running:
                self._running -= 1
            else:
                self._waiting -= 1
            if response is not None and not finished:
                # The host's generator is cancelled: its engine aborts the request. A call that Ray refused raises
                # its refusal again on cancel(), which would replace the 429 on its way out: nothing to cancel then.
                with contextlib.suppress(BackPressureError, ray_errors.RayError):
                    response.cancel()

    async def _outputs(self, response: DeploymentResponseGenerator, request_id: str) -> AsyncIterator[RequestOutput]:
        """A request's outputs from its own call, then, once the host moved it, from the replica's channel."""
        async for item in response:
            if isinstance(item, str):  # the host's first message: its name
                served_by(item)
                self._channels.want(item)
            elif isinstance(item, Moved):
                async for out in self._channels.follow(item, request_id):
                    yield out
                return
            else:
                yield item

    async def _channel(self, request: ChannelRequest) -> AsyncIterator[list]:
        response = self._stream.channel.remote(request)
        try:
            with _as_ours():
                async for batch in response:
                    yield batch
        finally:
            with contextlib.suppress(BackPressureError, ray_errors.RayError):
                response.cancel()

    async def embed(self, token_lists: list[list[int]]) -> np.ndarray:
        with _as_ours():
            return await self._handle.embed.remote(token_lists)

    async def check_grammar(self, grammar: str) -> int | None:
        with _as_ours():
            return await self._handle.check_grammar.remote(grammar)

    async def load_adapter(self, name: str, path: str) -> None:
        raise ValueError("the cluster does not serve LoRA adapters yet; run `slmserve serve --lora NAME=PATH`")

    async def unload_adapter(self, name: str) -> None:
        raise ValueError("the cluster does not serve LoRA adapters yet")

    def shutdown(self) -> None:
        """The channels closed; the model hosts belong to Ray Serve, which drains and stops them."""
        self._channels.close()


class HostConnector:
    """`connect` for create_app in a gateway: each model reaches its model-host deployment."""

    def __init__(self, hosts: dict[str, DeploymentHandle], replicas: int) -> None:
        self.hosts = hosts
        self.replicas = replicas

    async def __call__(self, settings: Settings) -> tuple[LoadedModel, EngineClient]:
        handle = self.hosts[settings.model_name]
        with _as_ours():
            info = await handle.info.remote()  # Ray holds the call until a replica is up
        model = await asyncio.to_thread(load_vocab, settings, info["max_model_len"], info["weights"])
        return model, RayEngineClient(handle, info, self.replicas)
