"""The model-host deployment: one replica owns one model's weights and one engine thread.

The gateway reaches it through a DeploymentHandle (cluster/client.py); Ray Serve picks the replica with our
prefix-affinity router (cluster/router.py). A streamed call first yields the replica's name, then the engine's
outputs; cancelling the call (the client went away) aborts the request, so its slot frees by the next step.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
from ray import serve

from slmserve.engine.async_engine import AsyncEngine
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


async def gathered(outputs: AsyncIterator[RequestOutput], every: int) -> AsyncIterator[RequestOutput]:
    """A request's outputs joined `every` tokens into one, so fewer messages cross to the gateway (each costs
    both processes CPU the engine would use: measured, see ClusterOptions.stream_interval). The engine's first
    output (the request was taken) and first token go at once, so time to first token does not change; so does
    the last."""
    held: RequestOutput | None = None
    async for out in outputs:
        held = out if held is None else held.then(out)
        if held.finished or held.num_output_tokens <= 1 or len(held.token_ids) >= every:
            yield held
            held = None


class ModelHost:
    def __init__(self, settings: dict, stream_interval: int) -> None:
        self.settings = Settings(**settings)
        self.stream_interval = stream_interval
        self.model = load_model(self.settings)
        self.engine = AsyncEngine(self.model.engine)
        # "<deployment>#<id>": short, and unique among the deployment's replicas over its life.
        replica = serve.get_replica_context().replica_id
        self.name = f"{self.settings.model_name}#{replica.unique_id}"
        log.info("model host %s (pid %d) serves %s", self.name, os.getpid(), self.model.source)

    def info(self) -> dict:
        """What the gateway needs to serve this model without its weights."""
        return {
            "max_model_len": self.model.max_model_len,
            "weights": self.model.weights,
            "max_running": self.settings.max_running,
            "max_waiting": self.engine.max_waiting,
            "embed_len": self.engine.embed_len,
        }

    async def generate(self, req: HostRequest) -> AsyncIterator[str | RequestOutput]:
        yield self.name
        # Closed at once when Ray closes this generator (the caller went away), so the engine aborts the request.
        outputs = self.engine.generate(req.prompt_token_ids, req.params, req.request_id, req.adapter)
        async with contextlib.aclosing(outputs):
            async for out in gathered(outputs, self.stream_interval):
                yield out

    async def embed(self, token_lists: list[list[int]]) -> np.ndarray:
        return await self.engine.embed(token_lists)

    async def check_grammar(self, grammar: str) -> None:
        await self.engine.check_grammar(grammar)

    def check_health(self) -> None:
        """Ray calls this every few seconds; a replica whose engine thread died is replaced."""
        if not self.engine.alive:
            raise RuntimeError(f"the engine of {self.name} stopped")

    def __del__(self) -> None:
        # Ray Serve has drained in-flight requests (graceful_shutdown_timeout_s) before it gets here.
        self.engine.shutdown()
        self.model.close()
