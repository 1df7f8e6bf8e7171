"""The durable store: one SQLite file in WAL mode, written by group commit from a dedicated thread.

Why SQLite: one process owns the control plane's state, and SQLite gives atomic, crash-safe transactions with no
server to run. ``journal_mode=WAL`` + ``synchronous=FULL`` makes every COMMIT fsync the log, so a write whose
coroutine returned survives ``kill -9`` or power loss; WAL also lets the audit reader run beside the writer.

Why group commit: an fsync per write would cap throughput at the disk's sync rate. ``CoreStore`` queues accepted
writes and hands everything queued to ``_persist`` at once; this module turns one batch into one transaction (one
fsync) on the commit thread, so the event loop never blocks on the disk and thousands of concurrent writers share
each sync.

Tables:

- ``objects``: the current state, one row per object (its rv and JSON). Loaded whole at ``start``; reads are served
  from memory after that.
- ``events``: watch history, rv -> event, trimmed to ``history_limit`` rows in the transaction that goes past it.
- ``audit``: who changed what, one row per accepted change; the newest ``audit_limit`` are kept.
- ``meta``: ``schema_version``, ``rv`` (the last committed rv; restart continues after it, so an rv is never
  reused) and ``compacted_rv`` (history at or below it is gone: an older watch gets ``Expired``).

One process at a time: the file is guarded by an exclusive ``flock`` on ``<path>.lock`` (released by the kernel when
the process dies), because two processes each serving reads from their own in-memory index would silently diverge.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pathlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from meshplane.store._core import (
    DEFAULT_AUDIT_LIMIT,
    DEFAULT_HISTORY_LIMIT,
    Change,
    CoreStore,
    LoadedState,
    audit_excess,
    valid_audit_limit,
)
from meshplane.store._watch import DEFAULT_WATCH_QUEUE_SIZE
from meshplane.store.errors import StorageFailure
from meshplane.store.interface import Store
from meshplane.store.types import AuditRecord, EventType, GroupResource, JSONObject, ObjectKey, WatchEvent

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

SCHEMA_VERSION = 1

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    "group" TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    rv INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY ("group", resource, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    "group" TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    rv INTEGER PRIMARY KEY,
    timestamp TEXT NOT NULL,
    actor TEXT NOT NULL,
    verb TEXT NOT NULL,
    "group" TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    uid TEXT NOT NULL,
    old_generation INTEGER,
    new_generation INTEGER
);
"""

