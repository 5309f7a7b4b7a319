"""Each HTTP request's own record: its id, deadline, API key name and token counts; and the log line it ends with.

The outermost middleware makes the record (the id from X-Request-ID, or a new one, echoed in the response), reads
the deadline (--request-timeout, or a shorter x-request-timeout header) and, with --log-format json, logs one line
per request when it ends. Inner layers fill the record in: auth the key's name, serving the tokens, and serving
aborts the engine's work once the deadline has passed.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slmserve.server import errors

log = logging.getLogger("slmserve.access")

TIMEOUT_HEADER = "x-request-timeout"
# A client's request id is echoed into headers and logs: printable ASCII, bounded.
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


@dataclass
class Record:
    id: str
    started: float = field(default_factory=time.monotonic)
    timeout: float | None = None  # seconds from `started` after which the request is aborted
    key: str | None = None  # the API key's name, never the key
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def remaining(self) -> float | None:
        """Seconds left before the deadline (negative past it); None without one."""
        return None if self.timeout is None else self.started + self.timeout - time.monotonic()


_record: ContextVar[Record | None] = ContextVar("slmserve_request", default=None)


def current_record() -> Record | None:
    """The record of the HTTP request being served; None outside one."""
    return _record.get()


class RequestContext:
    def __init__(self, app: ASGIApp, request_timeout: float | None, json_logs: bool) -> None:
        self.app, self.request_timeout, self.json_logs = app, request_timeout, json_logs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.headers.get("x-request-id", "")
        record = Record(given if _REQUEST_ID.match(given) else uuid.uuid4().hex)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", record.id.encode())]}
            await send(message)

        token = _record.set(record)
        try:
            try:
                record.timeout = self._timeout(request.headers.get(TIMEOUT_HEADER))
            except errors.APIError as exc:
                await errors.respond(request, exc)(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        finally:
            _record.reset(token)
            if self.json_logs:
                log.info(
                    "%s %s %d",
                    scope.get("method"),
                    scope.get("path"),
                    status,
                    extra={
                        "request": {
                            "id": record.id,
                            "method": scope.get("method"),
                            "route": scope.get("path"),
                            "status": status,
                            "prompt_tokens": record.prompt_tokens,
                            "completion_tokens": record.completion_tokens,
                            "latency_ms": round((time.monotonic() - record.started) * 1000, 1),
                            "key": record.key,
                            "client": scope["client"][0] if scope.get("client") else None,
                        }
                    },
                )

    def _timeout(self, header: str | None) -> float | None:
        """The request's timeout: the header's when given (never above the server's), else the server's."""
        if header is None:
            return self.request_timeout
        try:
            asked = float(header)
        except ValueError:
            asked = math.nan
        if not (asked > 0 and math.isfinite(asked)):
            raise errors.APIError(400, f"{TIMEOUT_HEADER} must be a positive number of seconds", param=TIMEOUT_HEADER)
        return min(asked, self.request_timeout) if self.request_timeout else asked
