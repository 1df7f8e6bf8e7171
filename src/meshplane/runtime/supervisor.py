"""The supervisor of a local mesh (``meshplane up``): one asyncio process that owns the whole process tree.

It starts the control plane (``meshplane server`` with xDS), applies the manifest's services and configuration,
then keeps, for every workload instance of every cluster, an application process and a ``meshplane agent`` (which
runs that instance's Envoy) alive, and reconciles replica counts continuously: crashed processes are restarted
with backoff, ``meshplane scale`` changes ``replicas.json`` and wakes the loop with SIGHUP, scaling to 0 stops
instances and they stay stopped. SIGTERM stops everything in order: instances (agents deregister and drain),
then the server.

Why records on disk before anything else: ``meshplane down`` must work even after this process was killed with
SIGKILL, so each child is recorded in ``HOME/procs`` right after it is spawned (see :mod:`meshplane.runtime.home`).
Every child leads its own session (``start_new_session``): a Ctrl-C in the terminal that ran ``up`` does not
reach them, and one process-group signal reaches an agent and its Envoy together.

Addresses: the mesh gets a second octet B (from a hash of the home path, the first free and unclaimed one), the
control plane ``127.B.0.1``, instance n of cluster c ``127.B.c.n``; so several meshes (homes) coexist on one
machine.

Transparent interception (``mesh.interception``; :mod:`meshplane.runtime.netns`): every instance then runs in its
own network namespace at ``10.B.c.n`` on the mesh's bridge, applications and agents are started through
``ip netns exec``, agents (and so their Envoys) with the proxy group 1337 that the capture rules exempt, and the
control plane is reached through the relay on the bridge's host address (:mod:`meshplane.runtime.relay`).

Replicas (``--replicas N`` > 1, docs/ha.md): an etcd member on ``127.B.0.1:2379`` and N servers on
``127.B.0.1`` .. ``127.B.0.N`` sharing it (and one CA directory); every agent gets every replica's xDS, CA and API
address. A replica that exits is started again (it is one of several; the mesh keeps running meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import aiohttp
import yaml

from meshplane.agent.config import AgentConfig, PortSpec, Readiness
from meshplane.agent.procs import (
    ProcRecord,
    read_record,
    record_for,
    stop_records,
    write_json_atomic,
    write_record,
)
from meshplane.client import Client, ClientError
from meshplane.runtime import netns, prometheus
from meshplane.runtime.etcd import etcd_command
from meshplane.runtime.home import Home
from meshplane.runtime.manifest import ClusterSpec, Manifest, WorkloadSpec, expand, instance_address
from meshplane.runtime.relay import DnsRelay, TcpRelay, host_resolver

log = logging.getLogger("meshplane.runtime")

API_PORT = 8080
XDS_PORT = 15010
CA_PORT = 15012
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
TOKEN_TTL_S = 30 * 24 * 3600  # an agent renews with its bootstrap token for the mesh's whole life
RECONCILE_S = 0.5
MAX_BACKOFF_S = 10.0
STABLE_S = 10.0  # a process that ran this long resets its restart backoff
EASTWEST_WAIT_S = 60.0  # workloads wait at most this long for the east-west gateways to register


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "meshplane.cli.main", *args]


CLAIMS_DIR = "meshplane-loopback"  # under the temporary directory: one lock file per second octet


def _claim(octet: int) -> BinaryIO | Literal[False] | None:
    """An exclusive claim on ``127.<octet>.x.x``, held while the returned file stays open (the supervisor's life;
    the kernel drops it when the process dies, SIGKILL included). False: another mesh holds it. None: claims are
    unavailable here (the directory cannot be written); the port check alone then decides.

    Why a lock besides the port check: two meshes starting at the same moment both found the ports of one octet
    free and both took it, seconds before either bound them (seen on the test runner's two workers)."""
    folder = Path(tempfile.gettempdir()) / CLAIMS_DIR
    try:
        folder.mkdir(mode=0o1777, exist_ok=True)
        f = open(folder / f"{octet}.lock", "ab")  # noqa: SIM115 - held open on purpose: the claim is the open file
    except OSError:
        return None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return False
    return f


def choose_octet(home: Home) -> tuple[int, BinaryIO | None]:
    """The second octet of this mesh's addresses (stable per home, skipping ones another mesh uses or claims) and
    the claim on it, to keep open for as long as the mesh runs."""
    start = zlib.crc32(str(home.root).encode()) % 240
    for i in range(240):
        octet = 10 + (start + i) % 240
        claim = _claim(octet)
        if claim is False:
            continue
        host = f"127.{octet}.0.1"
        if all(_port_free(host, p) for p in (API_PORT, XDS_PORT, CA_PORT)):
            return octet, claim
        if claim:
            claim.close()
    raise RuntimeError("no free loopback range 127.B.0.1 for the control plane")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Child:
    """One started process (application, agent or server) and its record on disk."""

    kind: str
    proc: asyncio.subprocess.Process
    record: ProcRecord
    record_path: Path
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.returncode is None


@dataclass
class Instance:
    workload: WorkloadSpec
    cluster: ClusterSpec
    index: int
    address: str
    app: Child | None = None
    agent: Child | None = None
    restarts: int = 0
    backoff: float = 0.5
    next_start: float = 0.0
    wanted: bool = True
    last_exit: dict[str, Any] | None = None  # the last crash: which process, its exit code, its log
    pod: netns.Pod | None = None  # transparent meshes: the instance's network namespace (created once)
    pod_ready: bool = False
    captured: bool = False  # its traffic is captured by iptables (else explicit, http_proxy)
    failures: int = 0  # crashes in a row, each before STABLE_S of running
    stop_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.workload.name}-{self.cluster.name}-{self.index}"

    @property
    def zone(self) -> str:
        return self.workload.zone or self.cluster.zone

    @property
    def eastwest(self) -> bool:
        return self.workload.gateway and self.workload.labels.get("istio") == "eastwestgateway"

    @property
    def labels(self) -> dict[str, str]:
        labels = dict(self.workload.labels)
        if self.eastwest:  # Istio labels its east-west gateway with the network it serves
            labels.setdefault("topology.istio.io/network", self.cluster.network)
        return labels

    def view(self) -> dict[str, Any]:
        w = self.workload
        return {
            "name": self.name,
            "workload": w.name,
            "namespace": w.namespace,
            "cluster": self.cluster.name,
            "region": self.cluster.region,
            "zone": self.zone,
            "network": self.cluster.network,
            "labels": self.labels,
            "serviceAccount": w.service_account,
            "address": self.address,
            "interception": "transparent" if self.captured else "explicit",
            "netns": self.pod.netns if self.pod else "",
            "ports": [p.port for p in w.ports],
            "gateway": w.gateway,
            "listen": {str(p.port): p.gateway_listen_port for p in w.ports} if w.gateway else {},
            "pid": self.app.pid if self.app and self.app.running() else None,
            "agentPid": self.agent.pid if self.agent and self.agent.running() else None,
            "restarts": self.restarts,
            "lastExit": {**self.last_exit, "inARow": self.failures} if self.last_exit else None,
        }


