"""Fixtures for the store tests: every semantic test runs against every backend (see ``_store_helpers``).

The etcd backend runs against a real etcd member on loopback, one per test module (started on first use, stopped
by its PID after the module); each test gets its own key prefix, so the tests share the member's revision counter
and the contract tests state resourceVersions relative to the store's ``current_rv`` when the test began (``b``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _store_helpers import FakeClock, StoreFactory

from meshplane.runtime.etcd import EtcdProcess, start_etcd
from meshplane.store import MemoryStore, SqliteStore
from meshplane.store._core import CoreStore
from meshplane.store.etcd import EtcdStore, parse_etcd_url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite", "etcd"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    etcd = start_etcd(tmp_path_factory.mktemp("etcd") / "member")
    try:
        yield etcd
    finally:
        etcd.stop()


@pytest.fixture
async def make_store(
    backend: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[StoreFactory]:
    """Start a store of the test's backend (keyword arguments go to its constructor); closed after the test."""
    stores: list[Any] = []
    prefix = f"/test-{uuid.uuid4().hex[:12]}/"

    async def make(**kwargs: Any) -> CoreStore:
        kwargs.setdefault("clock", clock)
        store: Any
        if backend == "memory":
            store = MemoryStore(**kwargs)
        elif backend == "sqlite":
            store = SqliteStore(tmp_path / f"store{len(stores)}.db", **kwargs)
        else:
            etcd: EtcdProcess = request.getfixturevalue("etcd_server")
            store = EtcdStore(parse_etcd_url(f"{etcd.url}{prefix}"), **kwargs)
        await store.start()
        stores.append(store)
        started: CoreStore = store
        return started

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> CoreStore:
    started: CoreStore = await make_store()
    return started


@pytest.fixture
def b(store: CoreStore) -> int:
    """The store's resourceVersion when the test began: 0 on a new SQLite or memory store, etcd's revision on etcd."""
    return store.current_rv

