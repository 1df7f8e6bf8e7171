"""Helpers shared by the store tests: sample objects, a fake clock, and the two seams into the commit path.

Both backends are real: the SQLite store writes a real database file in ``tmp_path`` with fsync on. The only seams
are the ones a disk failure or a slow disk cannot be produced without: ``gate_commits`` holds the next commits back,
``fail_next_commit`` makes one commit fail the way SQLite fails (inside the transaction, after its statements ran).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meshplane.store import GroupResource, JSONObject, SqliteStore
from meshplane.store._core import Change, CoreStore

VS = GroupResource("networking.istio.io", "virtualservices")
DR = GroupResource("networking.istio.io", "destinationrules")
NS = GroupResource("", "namespaces")

# make_store(**constructor_kwargs) -> a started store of the parametrized backend (see conftest).
StoreFactory = Callable[..., Awaitable[CoreStore]]


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 17, 18, 46, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def vs(name: str, namespace: str = "default", hosts: Sequence[str] = ("a.example.com",), **extra: Any) -> JSONObject:
    obj: JSONObject = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hosts": list(hosts)},
    }
    obj.update(extra)
    return obj


def gate_commits(store: CoreStore) -> asyncio.Event:
    """Hold every commit until the returned event is set."""
    gate = asyncio.Event()
    persist = store._persist

    async def gated(batch: Sequence[Change], compacted_rv: int) -> None:
        await gate.wait()
        await persist(batch, compacted_rv)

    store._persist = gated  # type: ignore[method-assign]
    return gate


def fail_next_commit(store: CoreStore) -> list[Sequence[Change]]:
    """Make the next commit fail; returns the list the failed batch is appended to.

    SQLite: the failure happens inside the real transaction after its statements ran, so rollback is exercised.
    """
    failed: list[Sequence[Change]] = []
    if isinstance(store, SqliteStore):
        write_changes = store._write_changes

        def failing(conn: sqlite3.Connection, batch: Sequence[Change], compacted_rv: int) -> int:
            if not failed:
                failed.append(batch)
                write_changes(conn, batch, compacted_rv)
                raise sqlite3.OperationalError("disk I/O error (injected)")
            return write_changes(conn, batch, compacted_rv)

        store._write_changes = failing  # type: ignore[method-assign]
    else:
        persist = store._persist

        async def failing_persist(batch: Sequence[Change], compacted_rv: int) -> None:
            if not failed:
                failed.append(batch)
                raise OSError("disk I/O error (injected)")
            await persist(batch, compacted_rv)

        store._persist = failing_persist  # type: ignore[method-assign]
    return failed


def core_only(store: object) -> None:
    """Skip on etcd: the test holds commits back or injects a commit failure inside CoreStore's committer, which
    the etcd backend does not have (etcd commits; the replica only sends transactions and follows its watch)."""
    from meshplane.store.etcd import EtcdStore

    if isinstance(store, EtcdStore):
        pytest.skip("CoreStore's committer seam; etcd's own commit path is covered by test_etcd_store.py")
