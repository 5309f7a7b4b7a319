"""The SQLite response store: records by id, the retention time, the size cap (oldest first), a clear error for a
file or directory it cannot use."""

from __future__ import annotations

import asyncio

import pytest

from slmserve.server import store as store_module
from slmserve.server.store import SQLiteStore, StoreError


def run(coro):
    return asyncio.run(coro)


def test_records_are_kept_read_and_deleted(tmp_path):
    store = SQLiteStore(tmp_path / "r.sqlite3", retention_s=3600, max_bytes=10**6)
    run(store.put("resp_1", {"response": {"id": "resp_1"}, "items": [{"text": "héllo"}]}))
    assert run(store.get("resp_1")) == {"response": {"id": "resp_1"}, "items": [{"text": "héllo"}]}
    assert run(store.get("resp_2")) is None
    assert run(store.delete("resp_1")) and not run(store.delete("resp_1"))
    assert run(store.get("resp_1")) is None
    run(store.close())


def test_the_size_cap_drops_the_oldest_first(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(store_module.time, "time", lambda: clock[0])
    store = SQLiteStore(tmp_path / "r.sqlite3", retention_s=3600, max_bytes=1000)
    for i in range(5):
        clock[0] += 1
        run(store.put(f"r{i}", {"text": "x" * 300}))
    assert [run(store.get(f"r{i}")) is not None for i in range(5)] == [False, False, True, True, True]


def test_records_past_the_retention_time_are_gone(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(store_module.time, "time", lambda: clock[0])
    store = SQLiteStore(tmp_path / "r.sqlite3", retention_s=60, max_bytes=10**6)
    run(store.put("old", {"a": 1}))
    clock[0] += 30
    run(store.put("new", {"a": 2}))
    clock[0] += 45  # old is 75 s old, new 45 s
    assert run(store.get("old")) is None and run(store.get("new")) == {"a": 2}
    # And gone from the file, not only hidden: a store opened later finds one record.
    again = SQLiteStore(tmp_path / "r.sqlite3", retention_s=60, max_bytes=10**6)
    assert again._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1


def test_a_file_that_is_not_a_database_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "r.sqlite3"
    bad.write_bytes(b"not a database at all" * 200)
    with pytest.raises(StoreError, match="r.sqlite3"):
        SQLiteStore(bad, 60, 1000)


def test_a_state_dir_that_is_a_file_is_an_error(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(StoreError, match="--state-dir"):
        SQLiteStore(blocker / "r.sqlite3", 60, 1000)
