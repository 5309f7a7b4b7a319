"""The x-slmserve-replica header: which engine replica(s) served a request.

A cluster's engine client learns the replica when the model host takes the request (its first message) and
calls `served_by`; this middleware, outermost, puts the names in the response's headers. A streamed response
starts only once the engine has taken the request (streams.primed), so the header is known by then. In one
process no engine client calls `served_by` and no header is added.
"""

from __future__ import annotations

from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-slmserve-replica"

# One list per HTTP request. Tasks spawned by the request (choices of n > 1) copy the context, so they share
# the list and each adds its replica to it.
_replicas: ContextVar[list[str] | None] = ContextVar("slmserve_replicas", default=None)


def served_by(replica: str) -> None:
    """Record that replica serves (part of) the current HTTP request; a no-op outside one."""
    names = _replicas.get()
    if names is not None and replica not in names:
        names.append(replica)


class ReplicaHeader:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names: list[str] = []
        token = _replicas.set(names)

        async def send_named(message: Message) -> None:
            if message["type"] == "http.response.start" and names:
                headers = [*message.get("headers", []), (HEADER, ",".join(names).encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_named)
        finally:
            _replicas.reset(token)
