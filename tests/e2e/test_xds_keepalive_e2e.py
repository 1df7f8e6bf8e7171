"""Envoy's keepalive pings on its ADS connection against the real xDS server: the stream stays up.

gRPC's default server ping policy allows one ping per 5 minutes without data; Envoy's bootstrap pings every 30 s,
so the server answered the third early ping with GOAWAY ``too_many_pings`` and every ADS stream was reset about
every two minutes. Here Envoy pings every 2 s (the bootstrap's interval, not a long wait): under the old policy the
stream was reset after about 8 s; it must now outlive six pings on one connection, with no disconnect counted.
"""

from __future__ import annotations

import asyncio

import pytest
from envoy_harness import Harness, wait_until
from minimesh import MiniTranslator

from meshplane.metrics import ControlPlaneMetrics
from meshplane.store import MemoryStore
from meshplane.xds import SyncState, XdsServer
from tests.support.promtext import value

pytestmark = pytest.mark.envoy

PING_INTERVAL = 2.0
HOLD = 7 * PING_INTERVAL  # six pings or more (Envoy jitters the interval by up to 15%)


def _connections(server: XdsServer, node_id: str) -> list[str]:
    return [s.connection_id for s in server.proxy_status() if s.node_id == node_id]


async def test_keepalive_pings_do_not_reset_the_ads_stream(  # type: ignore[no-untyped-def]
        store: MemoryStore, harness: Harness, xds) -> None:
    metrics = ControlPlaneMetrics()
    server, address = await xds(MiniTranslator(), metrics=metrics)
    envoy = await harness.envoy("pinger", address, xds_keepalive_s=PING_INTERVAL)

    async def synced() -> bool:
        return any(s.node_id == envoy.node_id and s.state is SyncState.SYNCED for s in server.proxy_status())

    await wait_until(synced, what="proxy synced")
    first = _connections(server, envoy.node_id)
    assert len(first) == 1
    await asyncio.sleep(HOLD)  # the pings arrive meanwhile; the old policy reset the stream at the fourth
    assert _connections(server, envoy.node_id) == first
    stats = await envoy.stats("cluster.xds-grpc.upstream_cx_total")
    assert stats["cluster.xds-grpc.upstream_cx_total"] == 1, stats
    text = metrics.render().decode()
    assert value(text, "meshplane_xds_disconnects_total", reason="reset") is None, text
    # A disconnect is counted: the proxy goes away.
    await envoy.stop()
    await wait_until(lambda: _gone(server, envoy.node_id), what="stream closed")
    text = metrics.render().decode()
    assert sum(v for r in ("reset", "proxy_closed") if (v := value(text, "meshplane_xds_disconnects_total",
                                                                    reason=r)) is not None) == 1, text


async def _gone(server: XdsServer, node_id: str) -> bool:
    return not _connections(server, node_id)
