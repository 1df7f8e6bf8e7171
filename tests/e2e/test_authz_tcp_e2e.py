"""Istio's "TCP traffic authorization" task on real Envoys: AuthorizationPolicy on a TCP workload's ports.

What is real: meshplane's xDS server with the real ``DefaultTranslator``, the CA signing both workloads'
certificates (served over SDS), two Envoy sidecars in NONE mode, and TCP end to end. ``sleep`` (no inbound port)
opens a CONNECT tunnel through its sidecar to ``tcp-echo.foo.svc.cluster.local:PORT``; its sidecar reaches the
tcp-echo sidecar's inbound TCP listener over mTLS (mesh-wide STRICT); that forwards to a small echo server (Istio's
tcp-echo: it answers ``hello <line>``). The three policies are Istio's task YAML, unchanged (tests/data/authz-tcp).

Why: before network RBAC on inbound TCP chains, every one of these policies let all traffic through. Istio's
documented outcomes: ALLOW ports 9000, 9001 -> those echo, 9002 is refused; ALLOW with ``methods: [GET]`` (an
HTTP-only field) -> the rule matches nothing, so 9000 and 9001 are refused; DENY with ``methods: [GET]`` on port
9000 -> the HTTP-only field is ignored and the rule denies 9000, 9001 still echoes. A refused connection is closed
by the server's sidecar after the first bytes: the client reads no echo.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_harness import Harness, loopback_host, sidecar_node_id, wait_until
from security_mesh import AP, PA, SE, WE, SdsEnvoy, SecurityMesh, Workload

from meshplane.rpc.sds import SdsServer
from meshplane.security import WorkloadKey
from meshplane.store import MemoryStore
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy

DATA = Path(__file__).resolve().parents[1] / "data" / "authz-tcp"
NS = "foo"
ECHO = f"tcp-echo.{NS}.svc.cluster.local"
PORTS = (9000, 9001, 9002)
IO_TIMEOUT = 5.0


class EchoServers:
    """Istio's tcp-echo: on each port, every line read is answered with ``hello <line>``."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.servers: dict[int, asyncio.Server] = {}

    async def start(self, ports: int) -> dict[int, int]:
        out: dict[int, int] = {}
        for i in range(ports):
            server = await asyncio.start_server(self._serve, self.host, 0)
            port = int(server.sockets[0].getsockname()[1])
            self.servers[port] = server
            out[i] = port
        return out

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(b"hello " + line)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        for server in self.servers.values():
            server.close()
            if hasattr(server, "close_clients"):
                server.close_clients()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)


@pytest.fixture
async def sec(store: MemoryStore, harness: Harness, xds, tmp_path: Path) -> AsyncIterator[SecurityMesh]:  # type: ignore[no-untyped-def]
    server, address = await xds(DefaultTranslator())
    m = await SecurityMesh(store, harness, server, address, tmp_path).start()
    await m.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, namespace="istio-system")
    yield m
    await m.close()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServers]:
    servers = EchoServers(loopback_host())
    yield servers
    await servers.stop()


async def _tcp_echo(sec: SecurityMesh, echo: EchoServers) -> Workload:
    """The tcp-echo workload: its sidecar's inbound TCP ports 9000-9002 forward to the echo servers, and a
    ServiceEntry ``tcp-echo.foo`` with those three TCP ports selects its WorkloadEntry."""
    app_ports = await echo.start(len(PORTS))
    name, sa = "tcp-echo", "tcp-echo"
    sds = SdsServer()
    path = str(sec.sockdir / f"{name}.sock")
    await sds.start(f"unix:{path}")
    sec.sds_servers.append(sds)
    host = loopback_host()
    inbound = ",".join(f"tcp-{p}:{p}/TCP={app_ports[i]}" for i, p in enumerate(PORTS))
    md: dict[str, Any] = {"NAMESPACE": NS, "WORKLOAD_NAME": name, "LABELS": {"app": name}, "INSTANCE_IPS": host,
                          "CLUSTER_ID": "local", "SERVICE_ACCOUNT": sa, "INBOUND_PORTS": inbound,
                          "APP_ADDRESS": echo.host}
    envoy = SdsEnvoy(name, sidecar_node_id(host, name, NS), md, sec.xds_address, sec.h.workdir, listen_host=host)
    envoy.sds_path = path
    w = Workload(name, NS, sa, envoy, sds, WorkloadKey(sec.ca.identity(NS, sa)), None)
    await sec.issue(w)
    sec.h.envoys.append(envoy)
    await envoy.start()
    await envoy.wait_ready()
    sec.workloads[name] = w
    await sec.store.create(WE, {
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry", "metadata": {"name": name, "namespace": NS},
        "spec": {"address": host, "labels": {"app": name, "security.istio.io/tlsMode": "istio"},
                 "ports": {f"tcp-{p}": p for p in PORTS}, "serviceAccount": sa}}, actor="test")
    await sec.store.create(SE, {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": name, "namespace": NS},
        "spec": {"hosts": [ECHO], "location": "MESH_INTERNAL", "resolution": "STATIC",
                 "ports": [{"number": p, "name": f"tcp-{p}", "protocol": "TCP"} for p in PORTS],
                 "workloadSelector": {"labels": {"app": name}}}}, actor="test")
    return w