class Supervisor:
    def __init__(self, home: Home, manifest: Manifest, *, delta: bool = False, prometheus: str = "auto",
                 interception: str = "", replicas: int = 1) -> None:
        if replicas < 1:
            raise ValueError("--replicas must be at least 1")
        self.home = home
        self.replicas = replicas
        self.servers: list[Child] = []  # with replicas: every server (self.server is the first)
        self.server_args: list[list[str]] = []
        self.etcd: Child | None = None
        self.apis: list[str] = []
        self.session: aiohttp.ClientSession | None = None
        self.manifest = manifest
        # auto | transparent | explicit: the flag, else the manifest's mesh.interception unless it is auto, else
        # $MESHPLANE_INTERCEPTION (what auto means on this machine), else auto
        wanted = manifest.mesh.interception if manifest.mesh.interception != "auto" else ""
        self.interception_wanted = (interception or wanted or os.environ.get("MESHPLANE_INTERCEPTION", "")
                                    or "auto")
        if self.interception_wanted not in ("auto", "transparent", "explicit"):
            raise ValueError(f"interception {self.interception_wanted!r}: expected auto, transparent or explicit")
        self.transparent = False  # resolved at start: instances in network namespaces
        self.interception_reason = ""
        self.bridge: netns.Bridge | None = None
        self.net = netns.NetRecords(home.root / "net")
        self.relay: TcpRelay | None = None
        self.dns_relay: DnsRelay | None = None
        self.warnings: list[str] = []
        self.delta = delta
        self.prometheus_mode = prometheus  # auto | on | off (runtime.prometheus)
        self.prometheus: Child | None = None
        self.prometheus_url = ""
        self.instances: dict[str, Instance] = {}
        self.numbers: dict[str, int] = {}  # (placement key, index) -> n of 127.B.c.n, stable for a mesh's life
        self.next_number: dict[int, int] = {}
        self.octet = 0
        self.octet_claim: BinaryIO | None = None  # the lock on 127.<octet>.x.x while the mesh runs
        self.api = ""
        self.xds = ""
        self.ca = ""
        self.server: Child | None = None
        self.phase = "starting"
        self.error = ""
        self.stop_event = asyncio.Event()
        self.wake = asyncio.Event()
        self._runtime_view: dict[str, Any] = {}
        self.client: Client | None = None
        self.started = time.monotonic()

    # --- processes ---------------------------------------------------------------------------------------

    async def spawn(self, kind: str, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                    cwd: Path | None = None, group: int | None = None) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {"group": group, "extra_groups": []} if group is not None else {}
        with open(log_path, "ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                env=env, cwd=str(cwd) if cwd else None, start_new_session=True, **extra)
        rec = record_for(proc.pid, kind, name)
        path = self.home.procs / f"{name}.{kind}.json"
        write_record(path, rec)
        return Child(kind, proc, rec, path, time.monotonic())

    async def reap(self, child: Child | None, *, grace: float = 10.0) -> None:
        """Stop a child's whole process group (SIGTERM, then SIGKILL) and forget its record."""
        if child is None:
            return
        if child.running() or child.record.group_alive():
            await asyncio.to_thread(stop_records, [child.record], grace=grace)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            await child.proc.wait()
        child.record_path.unlink(missing_ok=True)

    # --- control plane -----------------------------------------------------------------------------------

    async def start_server(self, session: aiohttp.ClientSession) -> None:
        if self.octet_claim is not None:
            self.octet_claim.close()
        self.octet, self.octet_claim = choose_octet(self.home)
        host = f"127.{self.octet}.0.1"
        sec = self.manifest.security
        store: list[str] = []
        if self.replicas > 1:
            await self.start_etcd(session, host)
            store = ["--store", f"etcd://{host}:{ETCD_CLIENT_PORT}", "--ca-dir", str(self.home.server_dir / "ca")]
        hosts = [f"127.{self.octet}.0.{i + 1}" for i in range(self.replicas)]
        self.apis = [f"http://{h}:{API_PORT}" for h in hosts]
        self.api = self.apis[0]
        self.xds = ",".join(f"{h}:{XDS_PORT}" for h in hosts)
        self.ca = ",".join(f"{h}:{CA_PORT}" for h in hosts) if sec.mtls else ""
        await self.resolve_interception()  # before the server: it reads the metrics in the namespaces' network
        for i, h in enumerate(hosts):
            data = self.home.server_dir if i == 0 else self.home.root / f"server-{i}"
            args = ["server", "--data-dir", str(data), "--api-addr", f"{h}:{API_PORT}",
                    "--xds-addr", f"{h}:{XDS_PORT}", *store]
            if self.replicas > 1:
                args += ["--replica-id", f"control-plane-{i}"]
            if sec.mtls:
                args += ["--ca-addr", f"{h}:{CA_PORT}", "--inbound-mtls", "--cert-ttl", str(sec.cert_ttl_s)]
            else:
                args += ["--ca-addr", "none"]
            args.append("--locality-lb" if self.manifest.mesh.locality_lb else "--no-locality-lb")
            if self.transparent:  # the console's topology reads the sidecars' :15090 on the bridge
                args += ["--console-scrape-network", netns.bridge_for(self.octet).subnet]
            self.server_args.append(args)
            self.servers.append(await self.spawn_server(i))
        self.server = self.servers[0]
        for i, api in enumerate(self.apis):
            client = Client(api, session=session)
            while not await client.serving():
                if not self.servers[i].running():
                    raise RuntimeError(f"meshplane server exited with {self.servers[i].proc.returncode}; "
                                       f"see {self.server_log(i)}")
                await asyncio.sleep(0.1)
        client = Client(self.api, session=session)
        for obj in [member_cluster(c) for c in self.manifest.clusters] + list(self.manifest.objects):
            result = await client.apply(obj)
            md = obj.get("metadata") or {}
            log.info("%s %s/%s %s", obj.get("kind"), md.get("namespace", "default"), md.get("name"), result)
        await self.start_network(host)
        await self.start_prometheus(host)

    # --- interception ------------------------------------------------------------------------------------

    async def resolve_interception(self) -> None:
        """Transparent or explicit, once per mesh: ``auto`` is transparent when this machine can (root, network
        namespaces, iptables nat), and says why not otherwise."""
        if self.interception_reason:
            return  # resolved already
        want = self.interception_wanted
        reason = "" if want == "explicit" else await asyncio.to_thread(netns.capture_unavailable)
        if not reason and want != "explicit" and self.replicas > 1:
            reason = "--replicas > 1 (the namespaces reach one control plane through the bridge relay)"
        if want == "transparent" and reason:
            raise RuntimeError(f"mesh.interception: transparent is not possible here: {reason}")
        self.transparent = want != "explicit" and not reason
        if want == "explicit":
            self.interception_reason = "explicit (asked for): applications use their sidecar as http_proxy"
        elif self.transparent:
            self.interception_reason = ("transparent: each instance in its own network namespace, its traffic "
                                        "captured by iptables, its DNS answered by its agent")
        else:
            self.interception_reason = f"explicit (transparent is not possible: {reason})"
        for w in self.manifest.workloads:
            if w.interception == "transparent" and not self.transparent:
                raise RuntimeError(f"workload {w.name}.interception: transparent is not possible: "
                                   f"{reason or 'the mesh is explicit'}")
            captured = self.transparent and not w.gateway and w.interception != "explicit"
            if not captured and any(k.startswith("traffic.sidecar.istio.io/") for k in w.annotations):
                self.warnings.append(f"workload {w.name}.annotations: traffic.sidecar.istio.io annotations take "
                                     "effect only with transparent interception; ignored")
        for warning in self.warnings:
            log.warning("%s", warning)
        log.info("interception: %s", self.interception_reason)

    async def start_network(self, host: str) -> None:
        """The bridge and the relays of a transparent mesh (nothing for an explicit one)."""
        await self.resolve_interception()
        if not self.transparent:
            return
        bridge = self.bridge = netns.bridge_for(self.octet)
        await asyncio.to_thread(netns.create_bridge, self.net, bridge)
        ports = [API_PORT, XDS_PORT] + ([CA_PORT] if self.ca else [])
        self.relay = TcpRelay(bridge.address, host, ports)
        await self.relay.start()
        upstream = self.dns_upstream()
        if upstream is not None:
            self.dns_relay = DnsRelay((bridge.address, 53), upstream)
            await self.dns_relay.start()
        log.info("network namespaces on bridge %s (%s); control plane relayed on %s", bridge.name, bridge.subnet,
                 bridge.address)

    def dns_upstream(self) -> tuple[str, int] | None:
        raw = self.manifest.mesh.dns_upstream
        if raw:
            h, _, port = raw.rpartition(":")
            return h, int(port)
        return host_resolver()

    def captured(self, w: WorkloadSpec) -> bool:
        return self.transparent and not w.gateway and w.interception != "explicit"

    async def ensure_pod(self, inst: Instance) -> None:
        if not self.transparent or inst.pod_ready:
            return
        assert self.bridge is not None
        w = inst.workload
        _, _, c, n = inst.address.split(".")
        rules = netns.iptables_rules(netns.capture_from_annotations(w.annotations)) if inst.captured else ""
        inst.pod = netns.Pod(netns.netns_name(self.octet, inst.name), netns.veth_name(self.octet, int(c), int(n)),
                             inst.address, resolv=netns.resolv_conf(w.namespace), rules=rules)
        await asyncio.to_thread(netns.create_pod, self.net, self.bridge, inst.pod)
        inst.pod_ready = True

    async def remove_pod(self, inst: Instance) -> None:
        if inst.pod is not None:
            await asyncio.to_thread(netns.delete_pod, inst.pod.netns, inst.pod.veth)
            self.net.forget("netns", inst.pod.netns)
            inst.pod_ready = False

    def in_pod(self, inst: Instance, argv: list[str]) -> list[str]:
        return netns.exec_prefix(inst.pod.netns) + argv if inst.pod is not None else argv

    def server_log(self, i: int) -> Path:
        return self.home.logs / ("server.log" if i == 0 else f"server-{i}.log")

    async def spawn_server(self, i: int) -> Child:
        name = "control-plane" if i == 0 else f"control-plane-{i}"
        return await self.spawn("server", name, python_cmd(*self.server_args[i]), self.server_log(i))

    async def start_etcd(self, session: aiohttp.ClientSession, host: str) -> None:
        """One etcd member on loopback for the replicas (runtime.etcd has the same for tests)."""
        argv = etcd_command(self.home.root / "etcd", host, ETCD_CLIENT_PORT, ETCD_PEER_PORT)
        self.etcd = await self.spawn("etcd", "etcd", argv, self.home.logs / "etcd.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.etcd.running():
                raise RuntimeError(f"etcd exited with {self.etcd.proc.returncode}; see {self.home.logs / 'etcd.log'}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                async with session.get(f"http://{host}:{ETCD_CLIENT_PORT}/health",
                                       timeout=aiohttp.ClientTimeout(total=1)) as r:
                    if (await r.json(content_type=None)).get("health") == "true":
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"etcd did not become healthy; see {self.home.logs / 'etcd.log'}")

    async def keep_servers(self) -> None:
        """Alone, the server exiting ends the mesh; one of several replicas is started again."""
        for i, server in enumerate(self.servers):
            if server.running():
                continue
            if self.replicas == 1:
                raise RuntimeError(f"meshplane server exited with {server.proc.returncode}")
            if self.etcd is not None and not self.etcd.running():
                raise RuntimeError(f"etcd exited with {self.etcd.proc.returncode}")
            if time.monotonic() - server.started < 1.0:
                continue  # at most one restart a second
            log.warning("control-plane replica %d exited with %s: starting it again", i, server.proc.returncode)
            server.record_path.unlink(missing_ok=True)
            self.servers[i] = await self.spawn_server(i)
            if i == 0:
                self.server = self.servers[0]

    async def start_prometheus(self, host: str) -> None:
        """Prometheus on ``host:9090`` scraping the control plane and every proxy (when installed, or required)."""
        if self.prometheus_mode == "off":
            return
        binary = prometheus.find_prometheus()
        if binary is None:
            if self.prometheus_mode == "on":
                raise RuntimeError("--prometheus on: no `prometheus` binary on PATH (apt-get install prometheus)")
            log.info("prometheus is not installed: the mesh runs without it (proxies serve :15090 themselves)")
            return
        d = self.home.root / "prometheus"
        d.mkdir(parents=True, exist_ok=True)
        cfg = d / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(prometheus.config(f"{host}:{API_PORT}", d / "targets.json")))
        self.write_prometheus_targets()
        listen = f"{host}:{prometheus.PORT}"
        self.prometheus = await self.spawn("prometheus", "prometheus", prometheus.argv(binary, cfg, d / "data", listen),
                                           self.home.logs / "prometheus.log")
        self.prometheus_url = f"http://{listen}"
        log.info("prometheus on %s", self.prometheus_url)

    def write_prometheus_targets(self) -> None:
        if self.prometheus_mode == "off":
            return
        d = self.home.root / "prometheus"
        if not d.is_dir():
            return
        prometheus.write_targets(d / "targets.json", [
            prometheus.Target(i.address, {"namespace": i.workload.namespace, "pod": i.name,
                                          "cluster": i.cluster.name, "workload": i.workload.name,
                                          **{k: v for k, v in i.labels.items() if k in ("app", "version")}})
            for i in self.instances.values() if i.wanted])

    # --- instances ---------------------------------------------------------------------------------------

    def desired(self) -> dict[str, int]:
        overrides = self.home.read_replicas()
        return {w.key(c.name): overrides.get(w.key(c.name), w.replicas) for w, c in self.manifest.placements()}

    def address_for(self, w: WorkloadSpec, c: ClusterSpec, index: int) -> str:
        key = f"{w.key(c.name)}#{index}"
        n = self.numbers.get(key)
        if n is None:
            n = self.next_number.get(c.index, 1)
            self.next_number[c.index] = n + 1
            self.numbers[key] = n
        address = instance_address(self.octet, c.index, n)  # checks the ranges
        return netns.pod_address(self.octet, c.index, n) if self.transparent else address

    def agent_config(self, inst: Instance, ca_token: str = "") -> AgentConfig:
        w, c = inst.workload, inst.cluster
        d = self.home.instance_dir(inst.name)
        readiness = Readiness(http_path=w.readiness_path, tcp=w.readiness_tcp or (not w.readiness_path and
                                                                                 bool(w.command)))
        xds, api, ca = self.xds, ",".join(self.apis) or self.api, self.ca
        if self.bridge is not None:  # from a namespace: the relay on the bridge
            relay = self.bridge.address
            xds, api = f"{relay}:{XDS_PORT}", f"http://{relay}:{API_PORT}"
            ca = f"{relay}:{CA_PORT}" if self.ca else ""
        captured = inst.captured
        return AgentConfig(
            name=inst.name, namespace=w.namespace, workload=w.name, address=inst.address, xds=xds,
            api=api, cluster=c.name, network=c.network, region=c.region, zone=inst.zone,
            labels=inst.labels, service_account=w.service_account,
            ports=() if w.gateway else tuple(PortSpec(p.port, p.port if captured else p.app_port, p.name,
                                                      p.protocol) for p in w.ports),
            app_address="127.0.0.1" if captured else inst.address, gateway=w.gateway,
            gateway_ports={p.port: p.gateway_listen_port for p in w.ports} if w.gateway else {},
            readiness=readiness, delta=self.delta, work_dir=str(d), status_file=str(d / "status.json"),
            envoy_record=str(self.home.procs / f"{inst.name}.envoy.json"), mesh_id=self.manifest.name,
            ca=ca if ca_token else "", ca_token=ca_token,
            interception="REDIRECT" if captured else "NONE",
            dns=captured, dns_proxy_address="127.0.0.1:53" if captured else "",
            dns_upstream=f"{self.bridge.address}:53" if self.bridge is not None else "",
            app_metrics_url=self._app_metrics_url(inst))

    def _app_metrics_url(self, inst: Instance) -> str:
        """Where the agent reads the application's own metrics (the ``prometheus.io/*`` annotations), "" none.
        The annotation's port is the application's; a service port of the workload is where its sidecar
        listens, so the application serves it on that port's ``app_port`` unless its traffic is captured."""
        w = inst.workload
        wanted = w.app_metrics
        if wanted is None or w.gateway:
            return ""
        port, path = wanted
        if not inst.captured:
            port = next((p.app_port for p in w.ports if p.port == port), port)
        host = "127.0.0.1" if inst.captured else inst.address
        return f"http://{host}:{port}{path}"

    def app_env(self, inst: Instance) -> dict[str, str]:
        w = inst.workload
        proxy = f"http://{inst.address}:15001"
        values = self.template_values(inst)
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
        if inst.captured:  # an unmodified application: no proxy, nothing of the mesh in its environment
            env["PYTHONUNBUFFERED"] = "1"
            env.update({k: expand(v, values) for k, v in w.env.items()})
            return env
        env.update({
            "http_proxy": proxy, "HTTP_PROXY": proxy,
            "MESH_INSTANCE": inst.name, "MESH_INSTANCE_IP": inst.address, "MESH_NAMESPACE": w.namespace,
            "MESH_CLUSTER": inst.cluster.name, "MESH_ZONE": inst.zone, "MESH_REGION": inst.cluster.region,
            "MESH_APP_LISTEN": values["listen"], "PYTHONUNBUFFERED": "1",
        })
        env.update({k: expand(v, values) for k, v in w.env.items()})
        return env

    def template_values(self, inst: Instance) -> dict[str, str]:
        w = inst.workload
        if inst.captured:  # like a pod: the application listens on its own port, on every address
            app_port = w.ports[0].port if w.ports else 0
            listen = f"0.0.0.0:{app_port}"
        else:
            app_port = w.ports[0].app_port if w.ports else 0
            listen = f"{inst.address}:{app_port}"
        return {"python": sys.executable, "address": inst.address, "listen": listen,
                "app_port": str(app_port), "name": inst.name, "workload": w.name, "namespace": w.namespace,
                "cluster": inst.cluster.name, "zone": inst.zone, "region": inst.cluster.region,
                "version": w.labels.get("version", "")}

    async def start_app(self, inst: Instance) -> None:
        values = self.template_values(inst)
        argv = self.in_pod(inst, [expand(a, values) for a in inst.workload.command])
        d = self.home.instance_dir(inst.name)
        inst.app = await self.spawn("app", inst.name, argv, d / "app.log", env=self.app_env(inst), cwd=d)

    async def start_agent(self, inst: Instance) -> None:
        d = self.home.instance_dir(inst.name)
        d.mkdir(parents=True, exist_ok=True)
        cfg_path = d / "agent.json"
        token = ""
        if self.ca and self.client is not None:
            # One bootstrap token per instance start, bound to its namespace and service account.
            token = await self.client.bootstrap_token(inst.workload.namespace, inst.workload.service_account,
                                                      TOKEN_TTL_S)
        write_json_atomic(cfg_path, self.agent_config(inst, token).to_json(), mode=0o600)
        (d / "status.json").unlink(missing_ok=True)
        # An Envoy left by an agent that died hard (SIGKILL) still holds the instance's ports: stop it first.
        stale = read_record(self.home.procs / f"{inst.name}.envoy.json")
        if stale is not None and stale.alive():
            await asyncio.to_thread(stop_records, [stale], grace=2.0)
        inst.agent = await self.spawn("agent", inst.name, self.in_pod(inst, python_cmd("agent", "--config",
                                                                                         str(cfg_path))),
                                      d / "agent.log", group=netns.PROXY_GID if inst.pod is not None else None)

    async def stop_instance(self, inst: Instance) -> None:
        await asyncio.gather(self.reap(inst.agent), self.reap(inst.app))
        (self.home.procs / f"{inst.name}.envoy.json").unlink(missing_ok=True)
        inst.agent = inst.app = None
        await self.remove_pod(inst)
        if self.client is not None and self.phase not in ("stopping", "failed"):
            # The agent deletes its WorkloadEntry when it stops; one that died hard could not.
            with contextlib.suppress(ClientError):  # not there (the usual case), or the API is gone
                await self.client.delete("networking.istio.io/v1", "WorkloadEntry", inst.name,
                                         inst.workload.namespace, timeout=5)

    def eastwest_pending(self, now: float) -> bool:
        """Whether an east-west gateway has not registered yet (for at most EASTWEST_WAIT_S after start). Its
        address is part of every cross-network ClusterLoadAssignment, and an endpoint-only push names only the
        hosts whose endpoints changed: workloads started before their gateway registered would keep EDS without
        the remote network until their own service's endpoints change again. Gateways start first anyway."""
        if now - self.started > EASTWEST_WAIT_S:
            return False
        return any(i.wanted and i.eastwest and not self.home.read_instance_status(i.name).get("registered")
                   for i in self.instances.values())

    async def reconcile(self) -> None:
        desired = self.desired()
        now = time.monotonic()
        hold: bool | None = None
        for w, c in self.manifest.placements():
            want = desired[w.key(c.name)]
            for idx in range(max(want, 1 + max((i.index for i in self.instances.values()
                                                 if i.workload is w and i.cluster is c), default=-1))):
                name = f"{w.name}-{c.name}-{idx}"
                inst = self.instances.get(name)
                if idx >= want:
                    if inst is not None and inst.wanted:
                        inst.wanted = False
                        log.info("scaling down: stopping %s", name)
                        inst.stop_task = asyncio.create_task(self.stop_instance(inst))
                    continue
                if inst is None or (not inst.wanted and inst.stop_task is not None and inst.stop_task.done()):
                    inst = Instance(w, c, idx, self.address_for(w, c, idx), captured=self.captured(w))
                    self.instances[name] = inst
                elif not inst.wanted:
                    continue  # still stopping; start it again on a later pass
                if not w.gateway and inst.agent is None and inst.app is None:
                    hold = self.eastwest_pending(now) if hold is None else hold
                    if hold:
                        continue
                await self.keep_running(inst, now)
        for name in [n for n, i in self.instances.items()
                     if not i.wanted and i.stop_task is not None and i.stop_task.done()]:
            del self.instances[name]

    async def keep_running(self, inst: Instance, now: float) -> None:
        if now < inst.next_start:
            return
        crashed = stable = False
        if inst.agent is not None and not inst.agent.running():
            log.warning("agent of %s exited with %s; restarting", inst.name, inst.agent.proc.returncode)
            crashed = True
            stable = now - inst.agent.started > STABLE_S
            inst.last_exit = {"process": "agent", "code": inst.agent.proc.returncode,
                              "log": str(self.home.instance_dir(inst.name) / "agent.log")}
            await self.reap(inst.agent, grace=2.0)
            inst.agent = None
        if inst.app is not None and not inst.app.running():
            log.warning("application of %s exited with %s; restarting", inst.name, inst.app.proc.returncode)
            crashed = True
            stable = now - inst.app.started > STABLE_S
            inst.last_exit = {"process": "application", "code": inst.app.proc.returncode,
                              "log": str(self.home.instance_dir(inst.name) / "app.log")}
            await self.reap(inst.app, grace=2.0)
            inst.app = None
        if crashed:
            inst.restarts += 1
            inst.failures = 0 if stable else inst.failures + 1
            inst.backoff = 0.5 if stable else min(inst.backoff * 2, MAX_BACKOFF_S)
            inst.next_start = now + inst.backoff
            return
        await self.ensure_pod(inst)
        if inst.app is None and inst.workload.command:
            await self.start_app(inst)
        if inst.agent is None:
            await self.start_agent(inst)

    # --- views -------------------------------------------------------------------------------------------

    def ingress(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for inst in sorted(self.instances.values(), key=lambda i: (i.cluster.index, i.index)):
            w = inst.workload
            if (inst.wanted and w.gateway and w.labels.get("istio") == "ingressgateway"
                    and inst.cluster.name not in out):
                port = next((p for p in w.ports if p.port == 80), w.ports[0] if w.ports else None)
                if port is not None:
                    out[inst.cluster.name] = f"http://{inst.address}:{port.gateway_listen_port}"
        return out

    def write_view(self) -> None:
        view = {
            "name": self.manifest.name,
            "pid": os.getpid(),
            "phase": self.phase,
            "error": self.error,
            "api": self.api,
            "apis": self.apis,
            "xds": self.xds,
            "replicas": self.replicas,
            "octet": self.octet,
            "ingress": self.ingress(),
            "prometheus": self.prometheus_url,
            "interception": "transparent" if self.transparent else "explicit",
            "interceptionReason": self.interception_reason,
            "bridge": self.bridge.name if self.bridge else "",
            "warnings": self.warnings,
            "clusters": [{"name": c.name, "network": c.network, "region": c.region, "zone": c.zone}
                         for c in self.manifest.clusters],
            "instances": [i.view() for i in sorted(self.instances.values(),
                                                   key=lambda i: (i.cluster.index, i.workload.namespace, i.name))
                          if i.wanted],
        }
        if view != self._runtime_view:
            self.write_prometheus_targets()
            self._runtime_view = view
            self.home.write_runtime({**view, "updated": time.time()})

    async def all_ready(self, client: Client) -> bool:
        wanted = [i for i in self.instances.values() if i.wanted]
        for inst in wanted:
            if not self.home.read_instance_status(inst.name).get("ready"):
                return False
        proxies = []
        for api in self.apis or [self.api]:  # with replicas, each proxy is connected to one of them
            with contextlib.suppress(ClientError):
                replica = client if api == client.base else Client(api, session=self.session)
                proxies += await replica.proxies(timeout=3)
        addresses = {i.address for i in wanted}
        synced = {str(p.get("nodeId", "")).split("~")[1] for p in proxies
                  if p.get("state") == "SYNCED" and str(p.get("nodeId", "")).count("~") == 3}
        return addresses <= synced

    # --- main loop ---------------------------------------------------------------------------------------

    async def run(self) -> int:
        self.home.create()
        write_record(self.home.procs / "supervisor.json", record_for(os.getpid(), "supervisor", group=False))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self.wake.set)
        self.write_view()
        code = 0
        cancelled = False
        async with aiohttp.ClientSession() as session:
            self.session = session
            try:
                await self.start_server(session)
                client = self.client = Client(self.api, session=session)
                while not self.stop_event.is_set():
                    await self.keep_servers()
                    await self.reconcile()
                    if self.phase == "starting" and await self.all_ready(client):
                        self.phase = "running"
                        log.info("mesh %s is ready: API %s, ingress %s", self.manifest.name, self.api,
                                 self.ingress())
                    self.write_view()
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RECONCILE_S):
                            await _first(self.stop_event, self.wake)
            except Exception as e:
                log.exception("supervisor failed")
                self.phase, self.error, code = "failed", f"{type(e).__name__}: {e}", 1
                self.write_view()
            except asyncio.CancelledError:
                # Cancelled from outside (an embedding program, asyncio.run torn down): everything started is
                # still stopped before the cancel goes on. The cancel is withdrawn for the shutdown so that its
                # own timeouts work, and raised again after it.
                log.info("supervisor cancelled: stopping everything it started")
                self.stop_event.set()
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                cancelled = True
            try:
                await self.shutdown()
            except Exception:  # what is still recorded is stopped by `meshplane down`
                log.exception("shutdown failed")
                code = 1
        if cancelled:
            raise asyncio.CancelledError
        return code

    async def shutdown(self) -> None:
        if self.phase != "failed":
            self.phase = "stopping"
        self.write_view()
        log.info("stopping %d instances", len(self.instances))
        await asyncio.gather(*(self.stop_instance(i) for i in self.instances.values()))
        await self.reap(self.prometheus)
        await asyncio.gather(*(self.reap(server) for server in self.servers))
        await self.reap(self.etcd)
        for relay in (self.relay, self.dns_relay):
            if relay is not None:
                await relay.stop()
        left = await asyncio.to_thread(netns.remove_recorded, self.net)
        if left:
            log.error("could not remove %s", ", ".join(left))
        # Anything recorded that is not ours any more (e.g. left by an earlier supervisor) goes too.
        leftovers = [(p, r) for p, r in self.home.records() if r.kind != "supervisor"]
        await asyncio.to_thread(stop_records, [r for _, r in leftovers], grace=5.0)
        for p, _ in leftovers:
            p.unlink(missing_ok=True)
        if self.phase != "failed":
            self.phase = "stopped"
        self.instances.clear()
        self.write_view()
        (self.home.procs / "supervisor.json").unlink(missing_ok=True)
        if self.octet_claim is not None:  # every process on the range is gone: another mesh may take it
            self.octet_claim.close()
            self.octet_claim = None
        log.info("stopped")


def member_cluster(c: ClusterSpec) -> dict[str, Any]:
    """The runtime declares each of its clusters as a local MemberCluster, so ``meshplane cluster list`` shows
    them and ``meshplane cluster remove`` withdraws a cluster's endpoints as it does a Kubernetes member's."""
    return {"apiVersion": "meshplane.io/v1", "kind": "MemberCluster",
            "metadata": {"name": c.name, "labels": {"app.kubernetes.io/managed-by": "meshplane-runtime"}},
            "spec": {"local": True, "network": c.network, "region": c.region, "zone": c.zone}}


async def _first(*events: asyncio.Event) -> None:
    tasks = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


def run_supervisor(home: Home, manifest: Manifest, *, delta: bool = False, prometheus: str = "auto",
                   interception: str = "", replicas: int = 1) -> int:
    return asyncio.run(Supervisor(home, manifest, delta=delta, prometheus=prometheus, interception=interception,
                                  replicas=replicas).run())
