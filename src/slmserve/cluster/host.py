"""The model-host deployment: one replica owns one model's weights and one engine thread.

The gateway reaches it through a DeploymentHandle (cluster/client.py); Ray Serve picks the replica with our
prefix-affinity router (cluster/router.py). A streamed call first yields the replica's name, then the engine's
outputs, or, once the gateway has a channel open here, Moved: its outputs then go on the channel (cluster/
channel.py). Cancelling the call (the client went away) aborts the request, so its slot frees by the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np
from ray import serve

from slmserve.cluster.channel import ChannelRequest, Failed, Mailbox, Moved, urgent
from slmserve.engine.async_engine import AsyncEngine, EngineDeadError
from slmserve.engine.engine import RequestOutput
from slmserve.engine.loader import load_model
from slmserve.engine.sampling import SamplingParams
from slmserve.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class HostRequest:
    """One generate call's arguments, in one object the router can read the prompt from."""

    prompt_token_ids: list[int]
    params: SamplingParams
    request_id: str
    adapter: str | None = None
    gateway: str = ""  # the calling gateway's channels (cluster/channel.py), if it has any


async def gathered(
    outputs: AsyncIterator[RequestOutput], interval: float, stop: Callable[[], bool] = lambda: False
) -> AsyncIterator[RequestOutput]:
    """A request's outputs joined for `interval` seconds into one, so fewer messages cross to the gateway. The
    first output (the request was taken), the first token and the last go at once, so time to first token does
    not change. Once the first token is sent, ends early after a message when stop() (the request's outputs move
    to a channel): the first token takes the shortest way, this call, even when a channel is open."""
    loop = asyncio.get_running_loop()
    held: RequestOutput | None = None
    last = 0.0
    async for out in outputs:
        held = out if held is None else held.then(out)
        if urgent(held) or loop.time() - last >= interval:
            yield held
            tokens, held, last = held.num_output_tokens, None, loop.time()
            if tokens >= 1 and stop():
                return
    if held is not None:
        yield held


class ModelHost:
    def __init__(self, settings: dict, stream_interval: float) -> None:
        self.settings = Settings(**settings)
        self.model = load_model(self.settings)
        # "<deployment>#<id>": short, and unique among the deployment's replicas over its life.
        replica = serve.get_replica_context().replica_id
        self._start(AsyncEngine(self.model.engine), f"{self.settings.model_name}#{replica.unique_id}", stream_interval)
        log.info("model host %s (pid %d) serves %s", self.name, os.getpid(), self.model.source)

    def _start(self, engine: AsyncEngine, name: str, stream_interval: float) -> None:
        """What the calls below use; apart from __init__ so that tests can run a host on a fake engine."""
        self.engine, self.name, self.stream_interval = engine, name, stream_interval
        self._mailboxes: dict[str, Mailbox] = {}  # gateway -> its open channel's

    def info(self) -> dict:
        """What the gateway needs to serve this model without its weights."""
        return {
            "max_model_len": self.model.max_model_len,
            "weights": self.model.weights,
            "max_running": self.settings.max_running,
            "max_waiting": self.engine.max_waiting,
            "embed_len": self.engine.embed_len,
        }

    async def generate(self, req: HostRequest) -> AsyncIterator[str | RequestOutput | Moved]:
        yield self.name
        # Closed at once when Ray closes this generator (the caller went away), so the engine aborts the request.
        outputs = self.engine.generate(req.prompt_token_ids, req.params, req.request_id, req.adapter)
        async with contextlib.aclosing(outputs):
            finished = False
            async for out in gathered(outputs, self.stream_interval, lambda: req.gateway in self._mailboxes):
                finished = out.finished
                yield out
            box = self._mailboxes.get(req.gateway)
            if finished or box is None:
                return
            box.requests += 1  # before the yield: the channel must not close as idle meanwhile
            try:
                yield Moved(box.channel)
                await self._send_on(box, outputs, req.request_id)
            finally:
                box.requests -= 1

    @staticmethod
    async def _send_on(box: Mailbox, outputs: AsyncIterator[RequestOutput], request_id: str) -> None:
        """A moved request's outputs onto its channel, and its end, whatever it is: the gateway waits for it."""
        ended = False
        try:
            async for out in outputs:
                if box.closed:
                    raise EngineDeadError("the gateway's channel closed")  # it fails the request itself
                box.put(out)
                ended = out.finished
        except Exception as exc:
            box.put(Failed(request_id, exc))
            ended = True
        finally:
            if not ended:  # cancelled: by the gateway (then it ignores this), or by Ray
                box.put(Failed(request_id, EngineDeadError("the model host cancelled the request")))

    async def channel(self, req: ChannelRequest) -> AsyncIterator[list[RequestOutput | Failed]]:
        """The gateway's channel: an empty list once open, then each step's outputs of its moved requests."""
        if req.replica != self.name:  # Ray routed it elsewhere: the gateway will try again later
            raise EngineDeadError(f"a channel for {req.replica} reached {self.name}")
        box = Mailbox(req.channel, self.stream_interval)
        if (old := self._mailboxes.get(req.gateway)) is not None:
            old.close()
        self._mailboxes[req.gateway] = box
        try:
            yield []
            async for batch in box.batches():
                yield batch
        finally:
            box.close()
            if self._mailboxes.get(req.gateway) is box:
                del self._mailboxes[req.gateway]

    async def embed(self, token_lists: list[list[int]]) -> np.ndarray:
        return await self.engine.embed(token_lists)

    async def check_grammar(self, grammar: str) -> int | None:
        return await self.engine.check_grammar(grammar)

    def check_health(self) -> None:
        """Ray calls this every few seconds; a replica whose engine thread died is replaced."""
        if not self.engine.alive:
            raise RuntimeError(f"the engine of {self.name} stopped")

    def __del__(self) -> None:
        # Ray Serve has drained in-flight requests (graceful_shutdown_timeout_s) before it gets here.
        self.engine.shutdown()
        self.model.close()
