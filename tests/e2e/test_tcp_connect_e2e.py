"""A VirtualService ``tcp`` split applied to HTTP CONNECT tunnels through a real Envoy sidecar in NONE mode.

What is real: the Envoy process (the harness sidecar, ``INTERCEPTION_MODE=NONE``, the default), meshplane's gRPC xDS
server on loopback with the real ``DefaultTranslator`` over a ``MemoryStore``, and TCP sockets end to end: the test
opens a socket to the sidecar's explicit-proxy listener (``LISTEN:15001``), sends ``CONNECT db.internal:5432``,
and talks through the tunnel to one of two asyncio TCP servers (the WorkloadEntries ``db-a`` / ``db-b`` on their
own 127.0.x.y addresses) that prefix every line they echo with their name.

Why: in NONE mode an app reaches a TCP service only through a CONNECT tunnel on the explicit-proxy listener
(route configuration ``http_proxy``, one virtual host ``HOST:PORT`` per TCP service port). The translator puts the
VirtualService ``tcp`` route's weighted destinations on that CONNECT route (``routes.connect_route``); unit tests
check the generated protos, this test checks that a real Envoy accepts that config (no NACK) and that tunnels
really go where the weights say: 100/0 -> all ``a``, then 0/100 -> all ``b``, then 50/50 (``weighted_clusters``
on the CONNECT route) -> both. A TLS service port reached the same way follows the ``tls`` route whose
``sniHosts`` cover the CONNECT host (the SNI is inside the tunnel). Nothing asserts elapsed time or a tight ratio.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from e2e_objects import destination_rule, workload_entry
from envoy_harness import Envoy, Harness, free_port, loopback_host, wait_until

from meshplane.store import GroupResource, MemoryStore
from meshplane.xds import SyncState, XdsServer
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy

NET = "networking.istio.io"
SE, WE = GroupResource(NET, "serviceentries"), GroupResource(NET, "workloadentries")
VS, DR = GroupResource(NET, "virtualservices"), GroupResource(NET, "destinationrules")
DB = "db.internal"
DB_PORT = 5432
PROXY_PORT = 15001  # the NONE-mode explicit-proxy listener (translate/listeners.py OUTBOUND_PORT)
IO_TIMEOUT = 5.0


@dataclass
class TcpBackend:
    """A TCP server answering every line it reads with ``NAME:`` + that line (so a reply says who answered)."""

    name: str
    host: str
    port: int = 0
    connections: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> TcpBackend:
        self.port = free_port(self.host)
        self.server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while line := await reader.readline():
                writer.write(self.name.encode() + b":" + line)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            if hasattr(server, "close_clients"):  # Python 3.13+: do not wait on tunnels Envoy keeps open
                server.close_clients()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)


@pytest.fixture
async def tcp_backends() -> AsyncIterator[dict[str, TcpBackend]]:
    backends: dict[str, TcpBackend] = {}
    try:
        for name in ("a", "b"):
            backends[name] = await TcpBackend(name, loopback_host()).start()
        yield backends
    finally:
        for b in backends.values():
            await b.stop()


async def _two_backend_service(store: MemoryStore, name: str, host: str, port: int, protocol: str,
                               backends: dict[str, TcpBackend]) -> None:
    """ServiceEntry ``host`` (its instances selected by ``app: NAME``), one WorkloadEntry per backend (label
    ``version``: the backend's name) and a DestinationRule with subsets ``a`` and ``b``."""
    port_name = protocol.lower()
    await store.create(SE, {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                            "metadata": {"name": name, "namespace": "default"},
                            "spec": {"hosts": [host], "ports": [{"number": port, "name": port_name,
                                                                 "protocol": protocol}],
                                     "location": "MESH_INTERNAL", "resolution": "STATIC",
                                     "workloadSelector": {"labels": {"app": name}}}}, actor="test")
    for backend in backends.values():
        await store.create(WE, workload_entry(f"{name}-{backend.name}", backend.host,
                                              {"app": name, "version": backend.name},
                                              ports={port_name: backend.port}), actor="test")
    await store.create(DR, destination_rule(name, host, subsets=[{"name": "a", "labels": {"version": "a"}},
                                                                 {"name": "b", "labels": {"version": "b"}}]),
                       actor="test")


def _tcp_split(weight_a: int, weight_b: int) -> dict[str, Any]:
    return {"hosts": [DB], "tcp": [{"route": [
        {"destination": {"host": DB, "subset": "a", "port": {"number": DB_PORT}}, "weight": weight_a},
        {"destination": {"host": DB, "subset": "b", "port": {"number": DB_PORT}}, "weight": weight_b},
    ]}]}


async def _set_split(store: MemoryStore, weight_a: int, weight_b: int) -> None:
    current = store.get(VS, "default", "db")
    if current is None:
        await store.create(VS, {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                "metadata": {"name": "db", "namespace": "default"},
                                "spec": _tcp_split(weight_a, weight_b)}, actor="test")
    else:
        await store.update(VS, {**current, "spec": _tcp_split(weight_a, weight_b)}, actor="test")


async def _synced(server: XdsServer, envoy: Envoy) -> None:
    """The proxy ACKed the latest push of every type, and never NACKed anything."""
    await server.wait_idle()

    async def check() -> bool:
        st = [s for s in server.proxy_status() if s.node_id == envoy.node_id]
        return bool(st) and len(st[0].types) >= 3 and st[0].state is SyncState.SYNCED

    await wait_until(check, what=f"{envoy.name} SYNCED")
    for t in next(s for s in server.proxy_status() if s.node_id == envoy.node_id).types:
        assert t.nacks == 0, f"{t.short_name} NACKed: {t.last_nack}"


async def _tunnel(envoy: Envoy, payload: bytes = b"ping", target: str = f"{DB}:{DB_PORT}") -> str:
    """One CONNECT tunnel through the sidecar to ``target`` (db.internal:5432); returns the backend's reply line."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(envoy.listen_host, PROXY_PORT), IO_TIMEOUT)
    try:
        authority = target.encode()
        writer.write(b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
        status_line = head.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 200"), f"CONNECT refused: {head!r}"
        writer.write(payload + b"\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), IO_TIMEOUT)
        assert reply.endswith(b":" + payload + b"\n"), f"unexpected tunnel reply {reply!r}"
        return reply.split(b":", 1)[0].decode()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _answers(envoy: Envoy, n: int, target: str = f"{DB}:{DB_PORT}") -> collections.Counter[str]:
    return collections.Counter([await _tunnel(envoy, f"req-{i}".encode(), target) for i in range(n)])


async def _all_from(envoy: Envoy, name: str, n: int = 5, target: str = f"{DB}:{DB_PORT}") -> bool:
    return (await _answers(envoy, n, target)) == collections.Counter({name: n})


async def _connect_route(envoy: Envoy) -> dict[str, Any]:
    """The ``route`` of the CONNECT route in the ``db.internal:5432`` virtual host of ``http_proxy``."""
    dump = await envoy.config_dump()
    for section in dump.get("configs", []):
        for rc in section.get("dynamic_route_configs", []):
            config = rc.get("route_config", {})
            if config.get("name") != "http_proxy":
                continue
            for vh in config.get("virtual_hosts", []):
                if vh.get("name") == f"{DB}:{DB_PORT}":
                    return dict(vh["routes"][0]["route"])
    raise AssertionError("no db.internal:5432 virtual host in Envoy's http_proxy route configuration")


async def test_connect_tunnel_follows_tcp_virtual_service_split(
        store: MemoryStore, harness: Harness, xds, tcp_backends: dict[str, TcpBackend]) -> None:  # type: ignore[no-untyped-def]
    a, b = tcp_backends["a"], tcp_backends["b"]
    await _two_backend_service(store, "db", DB, DB_PORT, "TCP", tcp_backends)
    await _set_split(store, 100, 0)

    server, address = await xds(DefaultTranslator())
    client = await harness.envoy("client", address, workload="client")  # NONE mode: the harness default
    await client.wait_cluster(f"outbound|{DB_PORT}|a|{DB}", [f"{a.host}:{a.port}"])
    await client.wait_cluster(f"outbound|{DB_PORT}|b|{DB}", [f"{b.host}:{b.port}"])
    await _synced(server, client)

    # 100 / 0: every tunnel lands on a.
    await wait_until(lambda: _all_from(client, "a"), what="CONNECT tunnels reach db-a")
    counts = await _answers(client, 20)
    assert counts == collections.Counter({"a": 20}), counts

    # 0 / 100: once Envoy has the new route, every new tunnel lands on b.
    await _set_split(store, 0, 100)
    await _synced(server, client)
    await wait_until(lambda: _all_from(client, "b"), timeout=20, what="CONNECT tunnels move to db-b")
    counts = await _answers(client, 20)
    assert counts == collections.Counter({"b": 20}), counts

    # 50 / 50: the CONNECT route carries weighted_clusters; Envoy accepts it and tunnels reach both backends.
    await _set_split(store, 50, 50)
    await _synced(server, client)

    async def weighted() -> bool:
        return "weighted_clusters" in await _connect_route(client)

    await wait_until(weighted, timeout=20, what="weighted_clusters on Envoy's CONNECT route")
    route = await _connect_route(client)
    assert sorted((c["name"], c["weight"]) for c in route["weighted_clusters"]["clusters"]) == [
        (f"outbound|{DB_PORT}|a|{DB}", 50), (f"outbound|{DB_PORT}|b|{DB}", 50)], route
    counts = await _answers(client, 100)
    assert set(counts) == {"a", "b"}, counts  # P(one side unseen) = 2 * 0.5**100
    assert a.connections > 0 and b.connections > 0


SECURE = "secure.internal"


def _tls_route(sni: str, subset: str) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "secure", "namespace": "default"},
            "spec": {"hosts": [SECURE], "tls": [{"match": [{"port": 443, "sniHosts": [sni]}], "route": [
                {"destination": {"host": SECURE, "subset": subset, "port": {"number": 443}}}]}]}}


async def test_connect_tunnel_to_a_tls_port_follows_the_tls_route_for_its_host(
        store: MemoryStore, harness: Harness, xds, tcp_backends: dict[str, TcpBackend]) -> None:  # type: ignore[no-untyped-def]
    """A TLS service port reached by CONNECT: the VirtualService ``tls`` route whose ``sniHosts`` name the CONNECT
    host decides the backend (the bytes in the tunnel are opaque to Envoy; the backends here echo lines)."""
    a, b = tcp_backends["a"], tcp_backends["b"]
    await _two_backend_service(store, "secure", SECURE, 443, "TLS", tcp_backends)
    await store.create(VS, _tls_route(SECURE, "b"), actor="test")
    server, address = await xds(DefaultTranslator())
    client = await harness.envoy("client", address, workload="client")
    await client.wait_cluster(f"outbound|443|a|{SECURE}", [f"{a.host}:{a.port}"])
    await client.wait_cluster(f"outbound|443|b|{SECURE}", [f"{b.host}:{b.port}"])
    await _synced(server, client)
    target = f"{SECURE}:443"
    await wait_until(lambda: _all_from(client, "b", target=target), what="tunnels follow the tls route to b")
    assert await _answers(client, 10, target) == collections.Counter({"b": 10})

    # The route now names the host by a wildcard and sends it to a.
    await store.update(VS, {**_tls_route("*.internal", "a"),
                            "metadata": store.get(VS, "default", "secure")["metadata"]}, actor="test")
    await _synced(server, client)
    await wait_until(lambda: _all_from(client, "a", target=target), timeout=20, what="tunnels move to a")
    assert await _answers(client, 10, target) == collections.Counter({"a": 10})
