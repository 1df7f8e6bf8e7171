"""What only the SQLite store has: a file that survives restarts, group commit, the process lock, the schema."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from _store_helpers import DR, VS, FakeClock, vs

from meshplane.store import Expired, SqliteStore, StorageFailure
from meshplane.store._core import Change


async def started(path: Path, **kwargs: object) -> SqliteStore:
    store = SqliteStore(path, clock=FakeClock(), **kwargs)  # type: ignore[arg-type]
    await store.start()
    return store


async def test_a_restart_keeps_everything_and_continues_the_rv_counter(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await started(path)
    a = await store.create(VS, vs("a", namespace="x"), actor="alice")
    await store.create(VS, vs("b"), actor="alice")
    await store.update(VS, vs("b", hosts=["z"]), actor="bob")
    await store.create(DR, vs("d"), actor="alice")
    await store.delete(VS, "default", "b", actor="carol")
    before_list = {gr: store.list(gr) for gr in (VS, DR)}
    before_audit = store.audit()
    await store.close()

    store = await started(path)
    try:
        assert store.current_rv == 5
        assert {gr: store.list(gr) for gr in (VS, DR)} == before_list
        assert store.get(VS, "x", "a") == a
        assert store.audit() == before_audit
        # History survived too: a watch from an old rv replays it.
        watch = store.watch(VS, since_rv=1)
        events = [await asyncio.wait_for(watch.__anext__(), 1) for _ in range(3)]
        assert [(e.type.value, e.rv) for e in events] == [("ADDED", 2), ("MODIFIED", 3), ("DELETED", 5)]
        assert events[2].obj["metadata"]["resourceVersion"] == "5"
        created = await store.create(VS, vs("c"), actor="a")
        assert created["metadata"]["resourceVersion"] == "6"
        assert (await asyncio.wait_for(watch.__anext__(), 1)).rv == 6
        watch.close()
    finally:
        await store.close()


async def test_rvs_of_failed_writes_are_never_reused_across_a_restart_either(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await started(path)
    for i in range(3):
        await store.create(VS, vs(f"o{i}"), actor="a")
    await store.delete(VS, "default", "o2", actor="a")  # the highest rv now lives only in events/audit/meta
    await store.close()
    store = await started(path)
    try:
        assert store.current_rv == 4
        assert (await store.create(VS, vs("n"), actor="a"))["metadata"]["resourceVersion"] == "5"
    finally:
        await store.close()


async def test_compaction_is_persisted(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await started(path, history_limit=4)
    for i in range(10):
        await store.create(VS, vs(f"o{i}"), actor="a")
    assert store.compacted_rv == 6
    await store.close()
    with sqlite3.connect(path) as db:
        assert [r for (r,) in db.execute("SELECT rv FROM events ORDER BY rv")] == [7, 8, 9, 10]
        assert db.execute("SELECT value FROM meta WHERE key = 'compacted_rv'").fetchone() == (6,)
    db.close()

    store = await started(path, history_limit=4)
    try:
        with pytest.raises(Expired):
            await store.watch(VS, since_rv=5).__anext__()
        watch = store.watch(VS, since_rv=6)
        assert [(await watch.__anext__()).rv for _ in range(4)] == [7, 8, 9, 10]
        watch.close()
    finally:
        await store.close()

    # A smaller limit on the next start compacts further, and the next commit persists it.
    store = await started(path, history_limit=2)
    try:
        assert store.compacted_rv == 8
        with pytest.raises(Expired):
            await store.watch(VS, since_rv=7).__anext__()
        await store.create(VS, vs("new"), actor="a")
        assert store.compacted_rv == 9
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert [r for (r,) in db.execute("SELECT rv FROM events ORDER BY rv")] == [10, 11]
    db.close()


async def test_concurrent_writes_share_transactions_on_the_commit_thread(tmp_path: Path) -> None:
    store = await started(tmp_path / "s.db")
    transactions: list[tuple[str, int]] = []
    write_batch = store._write_batch

    def recording(batch: Sequence[Change], compacted_rv: int) -> None:
        transactions.append((threading.current_thread().name, len(batch)))
        write_batch(batch, compacted_rv)

    store._write_batch = recording  # type: ignore[method-assign]
    try:
        await asyncio.gather(*(store.create(VS, vs(f"o{i}"), actor="a") for i in range(500)))
        assert sum(n for _, n in transactions) == 500
        assert len(transactions) < 50, transactions
        assert all(name.startswith("meshplane-store-commit") for name, _ in transactions)
        assert threading.current_thread().name not in {name for name, _ in transactions}
    finally:
        await store.close()


async def test_one_process_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await started(path)
    other = SqliteStore(path)
    with pytest.raises(StorageFailure, match="in use"):
        await other.start()
    await store.close()
    again = await started(path)
    await again.close()


async def test_the_file_layout(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await started(path)
    await store.create(VS, vs("a"), actor="alice")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"meta", "objects", "events", "audit"}
        assert dict(db.execute("SELECT key, value FROM meta")) == {"schema_version": 1, "rv": 1, "compacted_rv": 0}
        row = db.execute('SELECT "group", resource, namespace, name, rv FROM objects').fetchone()
        assert row == ("networking.istio.io", "virtualservices", "default", "a", 1)
        assert db.execute("SELECT rv, type, name FROM events").fetchall() == [(1, "ADDED", "a")]
        assert db.execute("SELECT rv, actor, verb, new_generation FROM audit").fetchall() == [(1, "alice", "create", 1)]
    db.close()
    await store.close()


async def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await started(path)
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    db.close()
    with pytest.raises(StorageFailure, match="schema version 99"):
        await started(path)
    # The failed start released the lock and the thread.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
    db.close()
    store = await started(path)
    await store.close()


def hold_mid_commit(store: SqliteStore) -> tuple[threading.Event, threading.Event, list[threading.Thread]]:
    """Stop the next transaction on the commit thread after its statements ran, before COMMIT.

    Returns (entered, release, thread): ``entered`` is set when the thread is inside the transaction; it waits
    there (at most 10 s, so a broken test cannot hang) until ``release`` is set; ``thread`` gets the commit thread.
    """
    entered, release = threading.Event(), threading.Event()
    thread: list[threading.Thread] = []
    write_changes = store._write_changes

    def holding(conn: sqlite3.Connection, batch: Sequence[Change], compacted_rv: int) -> int:
        count = write_changes(conn, batch, compacted_rv)
        if not entered.is_set():
            thread.append(threading.current_thread())
            entered.set()
            release.wait(10)
        return count

    store._write_changes = holding  # type: ignore[method-assign]
    return entered, release, thread


async def until_set(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.001)


async def test_writers_cancelled_mid_commit_leave_the_store_usable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await started(path)
    entered, release, _ = hold_mid_commit(store)
    async with asyncio.timeout(20):  # a hang fails here, not at the suite's timeout
        create = asyncio.create_task(store.create(VS, vs("a"), actor="a"))
        # A second writer whose verdict waits on the first (pending) write, and one on another object.
        update = asyncio.create_task(store.update(VS, vs("a", hosts=["b"]), actor="a", expected_rv=1))
        other = asyncio.create_task(store.create(VS, vs("other"), actor="a"))
        await until_set(entered)
        for task in (create, update, other):
            task.cancel()
        release.set()
        for task in (create, update, other):
            with pytest.raises(asyncio.CancelledError):
                await task
        # The store goes on: the cancelled writes were not withdrawn, later writes commit, reads see them.
        later = await store.create(VS, vs("later"), actor="a")
        assert store.get(VS, "default", "a") is not None and store.get(VS, "default", "later") == later
        assert store.current_rv == int(later["metadata"]["resourceVersion"])
        await store.close()
    again = await started(path)  # everything committed is on disk, and the lock was released
    try:
        assert {o["metadata"]["name"] for o in again.list(VS)[0]} >= {"a", "later"}
    finally:
        await again.close()


async def test_a_close_cancelled_mid_commit_still_closes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await started(path)
    entered, release, thread = hold_mid_commit(store)
    async with asyncio.timeout(20):
        create = asyncio.create_task(store.create(VS, vs("a"), actor="a"))
        await until_set(entered)
        close = asyncio.create_task(store.close())
        await asyncio.sleep(0.01)
        close.cancel()
        with pytest.raises(asyncio.CancelledError):
            await close
        release.set()
        await create  # accepted before close: committed
        await store.close()  # waits for the one shutdown, which did not stop with its caller
    assert not thread[0].is_alive()  # the commit thread ended
    again = await started(path)  # the lock was released
    try:
        assert again.get(VS, "default", "a") is not None
    finally:
        await again.close()


async def test_audit_trimming_is_persisted_and_counted_again_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, audit_limit=10)
    await store.start()
    for i in range(25):
        await store.create(VS, vs(f"r{i}"), actor="alice")
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*), min(rv), max(rv) FROM audit").fetchone() == (11, 15, 25)
    again = SqliteStore(path, audit_limit=10)  # the row count is read at start: the next trim is on time
    await again.start()
    try:
        await again.create(VS, vs("r25"), actor="alice")
        assert [r.rv for r in again.audit(limit=100)] == list(range(17, 27))
    finally:
        await again.close()
