"""Fixtures for the store tests: every semantic test runs against both backends (see ``_store_helpers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _store_helpers import FakeClock, StoreFactory

from meshplane.store import MemoryStore, SqliteStore
from meshplane.store._core import CoreStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(backend: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[StoreFactory]:
    """Start a store of the test's backend (keyword arguments go to its constructor); closed after the test."""
    stores: list[CoreStore] = []

    async def make(**kwargs: Any) -> CoreStore:
        kwargs.setdefault("clock", clock)
        store: CoreStore
        if backend == "memory":
            store = MemoryStore(**kwargs)
        else:
            store = SqliteStore(tmp_path / f"store{len(stores)}.db", **kwargs)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> CoreStore:
    started: CoreStore = await make_store()
    return started
