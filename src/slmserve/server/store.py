"""Stored state that outlives a request: the Responses API's stored responses.

One small interface, two stores: a SQLite file under --state-dir (the default: one server, or several processes on
one machine) and Redis by --store-url (every gateway replica of a cluster sees the same responses). A store that
cannot be opened, read or written is a StoreError at start-up, never a silent loss later.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from slmserve.settings import Settings

DB_NAME = "responses.sqlite3"


class StoreError(ValueError):
    """The store cannot be used: its file is corrupt or unwritable, or its server cannot be reached. A ValueError:
    at start-up it is a usage error, as a bad option is."""


class ResponseStore(ABC):
    """Stored responses by id, each a JSON object; kept for a retention time, the oldest dropped past a size cap."""

    def __init__(self, retention_s: float, max_bytes: int) -> None:
        self.retention_s, self.max_bytes = retention_s, max_bytes

    @abstractmethod
    async def put(self, key: str, record: dict[str, Any]) -> None: ...

    @abstractmethod
    async def get(self, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """True when there was such a record."""

    async def close(self) -> None:  # noqa: B027 - a store without a connection has nothing to close
        pass


class SQLiteStore(ResponseStore):
    """One table in a SQLite file; WAL, so several processes on one machine may share it. Calls run on a worker
    thread, one at a time (sqlite3 connections are not for concurrent use)."""

    def __init__(self, path: Path, retention_s: float, max_bytes: int) -> None:
        super().__init__(retention_s, max_bytes)
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=10, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            if (check := self._db.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                raise sqlite3.DatabaseError(check)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, created REAL NOT NULL, "
                "size INTEGER NOT NULL, body TEXT NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS responses_created ON responses (created)")
            self._prune()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"the response store {path} cannot be used ({exc}); move the file away or set --state-dir "
                "to a writable directory"
            ) from exc

    async def put(self, key: str, record: dict[str, Any]) -> None:
        body = json.dumps(record, ensure_ascii=False)
        await self._run(self._put, key, body)

    async def get(self, key: str) -> dict[str, Any] | None:
        row = await self._run(self._get, key)
        return json.loads(row) if row is not None else None

    async def delete(self, key: str) -> bool:
        return await self._run(self._delete, key)

    async def close(self) -> None:
        await self._run(self._db.close)

    async def _run(self, fn, *args):
        def locked():
            with self._lock:
                return fn(*args)

        return await asyncio.to_thread(locked)

    def _put(self, key: str, body: str) -> None:
        size = len(body.encode("utf-8"))
        self._db.execute(
            "INSERT OR REPLACE INTO responses (id, created, size, body) VALUES (?, ?, ?, ?)",
            (key, time.time(), size, body),
        )
        self._prune()

    def _get(self, key: str) -> str | None:
        row = self._db.execute(
            "SELECT body FROM responses WHERE id = ? AND created >= ?", (key, time.time() - self.retention_s)
        ).fetchone()
        return row[0] if row else None

    def _delete(self, key: str) -> bool:
        return self._db.execute("DELETE FROM responses WHERE id = ?", (key,)).rowcount > 0

    def _prune(self) -> None:
        """Drop what is past the retention time, then the oldest while the records are over the size cap."""
        self._db.execute("DELETE FROM responses WHERE created < ?", (time.time() - self.retention_s,))
        total = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()[0]
        if total <= self.max_bytes:
            return
        kept, cutoff = 0, None
        for created, size in self._db.execute("SELECT created, size FROM responses ORDER BY created DESC"):
            kept += size
            if kept > self.max_bytes:
                cutoff = created
                break
        self._db.execute("DELETE FROM responses WHERE created <= ?", (cutoff,))


def open_store(settings: Settings) -> ResponseStore:
    """The store the settings name: Redis by --store-url, else SQLite under --state-dir. StoreError if unusable."""
    retention = settings.responses_retention_days * 86400
    max_bytes = int(settings.responses_max_mb * 1024 * 1024)
    if settings.store_url:
        from slmserve.server.redis_store import RedisStore  # the redis client only where a URL asks for it

        return RedisStore(settings.store_url, retention, max_bytes)
    return SQLiteStore(Path(settings.state_dir).expanduser() / DB_NAME, retention, max_bytes)
