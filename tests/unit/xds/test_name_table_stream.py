"""The agent's name-table (NDS) stream is not a proxy of its own: it uses its Envoy's node id (the table is built
for that proxy's scope), and proxy-status lists the node once, with the NameTable's sync state added to the
Envoy's row; without an Envoy on that node it is not listed at all.

Real gRPC on loopback for the name-table stream (``meshplane.rpc.nds.NameTableClient``, what the agent runs); the
Envoy is a Connection registered with the server directly, as in test_xds_server_incremental.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from meshplane.model import nds
from meshplane.model.proxy import Locality
from meshplane.model.resources import GroupResource
from meshplane.rpc.nds import NameTableClient
from meshplane.store import MemoryStore
from meshplane.xds import XdsServer, XdsSettings
from meshplane.xds.connection import Connection

SE = GroupResource("networking.istio.io", "serviceentries")
NODE = "sidecar~10.7.1.1~web-0.default~default.svc.cluster.local"
META = {"NAMESPACE": "default", "WORKLOAD_NAME": "web", "INTERCEPTION_MODE": "REDIRECT", "DNS_CAPTURE": "true"}


async def _nothing(_data: bytes) -> None:
    return None


async def _until(cond: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def test_the_name_table_stream_is_listed_with_its_envoy_not_as_a_second_proxy() -> None:
    store = MemoryStore()
    await store.start()
    await store.create(SE, {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                            "metadata": {"name": "api", "namespace": "default"},
                            "spec": {"hosts": ["api.example.com"], "ports": [{"number": 443, "name": "tls",
                                                                               "protocol": "TLS"}],
                                     "resolution": "DNS", "location": "MESH_EXTERNAL"}}, actor="test")
    server = XdsServer(store, XdsSettings(debounce_quiet=0.01, debounce_max=0.05))
    port = await server.start("127.0.0.1:0")
    stop = asyncio.Event()
    tables: list[Any] = []
    client = NameTableClient(f"127.0.0.1:{port}", NODE, "web.default", META)
    task = asyncio.create_task(client.run(tables.append, stop))
    try:
        await _until(lambda: tables and client.connected)
        assert "api.example.com" in tables[-1].table  # built for this node: the stream works as before
        assert server.proxy_status() == []  # the agent's stream alone: no proxy is connected on this node

        envoy = Connection(delta=False, peer="test", translator=server.translator, send=_nothing)
        envoy.proxy = server.translator.proxy_from_node(NODE, META, Locality())
        server.register(envoy)
        statuses = server.proxy_status()
        assert [s.node_id for s in statuses] == [NODE]  # one row per instance, the Envoy's
        assert statuses[0].connection_id == envoy.id
        assert nds.TYPE_URL in {t.type_url for t in statuses[0].types}  # the table's sync state, on that row
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.stop(0)
        await store.close()