async def _send(sec: SecurityMesh, port: int, message: str) -> str:
    """``echo MESSAGE | nc tcp-echo PORT`` from sleep, through its sidecar: the reply line, "" when the connection
    was refused or closed without an answer."""
    e = sec.workloads["sleep"].envoy
    reader, writer = await asyncio.wait_for(asyncio.open_connection(e.listen_host, 15001), IO_TIMEOUT)
    try:
        authority = f"{ECHO}:{port}".encode()
        writer.write(b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
        if not head.startswith(b"HTTP/1.1 200"):
            return ""
        writer.write(message.encode() + b"\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), IO_TIMEOUT)).decode().strip()
    except (ConnectionError, asyncio.IncompleteReadError):
        return ""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _apply(sec: SecurityMesh, filename: str) -> None:
    """``kubectl apply -f`` of one of the task's policies (they all are ``foo/tcp-policy``)."""
    doc = yaml.safe_load((DATA / filename).read_text())
    md = doc["metadata"]
    current = sec.store.get(AP, md["namespace"], md["name"])
    if current is None:
        await sec.store.create(AP, doc, actor="test")
    else:
        await sec.store.update(AP, {**doc, "metadata": {**current["metadata"], **md}}, actor="test")
    await sec.synced()


async def _expect(sec: SecurityMesh, want: dict[int, bool], rounds: int = 3) -> None:
    """Each port echoes (True) or is refused (False) in ``rounds`` consecutive rounds, once the policy reached the
    sidecar (a refusal must be the policy's, not a one-off connection failure)."""
    async def check() -> bool:
        for _ in range(rounds):
            got = {p: await _send(sec, p, f"port {p}") == f"hello port {p}" for p in want}
            if got != want:
                return False
        return True

    await wait_until(check, what=f"ports echo {want}")


async def test_tcp_traffic_authorization_task(sec: SecurityMesh, echo: EchoServers) -> None:
    await _tcp_echo(sec, echo)
    await sec.workload("sleep", namespace=NS, serve=False)
    await sec.synced()
    await _expect(sec, {9000: True, 9001: True, 9002: True})  # no policy: everything echoes

    await _apply(sec, "allow-ports.yaml")
    await _expect(sec, {9000: True, 9001: True, 9002: False})

    await _apply(sec, "allow-methods.yaml")  # HTTP-only field in ALLOW: the rule matches nothing
    await _expect(sec, {9000: False, 9001: False, 9002: False})

    await _apply(sec, "deny-methods.yaml")  # HTTP-only field in DENY: ignored, the rule denies port 9000
    await _expect(sec, {9000: False, 9001: True, 9002: True})

    # The refusals are the network RBAC filter's, as Envoy counts them.
    stats = await sec.workloads["tcp-echo"].envoy.stats("tcp.rbac")
    assert sum(v for k, v in stats.items() if k.endswith("rbac.denied")) >= 3, stats


async def test_istio_tcp_metrics_count_connections_and_bytes(sec: SecurityMesh, echo: EchoServers) -> None:
    """Istio's TCP metrics at the destination: opened and closed connections, bytes each way, with the caller's
    SPIFFE id (TCP carries no peer headers) and ``mutual_tls``."""
    import aiohttp

    from tests.support.promtext import samples

    await _tcp_echo(sec, echo)
    await sec.workload("sleep", namespace=NS, serve=False)
    await sec.synced()
    await _expect(sec, {9001: True}, rounds=1)
    address = sec.workloads["tcp-echo"].envoy.stats_address

    async def counters() -> dict[str, float]:
        async with aiohttp.ClientSession() as s, s.get(f"http://{address}/stats/prometheus") as r:
            text = await r.text()
        out: dict[str, float] = {}
        for (name, lbls), v in samples(text).items():
            labels = dict(lbls)
            if name.startswith("istio_tcp_") and labels.get("destination_service") == ECHO:
                assert labels["reporter"] == "destination" and labels["request_protocol"] == "tcp", labels
                assert labels["connection_security_policy"] == "mutual_tls", labels
                assert labels["source_principal"] == f"spiffe://cluster.local/ns/{NS}/sa/sleep", labels
                assert labels["destination_workload"] == "tcp-echo", labels
                out[name] = out.get(name, 0.0) + v
        return out

    async def settled() -> bool:  # the warm-up connection has closed and been counted
        c = await counters()
        return c.get("istio_tcp_connections_opened_total", 0) == c.get("istio_tcp_connections_closed_total", -1)

    await wait_until(settled, what="warm-up connections counted")
    before = await counters()
    k = 5
    for i in range(k):
        assert await _send(sec, 9001, f"m{i}") == f"hello m{i}"

    def delta(c: dict[str, float], name: str) -> float:
        return c.get(name, 0.0) - before.get(name, 0.0)

    async def counted() -> bool:
        c = await counters()
        return delta(c, "istio_tcp_connections_closed_total") == k

    await wait_until(counted, what=f"{k} closed connections counted")
    c = await counters()
    assert delta(c, "istio_tcp_connections_opened_total") == k
    assert delta(c, "istio_tcp_received_bytes_total") == k * len("m0\n")
    assert delta(c, "istio_tcp_sent_bytes_total") == k * len("hello m0\n")
