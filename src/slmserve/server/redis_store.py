"""What servers share in Redis (--store-url redis://...): stored responses and rate-limit buckets, the same for
every server and gateway replica using the URL. Imported only where a URL asks for it, so the default install
needs no redis client.

Each record is a key with Redis's own expiry (the retention time); a sorted set by creation time and a running
byte count keep the size cap, the oldest dropped first. Redis down: StoreError, which a request answers as a 503
store_unavailable and a start-up as an error naming the URL (docs/agent-apis.md, "When the store is down").
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio as aioredis

from slmserve.server.rate_limits import Limiter
from slmserve.server.store import ResponseStore, StoreError

log = logging.getLogger(__name__)

PREFIX = "slmserve:responses:"
INDEX, TOTAL = PREFIX + "index", PREFIX + "bytes"


class RedisStore(ResponseStore):
    def __init__(self, url: str, retention_s: float, max_bytes: int) -> None:
        super().__init__(retention_s, max_bytes)
        self.url = url
        try:
            with redis.Redis.from_url(url, socket_timeout=5) as probe:
                probe.ping()
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"the response store {url} cannot be reached ({exc})") from exc
        self._redis = aioredis.Redis.from_url(url, socket_timeout=5)

    async def put(self, key: str, record: dict[str, Any]) -> None:
        body = json.dumps(record, ensure_ascii=False).encode("utf-8")
        async with self._calls():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(PREFIX + key, body, ex=max(1, int(self.retention_s)))
                pipe.zadd(INDEX, {key: time.time()})
                pipe.hset(PREFIX + "sizes", key, len(body))
                pipe.incrby(TOTAL, len(body))
                await pipe.execute()
            await self._prune()

    async def get(self, key: str) -> dict[str, Any] | None:
        async with self._calls():
            body = await self._redis.get(PREFIX + key)
        return json.loads(body) if body is not None else None

    async def delete(self, key: str) -> bool:
        async with self._calls():
            return await self._forget([key]) > 0

    async def close(self) -> None:
        await self._redis.aclose()

    @asynccontextmanager
    async def _calls(self) -> AsyncIterator[None]:
        """Redis's errors as StoreError, naming the URL."""
        try:
            yield
        except redis.RedisError as exc:
            raise StoreError(f"{self.url} failed: {exc}") from exc

    async def _forget(self, keys: list[str]) -> int:
        """Drop these records and their bookkeeping; how many records there were."""
        sizes = await self._redis.hmget(PREFIX + "sizes", keys)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(PREFIX + k for k in keys))
            pipe.zrem(INDEX, *keys)
            pipe.hdel(PREFIX + "sizes", *keys)
            pipe.decrby(TOTAL, sum(int(s) for s in sizes if s is not None))
            deleted, *_ = await pipe.execute()
        return deleted

    async def _prune(self) -> None:
        """Forget what Redis has expired, then the oldest while the records are over the size cap."""
        expired = await self._redis.zrangebyscore(INDEX, 0, time.time() - self.retention_s)
        if expired:
            await self._forget([k.decode() for k in expired])
        while int(await self._redis.get(TOTAL) or 0) > self.max_bytes:
            oldest = await self._redis.zrange(INDEX, 0, 0)
            if not oldest:
                break
            await self._forget([k.decode() for k in oldest])


# One token bucket, refilled and taken (or given back) in one step on Redis's clock: servers' clocks need not agree.
BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local capacity, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'level', 'stamp')
local level = tonumber(state[1]) or capacity
local stamp = tonumber(state[2]) or now
level = math.min(capacity, level + (now - stamp) * capacity / 60)
local wait = 0
if ARGV[3] == 'give' then
  level = math.min(capacity, level + amount)
elseif level >= amount then
  level = level - amount
else
  wait = (amount - level) * 60 / capacity
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return {tostring(wait), tostring(level)}
"""
LIMITS = "slmserve:limits:"


class RedisLimiter(Limiter):
    """Rate-limit buckets in Redis, one a key for every server using the URL (a cluster's gateway replicas). Redis
    unreachable: this process's own buckets (logged once a minute) until it answers again, so an outage of the
    store loosens the limits to one server's share rather than refusing every request."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._redis = aioredis.Redis.from_url(url, socket_timeout=2)
        self._bucket_script = self._redis.register_script(BUCKET)
        self._warned = 0.0

    async def _run(self, key: str, capacity: float, amount: float, op: str) -> tuple[float, float] | None:
        try:
            wait, level = await self._bucket_script(keys=[LIMITS + key], args=[capacity, amount, op])
        except redis.RedisError as exc:
            if time.monotonic() - self._warned > 60:
                log.warning("rate limits fall back to this server's own buckets: %s unreachable (%s)", self.url, exc)
                self._warned = time.monotonic()
            return None
        return float(wait), float(level)

    async def take(self, key: str, capacity: float, amount: float) -> tuple[float, float]:
        got = await self._run(key, capacity, amount, "take")
        return got if got is not None else await super().take(key, capacity, amount)

    async def give(self, key: str, capacity: float, amount: float) -> float:
        got = await self._run(key, capacity, amount, "give")
        return got[1] if got is not None else await super().give(key, capacity, amount)

    def peek(self, key: str, capacity: float) -> float:
        return capacity  # Redis is not read for a header alone: a request that took nothing shows the limit

    async def close(self) -> None:
        await self._redis.aclose()
