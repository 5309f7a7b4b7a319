"""While the server drains (shutdown.py), new requests get 503 with Retry-After in their route's shape; /health
answers `draining` itself. Counts the requests in flight, which the drain waits for."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from slmserve.server import errors
from slmserve.server.shutdown import Drain


class DrainGate:
    """The middleware: counts requests in flight; while draining, refuses new ones (but /health) with 503."""

    def __init__(self, app: ASGIApp, drain: Drain, retry_after: int) -> None:
        self.app, self.drain, self.retry_after = app, drain, retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") == "/health":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            refusal = errors.APIError(
                503,
                "The server is shutting down; retry on another instance or shortly.",
                code="draining",
                headers={"Retry-After": str(max(1, self.retry_after))},
            )
            await errors.respond(Request(scope), refusal)(scope, receive, send)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1
