"""API keys and per-key rate limits: one ASGI middleware in front of every route, not a check in each.

With keys configured, every route but a few public ones needs `Authorization: Bearer KEY` or `x-api-key: KEY`;
the key is compared in constant time and only its name travels on (to logs and limits), never the key.
Rate limits are token buckets per key (per client address when no keys are set): one of requests a minute,
taken here, and one of tokens a minute, taken by serving when it admits a request (prompt + max_tokens) and
settled when the request ends. Each response carries OpenAI's x-ratelimit-* headers.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slmserve.server import errors
from slmserve.server.request_context import current_record
from slmserve.settings import Settings

# What anyone may reach: the health checks, the pages and the API's own description. Everything else (the model,
# state changes, /info, /v1/models) needs a key: a route added later is closed until it is listed here.
PUBLIC = {"/health", "/", "/ui", "/ui/dashboard", "/favicon.ico", "/docs", "/redoc", "/openapi.json"}
PUBLIC_PREFIXES = ("/ui/static/",)

# Buckets of client addresses are dropped once full (idle) when there are more than this many.
MAX_CLIENTS = 10_000


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


@dataclass
class Bucket:
    """A token bucket: `capacity` at most, refilled at capacity per minute."""

    capacity: float
    level: float = field(init=False)
    stamp: float = field(default_factory=lambda: time.monotonic())

    def __post_init__(self) -> None:
        self.level = self.capacity

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / 60)
        self.stamp = now

    def take(self, amount: float) -> float:
        """Take amount; 0.0 when taken, else the seconds until it could be (nothing taken)."""
        self._refill()
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) * 60 / self.capacity

    def give(self, amount: float) -> None:
        """Give back what a request reserved and did not use."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    def remaining(self) -> int:
        self._refill()
        return max(0, math.floor(self.level))

    def reset_seconds(self) -> float:
        """Seconds until the bucket is full again."""
        self._refill()
        return (self.capacity - self.level) * 60 / self.capacity

    @property
    def full(self) -> bool:
        self._refill()
        return self.level >= self.capacity


@dataclass
class Client:
    """One key's (or address's) limits."""

    name: str
    requests: Bucket | None
    tokens: Bucket | None

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-* headers for the limits that are set."""
        out = []
        for kind, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                out += [
                    (f"x-ratelimit-limit-{kind}".encode(), str(int(bucket.capacity)).encode()),
                    (f"x-ratelimit-remaining-{kind}".encode(), str(bucket.remaining()).encode()),
                    (f"x-ratelimit-reset-{kind}".encode(), _duration(bucket.reset_seconds()).encode()),
                ]
        return out


class Reservation:
    """Tokens a request took at admission; `settle` gives back what it did not use."""

    def __init__(self, client: Client | None, amount: int) -> None:
        self.client, self.amount = client, amount

    def settle(self, used: int) -> None:
        if self.client is not None and self.client.tokens is not None and used < self.amount:
            self.client.tokens.give(self.amount - used)
        self.amount = min(self.amount, used)


_client: ContextVar[Client | None] = ContextVar("slmserve_client", default=None)


def reserve_tokens(amount: int) -> Reservation:
    """Take amount tokens from the current client's tokens-a-minute bucket: 429 with Retry-After when it holds
    too few now, 400 when the request alone is larger than the limit (a retry could never succeed)."""
    client = _client.get()
    bucket = client.tokens if client else None
    if bucket is None:
        return Reservation(None, amount)
    if amount > bucket.capacity:
        raise errors.APIError(
            400,
            f"This request needs {amount} tokens (prompt plus max_tokens); this API key may use "
            f"{int(bucket.capacity)} tokens a minute. Lower max_tokens or shorten the prompt.",
            param="max_tokens",
            code="rate_limit_exceeded",
        )
    wait = bucket.take(amount)
    if wait:
        raise errors.rate_limited("tokens", int(bucket.capacity), wait)
    return Reservation(client, amount)


class Auth:
    """The middleware. Without keys or limits it passes every request through untouched."""

    def __init__(self, app: ASGIApp, settings: Settings, keys: dict[str, str]) -> None:
        self.app = app
        self.keys = [(k.encode(), name) for k, name in keys.items()]
        self.rpm, self.tpm = settings.rate_limit_rpm, settings.rate_limit_tpm
        self.public = PUBLIC | ({"/metrics"} if settings.metrics_public or not keys else set())
        self.clients: dict[str, Client] = {}

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
        wait = client.requests.take(1) if client.requests else 0.0
        if wait:
            refusal = errors.rate_limited("requests", int(client.requests.capacity), wait)
            await self._refuse(request, scope, receive, send, refusal, client)
            return

        async def send_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *client.headers()]}
            await send(message)

        token = _client.set(client)
        try:
            await self.app(scope, receive, send_limits)
        finally:
            _client.reset(token)

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
        client = self.clients.get(name)
        if client is None:
            if len(self.clients) >= MAX_CLIENTS:
                self.clients = {n: c for n, c in self.clients.items() if not _idle(c)}
            client = self.clients[name] = Client(
                name, Bucket(self.rpm) if self.rpm else None, Bucket(self.tpm) if self.tpm else None
            )
        return client

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


def _idle(client: Client) -> bool:
    return all(b is None or b.full for b in (client.requests, client.tokens))


def _duration(seconds: float) -> str:
    """OpenAI's reset format: 1s, 6m0s, 1m30.5s."""
    seconds = max(0.0, seconds)
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3g}s" if rest < 10 else f"{round(rest, 1):g}s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text
