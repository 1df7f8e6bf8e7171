"""A small zero-trust mesh for security e2e tests: a CA with its gRPC signing service, and sidecars whose
certificates come from that CA (key generated here, CSR signed over gRPC with a bootstrap token) and reach Envoy
over SDS on a Unix socket, as the agent will do.

Why a helper module: every security test needs the same chores (CA, tokens, SDS socket per workload, a bootstrap
with the ``sds-grpc`` cluster on that socket, service and workload entries with service accounts), and a teardown
that stops what it started (Envoys by PID through the harness, gRPC servers, socket directories).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e_objects import service_entry
from envoy_harness import Backend, Envoy, Harness, envoy_binary, loopback_host, sidecar_node_id, wait_until

from meshplane.agent import build_bootstrap
from meshplane.model.peer import peer_environment
from meshplane.rpc.ca_service import CaClient, CaServer, CaService
from meshplane.rpc.sds import SdsServer
from meshplane.security import AuditTrail, CertificateAuthority, TokenIssuer, WorkloadKey
from meshplane.store import GroupResource, MemoryStore
from meshplane.xds import SyncState, XdsServer

SEC = "security.istio.io"
NET = "networking.istio.io"
SE, WE, DR = (GroupResource(NET, "serviceentries"), GroupResource(NET, "workloadentries"),
              GroupResource(NET, "destinationrules"))
PA, AP, RA = (GroupResource(SEC, "peerauthentications"), GroupResource(SEC, "authorizationpolicies"),
              GroupResource(SEC, "requestauthentications"))
REVIEWS = "reviews.default.svc.cluster.local"


class SdsEnvoy(Envoy):
    """An Envoy whose bootstrap also has the ``sds-grpc`` cluster on a Unix socket (what the agent writes)."""

    sds_path: str = ""

    async def start(self) -> Envoy:
        self.admin = self.admin or f"{self.listen_host}:{_free(self.listen_host)}"
        self.stats_address = self.stats_address or f"{self.listen_host}:{_free(self.listen_host)}"
        bs = build_bootstrap(self.node_id, self.metadata, self.locality, self.xds_address, self.admin,
                             sds_socket=self.sds_path, stats_address=self.stats_address)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"{self.name}.json"
        config.write_text(json.dumps(bs))
        self.log_path = self.workdir / f"{self.name}.log"
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                envoy_binary(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
                "-l", "warning", "--drain-time-s", "1", "--parent-shutdown-time-s", "2",
                stdout=log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **peer_environment(self.metadata)})
        return self


def _free(host: str) -> int:
    from envoy_harness import free_port

    return free_port(host)


@dataclass
class Workload:
    name: str
    namespace: str
    service_account: str
    envoy: SdsEnvoy
    sds: SdsServer
    key: WorkloadKey
    backend: Backend | None
    chain: bytes = b""  # the certificate chain (PEM) it was last issued, leaf first


class SecurityMesh:
    def __init__(self, store: MemoryStore, harness: Harness, server: XdsServer, xds_address: str,
                 workdir: Path) -> None:
        self.store, self.h, self.server, self.xds_address = store, harness, server, xds_address
        self.ca = CertificateAuthority.load_or_create(workdir / "ca")
        self.tokens = TokenIssuer.load_or_create(workdir / "ca")
        self.audit = AuditTrail()
        self.ca_server = CaServer(CaService(self.ca, self.tokens, self.audit))
        self.ca_client: CaClient | None = None
        self.sockdir = Path(tempfile.mkdtemp(prefix="mp-sds-"))  # short: Unix socket paths are limited to 108 B
        self.sds_servers: list[SdsServer] = []
        self.workloads: dict[str, Workload] = {}
        self.ttl_s = 3600

    async def start(self) -> SecurityMesh:
        port = await self.ca_server.start("127.0.0.1:0")
        self.ca_client = CaClient(f"127.0.0.1:{port}")
        return self

    async def close(self) -> None:
        for s in self.sds_servers:
            await s.stop()
        if self.ca_client is not None:
            await self.ca_client.close()
        await self.ca_server.stop()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    async def issue(self, w: Workload, service_account: str | None = None) -> dict[str, int]:
        """Get ``w`` a certificate (for ``service_account`` if given: an impostor) and push it over SDS."""
        assert self.ca_client is not None
        sa = service_account or w.service_account
        key = WorkloadKey(self.ca.identity(w.namespace, sa))
        token = self.tokens.issue(w.namespace, sa)
        chain, bundle = await self.ca_client.create_certificate(key.csr_pem(), token, self.ttl_s)
        assert key.public_key_matches(chain)
        w.key, w.chain = key, chain
        return w.sds.update(cert_chain_pem=chain, private_key_pem=key.private_key_pem(), trust_bundle_pem=bundle)

    async def workload(self, name: str, *, namespace: str = "default", service_account: str | None = None,
                       serve: bool = True, labels: dict[str, str] | None = None,
                       ports: dict[int, int] | None = None) -> Workload:
        """``ports``: service port -> workload port (the sidecar's inbound port), default {80: 8080}; every
        workload port forwards to the one backend."""
        sa = service_account or name
        ports = ports or {80: 8080}
        sds = SdsServer()
        path = str(self.sockdir / f"{name}.sock")
        await sds.start(f"unix:{path}")
        self.sds_servers.append(sds)
        backend = await self.h.backend(name) if serve else None
        host = loopback_host()
        md: dict[str, Any] = {"NAMESPACE": namespace, "WORKLOAD_NAME": name,
                              "LABELS": {"app": name, **(labels or {})}, "INSTANCE_IPS": host, "CLUSTER_ID": "local",
                              "SERVICE_ACCOUNT": sa}
        if backend is not None:
            md.update({"INBOUND_PORTS": ",".join(f"http-{sp}:{wp}={backend.port}" for sp, wp in ports.items()),
                       "APP_ADDRESS": backend.host})
        envoy = SdsEnvoy(name, sidecar_node_id(host, name, namespace), md, self.xds_address, self.h.workdir,
                         listen_host=host)
        envoy.sds_path = path
        w = Workload(name, namespace, sa, envoy, sds, WorkloadKey(self.ca.identity(namespace, sa)), backend)
        await self.issue(w)
        self.h.envoys.append(envoy)
        await envoy.start()
        await envoy.wait_ready()
        self.workloads[name] = w
        if backend is not None:
            await self.store.create(WE, {
                "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"address": host, "labels": {"app": name, "security.istio.io/tlsMode": "istio"},
                         "ports": {f"http-{sp}": wp for sp, wp in ports.items()}, "serviceAccount": sa}},
                actor="test")
            se = service_entry(name, f"{name}.{namespace}.svc.cluster.local", namespace=namespace,
                               selector={"app": name})
            se["spec"]["ports"] = [{"number": sp, "name": f"http-{sp}", "protocol": "HTTP"} for sp in ports]
            await self.store.create(SE, se, actor="test")
            # One request per connection: every request makes a new TLS handshake with the current certificates.
            await self.store.create(DR, {
                "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"host": f"{name}.{namespace}.svc.cluster.local", "trafficPolicy": {
                    "connectionPool": {"http": {"maxRequestsPerConnection": 1}}}}}, actor="test")
        return w

    async def apply(self, gr: GroupResource, kind: str, name: str, spec: dict[str, Any], *,
                    namespace: str = "default", annotations: dict[str, str] | None = None) -> None:
        md: dict[str, Any] = {"name": name, "namespace": namespace}
        if annotations:
            md["annotations"] = annotations
        group = "security.istio.io/v1" if gr.group == SEC else "networking.istio.io/v1"
        await self.store.create(gr, {"apiVersion": group, "kind": kind, "metadata": md, "spec": spec}, actor="test")

    async def synced(self) -> None:
        await self.server.wait_idle()
        for w in self.workloads.values():
            async def check(node: str = w.envoy.node_id) -> bool:
                st = [s for s in self.server.proxy_status() if s.node_id == node]
                return bool(st) and len(st[0].types) >= 3 and st[0].state is SyncState.SYNCED

            await wait_until(check, what=f"{w.name} SYNCED")
            for t in next(s for s in self.server.proxy_status() if s.node_id == w.envoy.node_id).types:
                assert t.nacks == 0, f"{w.name} {t.short_name} NACKed: {t.last_nack}"

    async def call(self, client: str, path: str = "/", *, host: str = REVIEWS, method: str = "GET",
                   headers: dict[str, str] | None = None) -> int:
        """Status of a request from ``client``'s app through its sidecar (explicit proxy) to ``host``."""
        e = self.workloads[client].envoy
        status, _, _ = await self.h.get(f"http://{e.listen_host}:15001{path}", host=host, headers=headers,
                                        method=method)
        return status

    async def plaintext(self, server: str, path: str = "/", *, port: int = 8080,
                        headers: dict[str, str] | None = None) -> int:
        """Status of a plaintext request straight to ``server``'s inbound ``port`` (0: connection refused/reset)."""
        e = self.workloads[server].envoy
        try:
            status, _, _ = await self.h.get(f"http://{e.listen_host}:{port}{path}", headers=headers)
            return status
        except Exception:
            return 0

    async def eventually(self, client: str, path: str, want: int, **kw: Any) -> None:
        async def check() -> bool:
            return await self.call(client, path, **kw) == want

        await wait_until(check, what=f"{client} {path} -> {want}")

