"""The agent's zero-trust parts without processes: the bootstrap's local clusters, the WorkloadEntry label for auto
mTLS, socket paths that fit, and certificate issuance and renewal against an in-process CA over real gRPC and SDS
(loopback TCP; the agent itself uses a Unix socket)."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

from meshplane.agent.bootstrap import AGENT_CLUSTER, EXTAUTHZ_CLUSTER, SDS_CLUSTER, build_bootstrap
from meshplane.agent.certs import CertificateManager, socket_path
from meshplane.agent.config import AgentConfig
from meshplane.agent.registration import TLS_MODE_LABEL, workload_entry
from meshplane.model.proxy import Locality
from meshplane.rpc.ca_service import CaClient, CaServer, CaService
from meshplane.rpc.sds import SdsServer
from meshplane.security import AuditTrail, CertificateAuthority, SpiffeId, TokenIssuer


def _clusters(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    static = doc["static_resources"]
    assert isinstance(static, dict)
    return {c["name"]: c for c in static["clusters"]}


def test_bootstrap_adds_local_clusters_only_when_asked() -> None:
    plain = build_bootstrap("sidecar~127.0.0.2~a.default~default.svc.cluster.local", {}, Locality(),
                            "127.0.0.1:15010", "127.0.0.2:15000")
    assert set(_clusters(plain)) == {"xds-grpc"}
    doc = build_bootstrap("sidecar~127.0.0.2~a.default~default.svc.cluster.local", {}, Locality(),
                          "127.0.0.1:15010", "127.0.0.2:15000", sds_socket="/tmp/x/sds.sock",
                          extauthz_socket="/tmp/x/ea.sock")
    clusters = _clusters(doc)
    assert set(clusters) == {"xds-grpc", SDS_CLUSTER, EXTAUTHZ_CLUSTER}
    assert "'pipe': {'path': '/tmp/x/sds.sock'}" in str(clusters[SDS_CLUSTER]["load_assignment"])
    # Without an SDS source the node says so (no auto mTLS offered to it); with one, nothing is added.
    assert plain["node"]["metadata"]["SDS"] == "false"  # type: ignore[index]
    assert "SDS" not in doc["node"]["metadata"]  # type: ignore[index]


def test_health_port_routes_readiness_to_the_agents_status_port() -> None:
    node = "sidecar~127.0.0.2~a.default~default.svc.cluster.local"
    plain = build_bootstrap(node, {}, Locality(), "127.0.0.1:15010", "127.0.0.2:15000")
    assert plain["static_resources"]["listeners"] == []  # type: ignore[index]
    doc = build_bootstrap(node, {}, Locality(), "127.0.0.1:15010", "127.0.0.2:15000",
                          health_address="127.0.0.2:15021", status_address="127.0.0.2:15020")
    [health] = doc["static_resources"]["listeners"]  # type: ignore[index]
    assert health["address"] == {"socket_address": {"address": "127.0.0.2", "port_value": 15021}}
    routes = health["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["match"] == {"path": "/healthz/ready"} and routes[0]["route"]["cluster"] == AGENT_CLUSTER
    assert routes[1]["direct_response"] == {"status": 404}
    agent = _clusters(doc)[AGENT_CLUSTER]
    assert "'port_value': 15020" in str(agent["load_assignment"])
    # No status port: nothing to answer readiness, so no health listener either.
    none = build_bootstrap(node, {}, Locality(), "127.0.0.1:15010", "127.0.0.2:15000",
                           health_address="127.0.0.2:15021")
    assert none["static_resources"]["listeners"] == []  # type: ignore[index]


def test_workload_entry_is_labelled_for_auto_mtls_only_with_a_ca() -> None:
    base = {"name": "a-0", "namespace": "default", "workload": "a", "address": "127.0.0.2", "xds": "127.0.0.1:1"}
    assert TLS_MODE_LABEL not in workload_entry(AgentConfig.from_json(base))["spec"]["labels"]
    cfg = AgentConfig.from_json({**base, "ca": "127.0.0.1:15012", "ca_token": "t"})
    assert workload_entry(cfg)["spec"]["labels"][TLS_MODE_LABEL] == "istio"


def test_socket_path_falls_back_to_a_short_private_directory(tmp_path: Path) -> None:
    short, tmp = socket_path(tmp_path / "sds.sock")
    assert short == tmp_path / "sds.sock" and tmp is None
    long, tmp = socket_path(tmp_path / ("d" * 120) / "sds.sock")
    assert tmp is not None and long.parent == tmp and len(str(long)) < 100
    assert tmp.stat().st_mode & 0o077 == 0
    tmp.rmdir()


async def test_certificates_are_issued_renewed_and_never_show_the_key(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    tokens = TokenIssuer.load_or_create(tmp_path / "ca")
    audit = AuditTrail()
    server = CaServer(CaService(ca, tokens, audit))
    port = await server.start("127.0.0.1:0")
    client = CaClient(f"127.0.0.1:{port}")
    sds = SdsServer()
    identity = SpiffeId("cluster.local", "default", "web")
    mgr = CertificateManager(identity, client, tokens.issue("default", "web"), sds, ttl_s=2)
    stop = asyncio.Event()
    try:
        assert await mgr.obtain(stop)
        first = mgr.serial
        assert mgr.not_after is not None and mgr.renew_at is not None
        assert mgr.renew_at < mgr.not_after
        assert mgr.renew_at > datetime.datetime.now(datetime.UTC)  # not overdue despite the CA's backdating
        task = asyncio.create_task(mgr.run(stop))
        for _ in range(200):
            if mgr.issued >= 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
        assert mgr.issued >= 2 and mgr.serial != first
        status = str(mgr.status()) + repr(mgr) + repr(sds)
        assert "PRIVATE" not in status and identity.uri in status
        assert [e.subject for e in audit.events(kind="certificate.issued")][:2] == [identity.uri] * 2
    finally:
        await client.close()
        await server.stop()


async def test_a_token_for_another_identity_gets_no_certificate(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    tokens = TokenIssuer.load_or_create(tmp_path / "ca")
    server = CaServer(CaService(ca, tokens, AuditTrail()))
    port = await server.start("127.0.0.1:0")
    client = CaClient(f"127.0.0.1:{port}")
    mgr = CertificateManager(SpiffeId("cluster.local", "default", "web"), client, tokens.issue("default", "db"),
                             SdsServer())
    try:
        assert not await mgr._try_issue()
        assert mgr.failures == 1 and "sa/db" in mgr.last_error and mgr.serial == ""
    finally:
        await client.close()
        await server.stop()
