"""API keys and the requests-a-minute limit: one ASGI middleware in front of every route, not a check in each.

With keys configured, every route but a few public ones needs `Authorization: Bearer KEY` or `x-api-key: KEY`;
the key is compared in constant time and only its name travels on (to logs and limits), never the key. Rate
limits (rate_limits.py) are per key, per client address when no keys are set; the tokens-a-minute bucket is
taken by serving when it admits a request.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slmserve.server import errors
from slmserve.server.middleware.record import current_record
from slmserve.server.rate_limits import Client, Limiter, current_client
from slmserve.settings import Settings

# What anyone may reach: the health checks, the pages and the API's own description. Everything else (the model,
# state changes, /info, /v1/models) needs a key: a route added later is closed until it is listed here.
PUBLIC = {"/health", "/", "/ui", "/ui/dashboard", "/favicon.ico", "/docs", "/redoc", "/openapi.json"}
PUBLIC_PREFIXES = ("/ui/static/",)


def load_keys(settings: Settings) -> dict[str, str]:
    """Key -> name from --api-keys and --api-keys-file (KEY or NAME:KEY a line; blank lines and # comments are
    skipped). A key given without a name is named by a short hash of it. ValueError on an unreadable file."""
    entries = list(settings.api_keys)
    if settings.api_keys_file:
        try:
            text = Path(settings.api_keys_file).read_text()
        except OSError as exc:
            raise ValueError(f"--api-keys-file {settings.api_keys_file}: {exc.strerror}") from exc
        entries += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not entries:
            raise ValueError(f"--api-keys-file {settings.api_keys_file} holds no key")
    keys: dict[str, str] = {}
    for entry in entries:
        name, sep, key = entry.partition(":")
        if not sep:
            name, key = "", entry
        if not key:
            raise ValueError(f"an API key entry named {name!r} has no key")
        keys[key] = name or "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return keys


class Auth:
    """The middleware. Without keys or limits it passes every request through untouched."""

    def __init__(self, app: ASGIApp, settings: Settings, keys: dict[str, str]) -> None:
        self.app = app
        self.keys = [(k.encode(), name) for k, name in keys.items()]
        self.rpm, self.tpm = settings.rate_limit_rpm, settings.rate_limit_tpm
        self.public = PUBLIC | ({"/metrics"} if settings.metrics_public or not keys else set())
        self.limiter = Limiter()
        if settings.store_url and (self.rpm or self.tpm):  # buckets every server using the store shares
            from slmserve.server.redis_store import RedisLimiter

            self.limiter = RedisLimiter(settings.store_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.public or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = _presented(request)
        name = self._name(given)
        if self.keys and name is None:
            await self._refuse(request, scope, receive, send, _unauthorized(sent=given is not None))
            return
        client = self._client_for(name or (request.client.host if request.client else "unknown"))
        record = current_record()
        if record is not None and self.keys:
            record.key = name
        if client is None:
            await self.app(scope, receive, send)
            return
        wait = await client.take("requests", 1) if client.rpm else 0.0
        if wait:
            refusal = errors.rate_limited("requests", client.rpm, wait)
            await self._refuse(request, scope, receive, send, refusal, client)
            return

        async def send_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *client.headers()]}
            await send(message)

        token = current_client.set(client)
        try:
            await self.app(scope, receive, send_limits)
        finally:
            current_client.reset(token)

    def _name(self, given: str | None) -> str | None:
        """The name of the key given, None for no key or one that is not ours."""
        if not given:
            return None
        given_bytes = given.encode()
        found = None
        for key, name in self.keys:  # every key compared, in constant time: no timing tells which one is near
            if hmac.compare_digest(key, given_bytes):
                found = name
        return found

    def _client_for(self, name: str) -> Client | None:
        if self.rpm is None and self.tpm is None:
            return None
        return Client(name, self.limiter, self.rpm, self.tpm)

    @staticmethod
    async def _refuse(
        request: Request,
        scope: Scope,
        receive: Receive,
        send: Send,
        refusal: errors.APIError,
        client: Client | None = None,
    ) -> None:
        response = errors.respond(request, refusal)
        if client is not None:
            response.raw_headers.extend(client.headers())
        await response(scope, receive, send)


def _presented(request: Request) -> str | None:
    """The key a request sends: its x-api-key header, else its Bearer token; None when it sends neither."""
    given = request.headers.get("x-api-key")
    scheme, space, credentials = request.headers.get("authorization", "").partition(" ")
    if given is None and scheme.lower() == "bearer" and space:
        given = credentials.strip()
    return given


def _unauthorized(sent: bool) -> errors.APIError:
    message = (
        "Incorrect API key provided."
        if sent
        else "Missing API key: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'."
    )
    return errors.APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
