"""A request body is held to --max-body-bytes before it is read: a Content-Length over the limit is refused without
calling the route, and a chunked body is counted as it arrives and refused at the first chunk past the limit. The
per-field bounds (messages, stop strings, logit_bias, ...) are checked as the body is validated (protocol/limits.py).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slmserve.server import errors


class BodyLimit:
    """413, in the route's own error shape, for a request body over max_bytes; never reads past the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            response = errors.respond(Request(scope), errors.body_too_large(self.max_bytes, declared))
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes an HTTPException raised while it reads the body on to the app's handler for
                    # HTTPException, which answers in the route's shape.
                    raise HTTPException(413, errors.body_too_large(self.max_bytes).message)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:  # the HTTP server refuses a malformed length before the app is called
        return None
