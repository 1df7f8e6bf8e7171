"""Composition of the control plane process: the store, the Kubernetes-compatible API and (when enabled) xDS.

This is the only place that wires the layers together; every component takes its settings explicitly from here.
The server writes ``server.json`` into its data dir (mode 0600) so ``meshplane kubeconfig`` and other local
commands find the running API without being told where it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import gc
import ipaddress
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from meshplane import __version__
from meshplane.api.kinds import default_registry
from meshplane.apiserver.app import ApiServer, ApiServerSettings, serve
from meshplane.cli.analyze_api import analyze_routes, store_view, xds_view
from meshplane.cli.meshconfig_sync import MeshConfigFileError, MeshConfigSync
from meshplane.cli.security_api import security_routes
from meshplane.cli.trace_api import trace_routes
from meshplane.console import MetricsScraper, ScraperSettings, Target, console_routes
from meshplane.console.topology import Workload
from meshplane.jwks import JwksResolver, JwksSettings
from meshplane.kube import KubeSourceFactory, SourceSettings
from meshplane.lanes import LanesController
from meshplane.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from meshplane.metrics import ControlPlaneMetrics
from meshplane.multicluster import MemberClusterController
from meshplane.rpc import AddressInUse
from meshplane.rpc.ca_service import SecurityPlane
from meshplane.rpc.otlp import OtlpCollector, SpanStore
from meshplane.statuswriter import StatusWriter, WriterSettings
from meshplane.store.etcd import EtcdStore, parse_etcd_url
from meshplane.store.etcd.election import LeaderElection
from meshplane.store.interface import Store
from meshplane.store.sqlite import SqliteStore
from meshplane.translate import MeshSettings
from meshplane.xds.default_translator import DefaultTranslator
from meshplane.xds.filterstatus import EnvoyFilterStatus, rejection_messages
from meshplane.xds.server import XdsServer
from meshplane.xds.settings import XdsSettings
from meshplane.xds.status import ProxyStatus

log = logging.getLogger("meshplane.server")

STATE_FILE = "server.json"


class ServerConfigError(Exception):
    """The server was asked to start in a way that is unsafe or impossible; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class ServerOptions:
    data_dir: Path
    api_host: str
    api_port: int
    xds_host: str | None = "127.0.0.1"  # None: no xDS server
    xds_port: int = 15010
    debounce_quiet: float = 0.1
    debounce_max: float = 1.0
    tokens: dict[str, str] | None = None  # token -> user
    history_limit: int = 100_000  # watch events kept for resuming watches
    audit_limit: int = 100_000  # audit records kept (the newest); 0 = every record
    # Zero trust: the CA (under data_dir/ca) and its signing service; ca_host None: no CA, no signing service.
    ca_host: str | None = None
    ca_port: int = 15012
    trust_domain: str = "cluster.local"
    ca_root_cert: Path | None = None  # a plugged-in root shared by several control planes
    ca_root_key: Path | None = None
    cert_ttl_s: int = 24 * 3600  # the longest workload certificate the CA signs
    # Inbound listeners without a PeerAuthentication accept mTLS and plaintext (PERMISSIVE, Istio's default).
    # Only for proxies that get certificates over SDS (the agent with a CA), hence off unless asked for.
    inbound_mtls: bool = False
    # Mesh-wide locality load balancing (same zone first, failover by priority, with a default passive health
    # check): on by default, as ASM offers same-zone routing out of the box. See docs/multicluster.md.
    locality_lb: bool = True
    # RequestAuthentication jwksUri keys, fetched by the control plane (meshplane.jwks): the CA bundle https servers
    # are verified against (None: the system's) and how often keys are fetched again (istiod's default, 20 min).
    jwks_ca_bundle: Path | None = None
    jwks_refresh_s: float = 20 * 60.0
    # Istio's MeshConfig (YAML), published as ConfigMap istio-system/istio and followed (cli.meshconfig_sync).
    mesh_config: Path | None = None
    # The OTLP/gRPC trace collector (rpc.otlp), the built-in tracing provider ``meshplane``; None: none.
    otlp_host: str | None = None
    otlp_port: int = 15011
    trace_limit: int = 10_000  # spans kept in memory
    # The console's topology reads every connected (loopback) proxy's :15090 while someone looks (meshplane.console);
    # also those in these networks (CIDRs): the local runtime's network namespaces of a transparent mesh.
    console_scrape: bool = True
    console_scrape_networks: tuple[str, ...] = ()
    # The store: None is SQLite in data_dir; ``etcd://host:port[,host:port...][/prefix]`` is etcd, shared by every
    # replica given the same URL (docs/ha.md), with optional TLS client credentials.
    store_url: str | None = None
    etcd_cacert: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    replica_id: str = ""  # this replica's name in leader election (default: host name and pid)
    ca_dir: Path | None = None  # where the CA's key material lives (default data_dir/ca); replicas share it
    # Every Istio/ASM object's status: a Reconciled condition and the analyzers' messages (meshplane.statuswriter).
    write_status: bool = True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_addr(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError as e:
        raise ServerConfigError(f"invalid address {text!r}: port must be a number") from e


def read_token_file(path: Path) -> dict[str, str]:
    """Kubernetes' static token file format: ``token,user[,uid[,"groups"]]`` per line."""
    tokens: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ServerConfigError(f"{path}:{n}: expected 'token,user', got {line[:20]!r}...")
        tokens[parts[0]] = parts[1]
    if not tokens:
        raise ServerConfigError(f"{path}: no tokens in the token file")
    return tokens


def check_safe(opts: ServerOptions) -> None:
    hosts = [opts.api_host] + [h for h in (opts.xds_host, opts.ca_host, opts.otlp_host) if h]
    exposed = [h for h in hosts if not is_loopback(h)]
    if exposed and not opts.tokens:
        raise ServerConfigError(
            f"refusing to serve on non-loopback address {exposed[0]} without authentication: "
            "pass --token-file FILE (lines 'token,user') or bind to 127.0.0.1"
        )


async def run_server(opts: ServerOptions, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT. Writes the state file once the API answers. A gRPC address (xDS, CA, OTLP)
    another process listens on is a ServerConfigError naming it: the server does not start."""
    try:
        await _run_server(opts, ready=ready)
    except AddressInUse as e:
        raise ServerConfigError(str(e)) from e


async def _run_server(opts: ServerOptions, *, ready: asyncio.Event | None) -> None:
    check_safe(opts)
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    store = _open_store(opts)
    await store.start()
    metrics = ControlPlaneMetrics()
    metrics.watch_store_writes(lambda: store.committed_writes)
    _tune_gc()
    replica = opts.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    election = LeaderElection(store.client, "controllers", replica) if isinstance(store, EtcdStore) else None
    members: MemberClusterController | None = None
    singletons = _Singletons(store, lambda: members)
    if election is None:
        await singletons.elected()
    else:
        election.start(singletons.elected, singletons.lost)
    xds: XdsServer | None = None
    filter_status: EnvoyFilterStatus | None = None
    mesh_sync: MeshConfigSync | None = None
    xds_url = ""
    security: SecurityPlane | None = None
    ca_url = ""
    if opts.ca_host is not None:
        ca_dir = opts.ca_dir or opts.data_dir / "ca"
        if election is not None:
            await _wait_for_ca(ca_dir, election, opts.ca_root_cert is not None)
        security = SecurityPlane.load_or_create(
            ca_dir, opts.trust_domain, root_cert_file=opts.ca_root_cert,
            root_key_file=opts.ca_root_key, max_ttl=datetime.timedelta(seconds=opts.cert_ttl_s))
        ca_port = await security.start(f"{_url_host(opts.ca_host)}:{opts.ca_port}")
        ca_url = f"{_url_host(opts.ca_host)}:{ca_port}"
        log.info("certificate signing service on %s (trust domain %s)", ca_url, opts.trust_domain)
    jwks: JwksResolver | None = None
    collector: OtlpCollector | None = None
    otlp_url = ""
    if opts.otlp_host is not None:
        collector = OtlpCollector(SpanStore(opts.trace_limit))
        otlp_port = await collector.start(f"{_url_host(opts.otlp_host)}:{opts.otlp_port}")
        otlp_url = f"{_url_host(opts.otlp_host)}:{otlp_port}"
        log.info("OTLP trace collector on %s", otlp_url)
    if opts.xds_host is not None:
        mesh = MeshSettings(trust_domain=opts.trust_domain, inbound_mtls=opts.inbound_mtls,
                            locality_lb_enabled=opts.locality_lb, tracing_collector=otlp_url)
        if opts.jwks_ca_bundle is not None and not opts.jwks_ca_bundle.is_file():
            raise ServerConfigError(f"--jwks-ca-bundle: {opts.jwks_ca_bundle} is not a file")
        jwks = resolver = JwksResolver(store, JwksSettings(refresh_interval=opts.jwks_refresh_s,
                                                          ca_bundle=opts.jwks_ca_bundle))
        metrics.watch_jwks_fetch_failures(resolver.failures)
        translator = DefaultTranslator(mesh, jwks=resolver.jwks)
        xds = XdsServer(store, XdsSettings(debounce_quiet=opts.debounce_quiet, debounce_max=opts.debounce_max,
                                           translator=translator, metrics=metrics))
        resolver.on_change = xds.config_changed  # new keys: a full push
        singletons.settled = xds.wait_idle  # lane changes go on to the next phase once proxies have the last one
        mesh_sync = MeshConfigSync(store, mesh, _mesh_applier(translator, xds), file=opts.mesh_config)
        try:
            await mesh_sync.start()  # before the first push context: proxies start with the mesh config's settings
        except MeshConfigFileError as e:
            raise ServerConfigError(str(e)) from e
        xds_port = await xds.start(f"{_url_host(opts.xds_host)}:{opts.xds_port}")
        filter_status = EnvoyFilterStatus(store, xds)
        await singletons.set_filter_status(filter_status)  # the leader's; with replicas it speaks for its proxies
        await resolver.start()
        xds_url = f"{_url_host(opts.xds_host)}:{xds_port}"
        log.info("xDS serving on %s", xds_url)
    elif opts.mesh_config is not None:
        raise ServerConfigError("--mesh-config needs the xDS server (it configures translation)")
    if xds is not None:
        # Each member's requests time out after 10 s; failures back off up to 15 s. Every replica runs the
        # sources (its own proxies need the endpoints); only the leader writes status.
        members = MemberClusterController(store, xds, backoff_max=15.0, source_factory=KubeSourceFactory(
            SourceSettings(request_timeout=10.0, backoff_max=15.0)),
            leader=(lambda: election.is_leader) if election is not None else None)
        await members.start()
        if election is not None and election.is_leader:
            members.leadership_changed()
    api = ApiServer(store, default_registry(), ApiServerSettings(tokens=dict(opts.tokens or {}), metrics=metrics))
    api.extra_routes.append(web.get("/metrics", _metrics_handler(metrics)))
    api.extra_routes.append(web.get("/management/v1/replica", _replica_handler(store, replica, election)))
    scraper: MetricsScraper | None = None
    targets: Callable[[], list[Target]] = list
    identity = {"id": replica, "xds": xds_url, "version": __version__}
    api.extra_routes.append(web.get("/management/v1/version", _version_handler(identity)))
    if xds is not None:
        api.extra_routes.append(web.get("/management/v1/proxies", _proxy_status_handler(xds, identity)))
        targets = _scrape_targets(xds)
        if opts.console_scrape:
            scraper = MetricsScraper(targets, ScraperSettings(networks=opts.console_scrape_networks))
    api.extra_routes.extend(console_routes(scraper, targets))
    if mesh_sync is not None:
        sync = mesh_sync

        async def mesh_status(request: web.Request) -> web.Response:
            return web.json_response(sync.status())

        api.extra_routes.append(web.get("/management/v1/mesh-config", mesh_status))
    if security is not None:
        api.extra_routes.extend(security_routes(security))
    if collector is not None:
        api.extra_routes.extend(trace_routes(collector.store))
    if xds is not None:
        server, mesh_of = xds, translator
        view = xds_view(lambda: server.config, lambda: server.registry, server.wait_idle)

        def root_namespace() -> str:
            return mesh_of.mesh.root_namespace

        if opts.write_status:  # the leader's (one writer among replicas)
            await singletons.set_status_writer(StatusWriter(store, view,
                                                            WriterSettings(root_namespace=root_namespace)))
    else:
        view = store_view(store)

        def root_namespace() -> str:
            return "istio-system"

    api.extra_routes.extend(analyze_routes(view, root_namespace, _rejected_patches(xds)))
    try:
        runner = await serve(api.app(), opts.api_host, opts.api_port)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        raise ServerConfigError(f"--api-addr {_url_host(opts.api_host)}:{opts.api_port}: the address is in use "
                                "(another meshplane server? `meshplane status` shows a local mesh's API)") from None
    port = _bound_port(runner) or opts.api_port
    api_url = f"http://{_url_host(opts.api_host)}:{port}"
    state: dict[str, object] = {"api": api_url, "xds": xds_url, "ca": ca_url, "otlp": otlp_url, "pid": os.getpid(),
                                "console": f"{api_url}/console/", "replica": replica,
                                "store": opts.store_url or "sqlite"}
    if opts.tokens:
        state["token"] = next(iter(opts.tokens))
    _write_state(opts.data_dir / STATE_FILE, state)
    log.info("API serving on %s (data in %s)", api_url, opts.data_dir)
    print(f"meshplane API serving on {api_url}" + (f", xDS on {xds_url}" if xds_url else ""), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        if scraper is not None:
            await scraper.stop()
        if election is not None:
            await election.stop()  # steps down (stops the singletons) and hands leadership over at once
        else:
            await singletons.lost()
        if members is not None:
            await members.stop()
        if mesh_sync is not None:
            await mesh_sync.stop()
        if jwks is not None:
            await jwks.stop()
        if xds is not None:
            await xds.stop(grace=1.0)
        if security is not None:
            await security.stop()
        if collector is not None:
            await collector.stop()
        await store.close()
        with contextlib.suppress(FileNotFoundError):
            (opts.data_dir / STATE_FILE).unlink()


def _open_store(opts: ServerOptions) -> SqliteStore | EtcdStore:
    if opts.audit_limit < 0:
        raise ServerConfigError(f"--audit-limit: {opts.audit_limit} is negative (0 keeps every audit record)")
    if opts.store_url is None or opts.store_url in ("", "sqlite"):
        if opts.etcd_cacert or opts.etcd_cert or opts.etcd_key:
            raise ServerConfigError("--etcd-cacert/--etcd-cert/--etcd-key need --store etcd://...")
        return SqliteStore(opts.data_dir / "store.db", history_limit=opts.history_limit,
                           audit_limit=opts.audit_limit)
    try:
        settings = parse_etcd_url(opts.store_url, cacert=opts.etcd_cacert, cert=opts.etcd_cert, key=opts.etcd_key)
    except ValueError as e:
        raise ServerConfigError(str(e)) from e
    return EtcdStore(settings, history_limit=max(opts.history_limit, 1), audit_limit=opts.audit_limit)


class _Singletons:
    """What runs once among replicas, started on election and stopped on losing it: the lanes controller, the
    status writer, the EnvoyFilters' Applied writer and the member-cluster controller's status writes (its sources
    run everywhere). Alone (SQLite) this process leads."""

    def __init__(self, store: Store, members: Callable[[], MemberClusterController | None]) -> None:
        self._store = store
        self._members = members
        self._lanes: LanesController | None = None
        self._status: StatusWriter | None = None
        self._filter_status: EnvoyFilterStatus | None = None
        self._leading = False
        self._settled: Callable[[], Awaitable[None]] | None = None

    @property
    def settled(self) -> Callable[[], Awaitable[None]] | None:
        """Given to the lanes controller (``xds.wait_idle``), the running one and every later one."""
        return self._settled

    @settled.setter
    def settled(self, wait: Callable[[], Awaitable[None]] | None) -> None:
        self._settled = wait
        if self._lanes is not None:
            self._lanes.settled = wait

    async def set_status_writer(self, writer: StatusWriter) -> None:
        """The status writer, created once the xDS server it reads exists; runs while this replica leads."""
        self._status = writer
        if self._leading:
            await writer.start()

    async def set_filter_status(self, writer: EnvoyFilterStatus) -> None:
        """The EnvoyFilters' ``Applied`` writer (``xds.filterstatus``); runs while this replica leads."""
        self._filter_status = writer
        if self._leading:
            await writer.start()

    async def elected(self) -> None:
        self._leading = True
        if self._status is not None:
            await self._status.start()
        if self._filter_status is not None:
            await self._filter_status.start()
        if self._lanes is None:
            self._lanes = LanesController(self._store)
            self._lanes.settled = self.settled
            await self._lanes.start()
        members = self._members()
        if members is not None:
            members.leadership_changed()

    async def lost(self) -> None:
        self._leading = False
        if self._status is not None:
            await self._status.stop()
        if self._filter_status is not None:
            await self._filter_status.stop()
        lanes, self._lanes = self._lanes, None
        if lanes is not None:
            await lanes.stop()


async def _wait_for_ca(ca_dir: Path, election: LeaderElection, plugged: bool, timeout_s: float = 60.0) -> None:
    """Replicas share one CA (its files, never the store): only the leader creates it when it does not exist yet;
    the others wait for its files. With a plugged-in root each replica makes its own intermediate, no waiting."""
    if plugged:
        return
    deadline = time.monotonic() + timeout_s
    made = ("ca-key.pem", "ca-cert.pem", "token-hmac.key")  # the token key last: made right after the CA
    while not all((ca_dir / name).exists() for name in made) and not election.is_leader:
        if time.monotonic() > deadline:
            raise ServerConfigError(f"no CA in {ca_dir} and this replica was not elected to create it")
        await asyncio.sleep(0.1)


def _replica_handler(store: Store, replica: str, election: LeaderElection | None) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({
            "replica": replica,
            "leader": election.is_leader if election is not None else True,
            "store": "etcd" if election is not None else "sqlite",
            "resourceVersion": str(store.current_rv),
        })

    return handler


def _rejected_patches(xds: XdsServer | None) -> Callable[[], list[Any]] | None:
    """``meshplane analyze``'s messages about patches this replica's proxies reject (``xds.filterstatus``)."""
    if xds is None:
        return None
    server = xds

    def messages() -> list[Any]:
        return list(rejection_messages(server.rejections()))

    return messages


def _mesh_applier(translator: DefaultTranslator, xds: XdsServer) -> Callable[[MeshSettings], None]:
    def apply(settings: MeshSettings) -> None:
        translator.set_mesh(settings)
        xds.config_changed("mesh config")

    return apply


def _tune_gc() -> None:
    """The control plane keeps every object in memory: a large, long-lived heap of small dicts. CPython's default
    collection thresholds then spend much of a write burst re-scanning it; move what is loaded to the permanent
    generation and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def proxy_status_json(statuses: list[ProxyStatus], control_plane: dict[str, str] | None = None
                      ) -> list[dict[str, Any]]:
    """The management API's view of connected proxies (also what ``meshplane proxy-status`` prints);
    ``control_plane`` (id, xDS address) names the server the proxies are connected to."""
    out = []
    for p in statuses:
        out.append(
            {
                "nodeId": p.node_id,
                "namespace": p.namespace,
                "workload": p.workload,
                "cluster": p.cluster_id,
                "type": p.proxy_type,
                "delta": p.delta,
                "peer": p.peer,
                "connectedSince": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p.connected_since)),
                "pushes": p.pushes,
                "state": p.state.value,
                "addresses": list(p.addresses),
                "locality": p.locality,
                "envoyVersion": p.envoy_version,
                "controlPlane": {k: (control_plane or {}).get(k, "") for k in ("id", "xds")},
                "types": {
                    t.short_name: {
                        "state": t.state.value,
                        "versionSent": t.version_sent,
                        "versionAcked": t.version_acked,
                        "resources": t.resources,
                        "acks": t.acks,
                        "nacks": t.nacks,
                        "error": t.error,
                    }
                    for t in p.types
                },
            }
        )
    return out


def _metrics_handler(metrics: ControlPlaneMetrics) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    return handler


def _version_handler(identity: dict[str, str]) -> Any:
    """``GET /management/v1/version``: which control plane answers (its id, xDS address) and its version."""
    body = {"kind": "ControlPlaneVersion", "apiVersion": "meshplane.io/v1", **identity}

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(body)

    return handler


def _proxy_status_handler(xds: XdsServer, identity: dict[str, str]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        items = proxy_status_json(xds.proxy_status(), identity)
        return web.json_response({"kind": "ProxyStatusList", "apiVersion": "meshplane.io/v1", "items": items})

    return handler


def _scrape_targets(xds: XdsServer) -> Callable[[], list[Target]]:
    def targets() -> list[Target]:
        return [Target(proxy=p.node_id, workload=Workload(p.cluster_id or "unknown", p.namespace, p.workload),
                       kind=p.proxy_type, addresses=p.addresses, locality=p.locality)
                for p in xds.proxy_status()]

    return targets


def _bound_port(runner: object) -> int | None:
    for site in getattr(runner, "sites", []):
        server = getattr(site, "_server", None)
        for sock in getattr(server, "sockets", None) or []:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
    return None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _write_state(path: Path, state: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def read_state(data_dir: Path) -> dict[str, object]:
    path = data_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ServerConfigError(f"no running server found: {path} does not exist (start `meshplane server`)") from e
    if not isinstance(data, dict):
        raise ServerConfigError(f"{path} is corrupt")
    return data


def kubeconfig(state: dict[str, object], *, name: str = "meshplane") -> str:
    """A kubeconfig (YAML) for the server described by ``state``."""
    import yaml

    user: dict[str, object] = {}
    if state.get("token"):
        user["token"] = state["token"]
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": state["api"]}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
        "preferences": {},
    }
    return str(yaml.safe_dump(doc, sort_keys=False))