_UPSERT_OBJECT = """
INSERT INTO objects ("group", resource, namespace, name, rv, json) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT ("group", resource, namespace, name) DO UPDATE SET rv = excluded.rv, json = excluded.json
"""
_DELETE_OBJECT = 'DELETE FROM objects WHERE "group" = ? AND resource = ? AND namespace = ? AND name = ?'
_INSERT_EVENT = 'INSERT INTO events (rv, type, "group", resource, namespace, name, json) VALUES (?, ?, ?, ?, ?, ?, ?)'
_INSERT_AUDIT = """
INSERT INTO audit (rv, timestamp, actor, verb, "group", resource, namespace, name, uid, old_generation, new_generation)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def _dumps(obj: JSONObject) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class SqliteStore(CoreStore):
    """``Store`` in one SQLite file. See the module docstring for the design.

    ``history_limit``: how many past events are kept for watch replay; a watch from before them gets ``Expired``.
    ``clock``: the time source for creationTimestamp and audit records (UTC ``datetime``).
    ``watch_queue_size``: live events a watch may fall behind before it is ended with ``Expired``.
    ``max_batch``: the most writes one transaction commits (default: 2000, at most ``watch_queue_size``).
    ``audit_limit``: the newest audit records kept (the oldest are deleted in the transaction that goes a tenth
    past it; 0 keeps every record).
    """

    def __init__(
        self,
        path: pathlib.Path,
        *,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        clock: Callable[[], datetime] | None = None,
        watch_queue_size: int = DEFAULT_WATCH_QUEUE_SIZE,
        max_batch: int | None = None,
        audit_limit: int = DEFAULT_AUDIT_LIMIT,
    ) -> None:
        super().__init__(
            history_limit=history_limit, clock=clock, watch_queue_size=watch_queue_size, max_batch=max_batch
        )
        self.path = pathlib.Path(path)
        self._audit_limit = valid_audit_limit(audit_limit)
        self._audit_count = 0  # commit thread only: rows in the audit table
        self._executor: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None  # used only on the commit thread
        self._reader: sqlite3.Connection | None = None  # used only on the event loop (audit queries)
        self._lock_fd: int | None = None
        self._persisted_compacted_rv = 0  # commit thread only

    # -- CoreStore hooks ----------------------------------------------------------------------------------------

    async def _load(self) -> LoadedState:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshplane-store-commit")
        try:
            loaded = await self._on_commit_thread(self._open_and_load)
            self._reader = sqlite3.connect(self.path, isolation_level=None)
            self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await self._close_backend()
            raise
        return loaded

    async def _persist(self, batch: Sequence[Change], compacted_rv: int) -> None:
        await self._on_commit_thread(self._write_batch, batch, compacted_rv)

    async def _close_backend(self) -> None:
        if self._executor is not None:
            with contextlib.suppress(Exception):
                await self._on_commit_thread(self._close_writer)
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def audit(self, since_rv: int = 0, limit: int = 500) -> list[AuditRecord]:
        self._require_started()
        if self._reader is None:
            raise StorageFailure("store is closed")
        rows = self._reader.execute(
            'SELECT rv, timestamp, actor, verb, "group", resource, namespace, name, uid, old_generation, '
            "new_generation FROM audit WHERE rv > ? AND rv <= ? ORDER BY rv LIMIT ?",
            (since_rv, self.current_rv, max(limit, 0)),
        ).fetchall()
        return [AuditRecord(*row) for row in rows]

    # -- on the commit thread -----------------------------------------------------------------------------------

    async def _on_commit_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise StorageFailure("store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open_and_load(self) -> LoadedState:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._writer = conn
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageFailure(f"{self.path}: cannot use WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Statement by statement: executescript would commit the transaction on its own.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("schema_version", SCHEMA_VERSION), ("rv", 0), ("compacted_rv", 0)],
                )
                meta = {"schema_version": SCHEMA_VERSION, "rv": 0, "compacted_rv": 0}
            elif meta.get("schema_version") != SCHEMA_VERSION:
                raise StorageFailure(
                    f"{self.path}: schema version {meta.get('schema_version')} is not {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

        compacted_rv = int(meta["compacted_rv"])
        self._persisted_compacted_rv = compacted_rv
        interned: dict[tuple[str, str], GroupResource] = {}

        def gr_of(group: str, resource: str) -> GroupResource:
            gr = interned.get((group, resource))
            if gr is None:
                gr = interned[(group, resource)] = GroupResource(group, resource)
            return gr

        by_key: dict[ObjectKey, JSONObject] = {}
        objects: list[tuple[GroupResource, JSONObject]] = []
        max_rv = int(meta["rv"])
        for group, resource, namespace, name, rv, text in conn.execute(
            'SELECT "group", resource, namespace, name, rv, json FROM objects ORDER BY rv'
        ):
            gr = gr_of(group, resource)
            obj = json.loads(text)
            by_key[ObjectKey(gr, namespace, name)] = obj
            objects.append((gr, obj))
            max_rv = max(max_rv, rv)
        history: list[WatchEvent] = []
        for rv, type_, group, resource, namespace, name, text in conn.execute(
            'SELECT rv, type, "group", resource, namespace, name, json FROM events WHERE rv > ? ORDER BY rv',
            (compacted_rv,),
        ):
            gr = gr_of(group, resource)
            current = by_key.get(ObjectKey(gr, namespace, name))
            if type_ != EventType.DELETED and current is not None and current["metadata"]["resourceVersion"] == str(rv):
                obj = current  # the event's object is the current state: share it instead of parsing it again
            else:
                obj = json.loads(text)
            history.append(WatchEvent(EventType(type_), gr, obj, rv))
            max_rv = max(max_rv, rv)
        (max_audit_rv, self._audit_count) = conn.execute("SELECT coalesce(max(rv), 0), count(*) FROM audit").fetchone()
        max_rv = max(max_rv, int(max_audit_rv))
        return LoadedState(rv=max_rv, compacted_rv=compacted_rv, objects=objects, history=history)

    def _write_batch(self, batch: Sequence[Change], compacted_rv: int) -> None:
        conn = self._writer
        if conn is None:
            raise StorageFailure("store is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            audit_count = self._write_changes(conn, batch, compacted_rv)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        self._persisted_compacted_rv = max(self._persisted_compacted_rv, compacted_rv)
        self._audit_count = audit_count

    def _write_changes(self, conn: sqlite3.Connection, batch: Sequence[Change], compacted_rv: int) -> int:
        """The statements of one batch, inside the caller's transaction; the audit rows there will be after it."""
        final: dict[ObjectKey, tuple[int, str] | None] = {}  # the last write of each object in the batch wins
        events: list[tuple[int, str, str, str, str, str, str]] = []
        audits: list[tuple[Any, ...]] = []
        for change in batch:
            key, event, record = change.key, change.event, change.audit
            text = _dumps(event.obj)
            final[key] = None if change.obj is None else (event.rv, text)
            if event.rv > compacted_rv:
                events.append(
                    (event.rv, event.type.value, key.gr.group, key.gr.resource, key.namespace, key.name, text)
                )
            audits.append(
                (
                    record.rv,
                    record.timestamp,
                    record.actor,
                    record.verb,
                    record.group,
                    record.resource,
                    record.namespace,
                    record.name,
                    record.uid,
                    record.old_generation,
                    record.new_generation,
                )
            )
        conn.executemany(
            _UPSERT_OBJECT,
            [
                (k.gr.group, k.gr.resource, k.namespace, k.name, state[0], state[1])
                for k, state in final.items()
                if state is not None
            ],
        )
        conn.executemany(
            _DELETE_OBJECT,
            [(k.gr.group, k.gr.resource, k.namespace, k.name) for k, state in final.items() if state is None],
        )
        conn.executemany(_INSERT_EVENT, events)
        conn.executemany(_INSERT_AUDIT, audits)
        audit_count = self._audit_count + len(audits)
        excess = audit_excess(audit_count, self._audit_limit)
        if excess:  # the oldest records (rv is the primary key: the index gives the cut at once)
            conn.execute("DELETE FROM audit WHERE rv <= (SELECT rv FROM audit ORDER BY rv LIMIT 1 OFFSET ?)",
                         (excess - 1,))
            audit_count -= excess
        conn.execute("UPDATE meta SET value = ? WHERE key = 'rv'", (batch[-1].event.rv,))
        if compacted_rv > self._persisted_compacted_rv:
            conn.execute("DELETE FROM events WHERE rv <= ?", (compacted_rv,))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'compacted_rv'", (compacted_rv,))
        return audit_count

    def _close_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()


def _lock(path: pathlib.Path) -> int:
    """Take the exclusive per-file lock, or fail with StorageFailure if another process holds it."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageFailure(f"{path} is in use by another process") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


if TYPE_CHECKING:  # mypy proves the backend keeps the Protocol

    def _conforms(store: SqliteStore) -> Store:
        return store
