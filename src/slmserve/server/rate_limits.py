"""Per-key rate limits: token buckets of requests a minute and tokens a minute.

The requests bucket is taken by the Auth middleware; the tokens bucket by serving when it admits a request
(prompt + max_tokens), settled when the request ends. Buckets live in this process (`Limiter`), or in Redis
(`RedisLimiter`, with --store-url) so that every server using it, a cluster's gateway replicas, shares one bucket a
key. Each response carries OpenAI's x-ratelimit-* headers, from the buckets' levels as last seen.
"""

from __future__ import annotations

import logging
import math
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from slmserve.server import errors

log = logging.getLogger(__name__)

# Buckets of clients are dropped once full (idle) when there are more than this many.
MAX_BUCKETS = 20_000


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


class Limiter:
    """The buckets of this process, by key ("NAME:requests", "NAME:tokens")."""

    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}

    def _bucket(self, key: str, capacity: float) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self.buckets = {k: b for k, b in self.buckets.items() if not b.full}
            bucket = self.buckets[key] = Bucket(capacity)
        return bucket

    async def take(self, key: str, capacity: float, amount: float) -> tuple[float, float]:
        """(seconds to wait, 0.0 when taken; the bucket's level after)."""
        bucket = self._bucket(key, capacity)
        return bucket.take(amount), bucket.level

    async def give(self, key: str, capacity: float, amount: float) -> float:
        """The level after giving amount back."""
        bucket = self._bucket(key, capacity)
        bucket.give(amount)
        return bucket.level

    def peek(self, key: str, capacity: float) -> float:
        """A bucket's level now, for the headers of a request that did not take from it (full if none yet)."""
        bucket = self.buckets.get(key)
        return min(capacity, bucket.remaining()) if bucket is not None else capacity

    async def close(self) -> None:
        pass


@dataclass
class Client:
    """One key's (or address's) limits, and its buckets' levels as last seen (for the headers)."""

    name: str
    limiter: Limiter
    rpm: int | None
    tpm: int | None
    levels: dict[str, float] = field(default_factory=dict)

    def capacity(self, kind: str) -> int | None:
        return self.rpm if kind == "requests" else self.tpm

    async def take(self, kind: str, amount: float) -> float:
        """Take from the requests or tokens bucket; the seconds to wait when it holds too few (nothing taken)."""
        capacity = self.capacity(kind)
        wait, self.levels[kind] = await self.limiter.take(f"{self.name}:{kind}", capacity, amount)
        return wait

    async def give(self, kind: str, amount: float) -> None:
        self.levels[kind] = await self.limiter.give(f"{self.name}:{kind}", self.capacity(kind), amount)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-* headers for the limits that are set."""
        out = []
        for kind in ("requests", "tokens"):
            capacity = self.capacity(kind)
            if capacity is None:
                continue
            level = self.levels.get(kind)
            level = self.limiter.peek(f"{self.name}:{kind}", capacity) if level is None else level
            out += [
                (f"x-ratelimit-limit-{kind}".encode(), str(int(capacity)).encode()),
                (f"x-ratelimit-remaining-{kind}".encode(), str(max(0, math.floor(level))).encode()),
                (f"x-ratelimit-reset-{kind}".encode(), _duration((capacity - level) * 60 / capacity).encode()),
            ]
        return out


class Reservation:
    """Tokens a request took at admission; `settle` gives back what it did not use."""

    def __init__(self, client: Client | None, amount: int) -> None:
        self.client, self.amount = client, amount

    async def settle(self, used: int) -> None:
        if self.client is not None and self.client.tpm is not None and used < self.amount:
            await self.client.give("tokens", self.amount - used)
        self.amount = min(self.amount, used)


current_client: ContextVar[Client | None] = ContextVar("slmserve_client", default=None)


async def reserve_tokens(amount: int) -> Reservation:
    """Take amount tokens from the current client's tokens-a-minute bucket: 429 with Retry-After when it holds
    too few now, 400 when the request alone is larger than the limit (a retry could never succeed)."""
    client = current_client.get()
    if client is None or client.tpm is None:
        return Reservation(None, amount)
    if amount > client.tpm:
        raise errors.APIError(
            400,
            f"This request needs {amount} tokens (prompt plus max_tokens); this API key may use "
            f"{client.tpm} tokens a minute. Lower max_tokens or shorten the prompt.",
            param="max_tokens",
            code="rate_limit_exceeded",
        )
    wait = await client.take("tokens", amount)
    if wait:
        raise errors.rate_limited("tokens", client.tpm, wait)
    return Reservation(client, amount)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: 1s, 6m0s, 1m30.5s."""
    seconds = max(0.0, seconds)
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3g}s" if rest < 10 else f"{round(rest, 1):g}s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text
