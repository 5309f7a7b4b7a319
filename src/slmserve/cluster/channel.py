"""One stream from a model-host replica to a gateway that carries the outputs of all that gateway's requests there.

Every message a model host sends the gateway costs both processes CPU the engines would use: on 2 cores, 32
streams of one message per request per 4 tokens cost the cluster 5-15% of the single process's tokens/s, and
without those messages the loss was gone (docs/notes/2026-11-25-cluster-hop.md). So once a gateway has a channel
open to a replica, the replica moves its requests' outputs onto it: one message carries what all of them made since the
last: after an interval (the cluster's --stream-interval-ms), or at once when one of them ends, never more
than once an engine step. Each request's tokens are joined into one output, so one SSE chunk reaches its user.

A request's own call (ModelHost.generate) still carries its first messages up to its first token, and stays
open until the request ends: Ray routes and counts it, and cancelling it aborts the request. When the host
moves a request it says so on that call (Moved) and sends every later output, and its end (the last output, or
Failed), on the channel.
A channel ends when it has had no request for IDLE_SECONDS (so a draining replica is not held open by it), or
with its replica; the gateway then fails the requests that had moved to it, and opens another when needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

from slmserve.engine.async_engine import EngineDeadError
from slmserve.engine.engine import RequestOutput

log = logging.getLogger(__name__)

IDLE_SECONDS = 2.0
OPEN_TIMEOUT_SECONDS = 30.0  # the target replica is gone if Ray has not reached it by then
RETRY_SECONDS = 5.0  # after a channel that failed to open, requests to that replica use their own calls this long


@dataclass(frozen=True)
class ChannelRequest:
    """A gateway's call for a channel: the router sends it to `replica` (the name the host gave)."""

    replica: str
    gateway: str
    channel: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class Moved:
    """On a request's own call: its later outputs come on this channel."""

    channel: str


@dataclass(frozen=True)
class Failed:
    """On a channel: the request ended without its last output (its engine failed, or Ray cancelled it)."""

    request_id: str
    error: Exception


def urgent(out: RequestOutput) -> bool:
    """The request was taken, its first token, its end: sent at once, so time to first token does not change."""
    return out.finished or out.num_output_tokens <= 1


class Mailbox:
    """Host side: what waits to go on one gateway's channel, sent once per `interval` seconds at most unless
    urgent. Outputs of one engine step arrive together (AsyncEngine hands them over in one callback) and go in
    one message."""

    def __init__(self, channel: str, interval: float, idle: float = IDLE_SECONDS) -> None:
        self.channel = channel
        self.interval = interval
        self.idle = idle
        self.requests = 0  # moved here and not yet ended
        self.closed = False
        # A request's outputs held together joined into one: fewer chunks for the gateway to encode and send.
        self._pending: dict[str, RequestOutput | Failed] = {}
        self._urgent = False
        self._ready = asyncio.Event()

    def put(self, item: RequestOutput | Failed) -> None:
        held = self._pending.get(item.request_id)
        if isinstance(held, RequestOutput) and isinstance(item, RequestOutput):
            item = held.then(item)
        self._pending[item.request_id] = item  # a Failed replaces what was held: its request is over
        self._urgent = self._urgent or isinstance(item, Failed) or urgent(item)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def batches(self) -> AsyncIterator[list[RequestOutput | Failed]]:
        """Lists of outputs until closed, or idle with no request."""
        loop = asyncio.get_running_loop()
        last = 0.0
        while not self.closed:
            wait = max(0.0, last + self.interval - loop.time()) if self._pending else self.idle
            try:
                # Not asyncio.wait_for: on Python 3.11 it returns the result when a cancel (Ray closing this
                # channel) meets an event just set, and the channel would run on after its call was cancelled.
                async with asyncio.timeout(wait):
                    await self._ready.wait()
            except TimeoutError:
                if not self._pending:
                    if self.requests == 0:
                        return
                    continue
            else:
                self._ready.clear()
                await asyncio.sleep(0)  # the rest of this step's outputs, woken by the same callback
            # Not urgent and too soon: held for later outputs, or till the interval is up.
            if self._pending and (self._urgent or loop.time() - last >= self.interval):
                batch, self._pending, self._urgent = list(self._pending.values()), {}, False
                last = loop.time()
                yield batch


class GatewayChannels:
    """Gateway side: the open channels of one engine client, one per replica, and the queues of its requests.

    `open(request)` makes the channel call (a Ray streaming call routed to request.replica); its first message is
    an empty list, sent when the host has its mailbox ready.
    """

    def __init__(self, open: Callable[[ChannelRequest], AsyncGenerator[list, None]]) -> None:
        self.gateway = uuid.uuid4().hex
        self._open = open
        self._queues: dict[str, asyncio.Queue] = {}  # request id -> its outputs from channels
        self._moved: dict[str, set[str]] = {}  # channel id -> the requests moved to it
        self._by_replica: dict[str, asyncio.Task] = {}
        self._failed: dict[str, float] = {}  # replica -> when a channel to it last failed to open

    def register(self, request_id: str) -> None:
        self._queues[request_id] = asyncio.Queue()

    def unregister(self, request_id: str) -> None:
        self._queues.pop(request_id, None)

    def want(self, replica: str) -> None:
        """A request went to `replica`: open a channel there unless one is open or recently failed to open."""
        if replica in self._by_replica or time.monotonic() - self._failed.get(replica, -RETRY_SECONDS) < RETRY_SECONDS:
            return
        # A context of its own: made in a request's, the call would be Ray's child of that HTTP request, and
        # cancelled with it when its client goes away.
        task = asyncio.get_running_loop().create_task(self._pump(replica), context=contextvars.Context())
        self._by_replica[replica] = task

    async def follow(self, moved: Moved, request_id: str) -> AsyncIterator[RequestOutput]:
        """The outputs of a request the host moved, until its last."""
        requests = self._moved.get(moved.channel)
        if requests is None:
            raise EngineDeadError("the channel from the model host closed before this request's outputs came")
        requests.add(request_id)
        queue = self._queues[request_id]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Failed):
                    raise item.error
                yield item
                if item.finished:
                    return
        finally:
            requests.discard(request_id)

    async def _pump(self, replica: str) -> None:
        request = ChannelRequest(replica, self.gateway)
        # Known before the channel is open: the host may move a request, and its Moved reach here, before the
        # channel's first message does.
        moved = self._moved[request.channel] = set()
        opened = False
        error: BaseException | None = None
        stream = self._open(request)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
                await anext(stream)
            opened = True
            async for batch in stream:
                for item in batch:
                    queue = self._queues.get(item.request_id)
                    if queue is not None:  # else its client went away
                        queue.put_nowait(item)
        except asyncio.CancelledError:
            error = EngineDeadError("the gateway is stopping")
            raise
        except Exception as exc:
            error = exc
            if not opened:
                self._failed[replica] = time.monotonic()
            log.warning("channel to model host %s ended: %r", replica, exc)
        finally:
            del self._moved[request.channel]
            if self._by_replica.get(replica) is asyncio.current_task():
                del self._by_replica[replica]
            lost = EngineDeadError(f"the channel from model host {replica} closed: {error!r}")
            for request_id in moved:
                if (queue := self._queues.get(request_id)) is not None:
                    queue.put_nowait(Failed(request_id, lost))
            with contextlib.suppress(Exception):
                await stream.aclose()

    def close(self) -> None:
        for task in list(self._by_replica.values()):
            task.cancel()
