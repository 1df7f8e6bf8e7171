"""``meshplane agent``: the process that runs next to one workload instance.

One loop, driven by a short tick, does everything in an order that keeps the mesh consistent:
Envoy is started from a bootstrap built here; once Envoy is LIVE (it has its first listeners and clusters, so it is
connected to xDS) the instance is registered as a WorkloadEntry; the readiness probe then keeps the entry's
Healthy condition current; a crashed Envoy is restarted with backoff. On SIGTERM the entry is deleted first, then
Envoy drains and stops. State is reported in a JSON status file the local runtime reads (``meshplane status``).

Zero trust (with ``ca`` in the config): before Envoy starts, the agent generates the workload key in memory, gets
its certificate from the CA with the bootstrap token and serves both over SDS on a Unix socket (``certs``); the
renewal loop runs beside the main loop. A gateway's agent also serves the TLS credentials its Gateways name
(``credentials``); a sidecar's agent reports Envoy's RBAC denies and dry-run denies to the audit (``authzlog``).
With ``dns`` the agent is its instance's resolver (``dns``): it follows the name table over its own NDS stream
and serves DNS on ``dns_address`` (and, for Envoy itself, upstream answers only on ``dns_proxy_address``); the
instance is ready only once the first table arrived. On ``status_port`` (Istio's 15020) the agent serves its own
Prometheus metrics, Envoy's merged in, and its readiness (``statusport``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from meshplane.agent.authzlog import AuthzLog
from meshplane.agent.bootstrap import EXTAUTHZ_CLUSTER, build_bootstrap
from meshplane.agent.certs import CertificateManager, remove_dir, socket_path, start_sds
from meshplane.agent.config import AgentConfig
from meshplane.agent.credentials import GatewayCredentials
from meshplane.agent.dns import DnsProxy
from meshplane.agent.envoy import EnvoyProcess, find_envoy
from meshplane.agent.health import ReadinessTracker, probe_once
from meshplane.agent.metrics import AgentMetrics
from meshplane.agent.opa import OpaPolicies
from meshplane.agent.procs import record_for, write_json_atomic, write_record
from meshplane.agent.registration import Registration
from meshplane.agent.statusport import StatusServer
from meshplane.agent.waits import pause
from meshplane.client import Client, ClientError
from meshplane.model.peer import peer_environment
from meshplane.model.proxy import Locality
from meshplane.rpc.ca_service import CaClient
from meshplane.rpc.extauthz import ExtAuthzServer
from meshplane.rpc.nds import NameTableClient
from meshplane.rpc.sds import SdsServer
from meshplane.security import SpiffeId

log = logging.getLogger("meshplane.agent")

TICK_S = 0.2
MAX_BACKOFF_S = 10.0


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.work = Path(cfg.work_dir) if cfg.work_dir else Path(tempfile.mkdtemp(prefix="meshplane-agent-"))
        self.status_path = Path(cfg.status_file) if cfg.status_file else self.work / "status.json"
        self.stop_event = asyncio.Event()
        self.tracker = ReadinessTracker(cfg.readiness)
        self.envoy_live = False
        self._last_status: dict[str, Any] = {}
        self.sds: SdsServer | None = None
        self.sds_path: Path | None = None
        self.certs: CertificateManager | None = None
        self.extauthz: ExtAuthzServer | None = None
        self.extauthz_path: Path | None = None
        self.opa: OpaPolicies | None = None
        self.authz_log: AuthzLog | None = None
        self._tmpdirs: list[Path] = []
        self.dns: DnsProxy | None = None
        self.dns_own: DnsProxy | None = None
        self.nds: NameTableClient | None = None
        self.metrics = AgentMetrics()
        self.status_server: StatusServer | None = None
        self._reg: Registration | None = None
        self.envoy = EnvoyProcess(
            find_envoy(cfg.envoy_path), self.work / "bootstrap.json", cfg.address, cfg.admin_port,
            self.work / "envoy.log", concurrency=cfg.concurrency, log_level=cfg.envoy_log_level,
            drain_s=cfg.drain_s, access_log_path=self.work / "access.log")

    def write_bootstrap(self) -> Path:
        cfg = self.cfg
        md = cfg.metadata()
        if self.extauthz_path is not None:
            md["OPA_EXTAUTHZ"] = EXTAUTHZ_CLUSTER  # translate.opa points ASMOPAPolicy checks at this cluster
        if self.authz_log is not None:
            md["AUTHZ_LOG"] = str(self.authz_log.path)  # translate.accesslog writes RBAC decisions there
        doc = build_bootstrap(cfg.node_id, md, Locality(cfg.region, cfg.zone, cfg.subzone), cfg.xds,
                              f"{cfg.address}:{cfg.admin_port}", delta=cfg.delta,
                              sds_socket=str(self.sds_path) if self.sds_path else None,
                              extauthz_socket=str(self.extauthz_path) if self.extauthz_path else None,
                              stats_address=f"{cfg.address}:{cfg.stats_port}" if cfg.stats_port else None,
                              trust_domain=cfg.trust_domain,
                              health_address=f"{cfg.address}:{cfg.health_port}" if cfg.health_port else None,
                              status_address=self.status_server.address if self.status_server else None)
        self.envoy.env = peer_environment(md)  # who this proxy is, in its metrics (translate.telemetry)
        self.work.mkdir(parents=True, exist_ok=True)
        path = self.work / "bootstrap.json"
        path.write_text(json.dumps(doc, indent=1))
        return path

    @property
    def probing(self) -> bool:
        r = self.cfg.readiness
        return bool(r.http_path or r.tcp) and not self.cfg.gateway

    def ready(self, reg: Registration | None) -> bool:
        return not self.not_ready(reg)

    def not_ready(self, reg: Registration | None) -> str:
        """Why the instance is not ready ("" when it is)."""
        if self.stop_event.is_set():
            return "the agent is stopping"
        if not (self.envoy_live and self.envoy.running()):
            return "Envoy is not LIVE (no listeners and clusters from the control plane yet)"
        if reg is not None and not reg.registered:
            return "the WorkloadEntry is not registered yet"
        if self.dns is not None and not self.dns.has_table:
            return "no DNS name table from the control plane yet"
        if self.probing and not self.tracker.ready:
            return f"the application's readiness probe fails: {self.tracker.message or 'no success yet'}"
        return ""

    async def start_status(self, session: aiohttp.ClientSession) -> None:
        """The status port (Istio's 15020): merged metrics and readiness; a taken port is logged, not fatal."""
        cfg = self.cfg
        if not cfg.status_port:
            return
        envoy_stats = f"http://{cfg.address}:{cfg.stats_port}/stats/prometheus" if cfg.stats_port else ""
        server = StatusServer(self.metrics, envoy_stats, session, lambda: self.not_ready(self._reg),
                              app_stats_url=cfg.app_metrics_url)
        if await server.start(cfg.address, cfg.status_port):
            self.status_server = server

    def report(self, reg: Registration | None, phase: str) -> None:
        status = {
            "phase": phase,
            "ready": self.ready(reg) and phase == "running",
            "envoyLive": self.envoy_live,
            "envoyPid": self.envoy.pid if self.envoy.running() else None,
            "envoyRestarts": self.envoy.restarts,
            "registered": reg.registered if reg else False,
            "appReady": self.tracker.ready if self.probing else None,
            "probeMessage": self.tracker.message if self.probing else "",
            "nodeId": self.cfg.node_id,
            "admin": f"http://{self.cfg.address}:{self.cfg.admin_port}",
            "statusPort": f"http://{self.status_server.address}" if self.status_server else "",
        }
        if self.certs is not None:
            status["certificate"] = self.certs.status()
        if self.dns is not None:
            status["dns"] = {"names": len(self.dns.names), "tableUpdates": self.nds.updates if self.nds else 0,
                             **self.dns.stats.view()}
        if status != self._last_status:
            self._last_status = status
            write_json_atomic(self.status_path, {**status, "time": time.time()})

    async def start_envoy(self) -> None:
        pid = await self.envoy.start()
        self.envoy_live = False
        if self.cfg.envoy_record:
            write_record(Path(self.cfg.envoy_record), record_for(pid, "envoy", self.cfg.name, group=False))

    async def start_security(self, api: Client) -> CaClient | None:
        """SDS on a local socket and the first certificate, before Envoy exists (its listeners then never wait)."""
        cfg = self.cfg
        if not cfg.ca:
            return None
        self.sds, self.sds_path, tmp = await start_sds(Path(cfg.sds_socket) if cfg.sds_socket
                                                       else self.work / "sds.sock")
        if tmp is not None:
            self._tmpdirs.append(tmp)
        client = CaClient(cfg.ca)

        async def bundle() -> bytes | None:
            return (await api.trust_bundle()).encode() or None

        identity = SpiffeId(cfg.trust_domain, cfg.namespace, cfg.service_account)
        self.certs = CertificateManager(identity, client, cfg.ca_token, self.sds, ttl_s=cfg.cert_ttl_s,
                                        bundle=bundle if cfg.api else None, bundle_poll_s=cfg.bundle_poll_s)
        self.report(None, "starting")
        await self.certs.obtain(self.stop_event)
        return client

    async def start_opa(self, api: Client) -> None:
        """The ext_authz server answering for the ASMOPAPolicies that select this workload (sidecars only)."""
        cfg = self.cfg
        if not (cfg.opa and cfg.api) or cfg.gateway:
            return
        self.opa = OpaPolicies(cfg, api, SpiffeId(cfg.trust_domain, cfg.namespace, cfg.service_account).uri)
        with contextlib.suppress(ClientError):
            await self.opa.refresh()  # the policies that exist already apply from the first request
        path, tmp = socket_path(Path(cfg.extauthz_socket) if cfg.extauthz_socket else self.work / "extauthz.sock")
        if tmp is not None:
            self._tmpdirs.append(tmp)
        self.extauthz = ExtAuthzServer(self.opa.decide, self.opa.on_deny)
        await self.extauthz.start(f"unix:{path}")
        self.extauthz_path = path

    async def start_dns(self, md: dict[str, Any]) -> asyncio.Task[None] | None:
        """The DNS proxy on its sockets and the NDS stream that feeds it (with ``dns``)."""
        cfg = self.cfg
        if not cfg.dns:
            return None
        upstream = _upstream(cfg.dns_upstream)
        self.dns = DnsProxy(cfg.namespace, upstream)
        self.metrics.watch_dns(self.dns)
        await self.dns.serve([a for a in cfg.dns_address.split(",") if a])
        if cfg.dns_proxy_address:
            self.dns_own = DnsProxy(cfg.namespace, upstream, mesh_names=False)
            await self.dns_own.serve([a for a in cfg.dns_proxy_address.split(",") if a])
        loc = {k: v for k, v in (("region", cfg.region), ("zone", cfg.zone), ("sub_zone", cfg.subzone)) if v}
        self.nds = NameTableClient(cfg.xds, cfg.node_id, f"{cfg.workload}.{cfg.namespace}", md, loc)
        return asyncio.create_task(self.nds.run(self.dns.set_table, self.stop_event))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.stop_event.set)
        connector = aiohttp.TCPConnector(limit=4)
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                return await self._run(session)
            finally:
                for d in self._tmpdirs:
                    remove_dir(d)

    async def _run(self, session: aiohttp.ClientSession) -> int:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        api = Client(cfg.api, token=cfg.api_token, timeout=3.0, session=session)
        ca_client = await self.start_security(api)
        background: list[asyncio.Task[None]] = []
        if self.certs is not None:
            background.append(asyncio.create_task(self.certs.run(self.stop_event)))
        if self.sds is not None and cfg.gateway and cfg.api and cfg.ca_token:
            creds = GatewayCredentials(cfg, api, self.sds)  # credentialName secrets over the local SDS
            with contextlib.suppress(ClientError):
                await creds.refresh()  # before Envoy: its HTTPS listeners need not wait for the first poll
            background.append(asyncio.create_task(creds.run(self.stop_event)))
        await self.start_opa(api)
        if self.opa is not None:
            background.append(asyncio.create_task(self.opa.run(self.stop_event)))
        if cfg.api and not cfg.gateway and cfg.ca_token:  # reports need the workload's identity (its token)
            identity = SpiffeId(cfg.trust_domain, cfg.namespace, cfg.service_account).uri
            self.authz_log = AuthzLog(cfg, api, self.work / "authz.log", identity)
            self.authz_log.prepare()
            authz_task = asyncio.create_task(self.authz_log.run(self.stop_event))
        await self.start_status(session)  # before the bootstrap: Envoy's 15021 forwards to it only if it is up
        self.write_bootstrap()
        dns_task = await self.start_dns(cfg.metadata())
        if dns_task is not None:
            background.append(dns_task)
        reg = Registration(cfg, api) if cfg.register and cfg.api else None
        self._reg = reg
        await self.start_envoy()
        backoff = 0.5
        restart_at: float | None = None
        next_probe = 0.0
        next_register = 0.0
        app_port = cfg.ports[0].app_port if cfg.ports else 0
        app_host = cfg.app_address or cfg.address
        self.report(reg, "starting")
        while not self.stop_event.is_set():
            now = loop.time()
            if not self.envoy.running():
                if restart_at is None:
                    log.warning("envoy exited with %s; restarting in %.1fs", self.envoy.proc and
                                self.envoy.proc.returncode, backoff)
                    self.envoy_live = False
                    restart_at = now + backoff
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
                elif now >= restart_at:
                    restart_at = None
                    self.envoy.restarts += 1
                    await self.start_envoy()
            elif not self.envoy_live:
                self.envoy_live = await self.envoy.state(session) == "LIVE"
                if self.envoy_live:
                    log.info("envoy is LIVE")
                    backoff = 0.5
            if self.probing and now >= next_probe and app_port:
                next_probe = now + cfg.readiness.period_s
                self.tracker.observe(await probe_once(cfg.readiness, app_host, app_port, session))
            if reg is not None and self.envoy_live and now >= next_register:
                try:
                    healthy = self.tracker.ready or not self.probing
                    if not reg.registered:
                        await reg.register(healthy)
                    else:
                        await reg.set_health(healthy, self.tracker.message)
                except ClientError as e:
                    log.warning("registration: %s", e)
                    next_register = now + 1.0
            self.report(reg, "running")
            await pause(self.stop_event, TICK_S)
        self.report(reg, "stopping")
        if reg is not None:
            try:
                await reg.deregister()
            except ClientError as e:
                log.warning("could not delete the WorkloadEntry: %s", e)
        await self.envoy.stop(session, drain=True)
        if self.authz_log is not None:
            await authz_task  # stop is set: it reports what Envoy wrote last, then ends
        for t in background:
            t.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if self.sds is not None:
            await self.sds.stop()
        if self.extauthz is not None:
            await self.extauthz.stop()
        if self.status_server is not None:
            await self.status_server.stop()
        for d in (self.dns, self.dns_own):
            if d is not None:
                await d.close()
        if ca_client is not None:
            await ca_client.close()
        self.report(reg, "stopped")
        return 0


def _upstream(raw: str) -> tuple[str, int] | None:
    """HOST:PORT, else the first nameserver of /etc/resolv.conf as this process sees it."""
    if raw:
        host, _, port = raw.rpartition(":")
        return host, int(port)
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolv.conf").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1], 53
    return None


def run(cfg: AgentConfig) -> int:
    return asyncio.run(Agent(cfg).run())
