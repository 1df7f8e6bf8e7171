"""Fixtures for e2e tests: a MemoryStore, an XdsServer on loopback, and the Envoy/backends harness."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from envoy_harness import Harness
from security_mesh import SecurityMesh

from meshplane.store import MemoryStore
from meshplane.xds import Translator, XdsServer, XdsSettings
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    yield h
    await h.close()


XdsFactory = Callable[..., Awaitable[tuple[XdsServer, str]]]


@pytest.fixture
async def xds(store: MemoryStore) -> AsyncIterator[XdsFactory]:
    servers: list[XdsServer] = []

    async def make(translator: Translator | None = None, **kw: Any) -> tuple[XdsServer, str]:
        settings = XdsSettings(debounce_quiet=kw.pop("quiet", 0.02), debounce_max=kw.pop("max_delay", 0.2),
                               translator=translator, **kw)
        server = XdsServer(store, settings)
        port = await server.start("127.0.0.1:0")
        servers.append(server)
        return server, f"127.0.0.1:{port}"

    yield make
    for s in servers:
        await s.stop(0.2)


@pytest.fixture
async def sec(store: MemoryStore, harness: Harness, xds: XdsFactory, tmp_path: Path) -> AsyncIterator[SecurityMesh]:
    """A zero-trust mesh (CA, SDS per workload) on the product's translator; tests that need a policy or mesh
    settings from the start define their own ``sec``."""
    server, address = await xds(DefaultTranslator())
    m = await SecurityMesh(store, harness, server, address, tmp_path).start()
    yield m
    await m.close()
