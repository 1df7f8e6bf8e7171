"""The local runtime's manifest: member clusters, workloads, services and extra mesh configuration in one YAML file.

Why one small format of our own: a local mesh needs what Kubernetes spreads over Deployments, Services and cluster
registrations, but nothing else of them. Services compile to what Istio itself uses for non-Kubernetes workloads
(a ServiceEntry with a ``workloadSelector`` over WorkloadEntries), so the control plane sees exactly the objects a
VM-based mesh would have, and Istio's own YAML (VirtualService, DestinationRule, Gateway) applies unchanged.

    clusters:  [{name: cluster-1, network: network-1, region: region-1, zone: zone-a}]
    workloads:
    - name: reviews-v1                   # like a Deployment's name
      namespace: default
      clusters: [cluster-1]              # or cluster: cluster-1; optional zone: overrides the cluster's zone
      replicas: 1
      labels: {app: reviews, version: v1}
      serviceAccount: bookinfo-reviews
      ports: [{port: 9080, name: http, protocol: HTTP}]     # or just [9080]
      command: ["{python}", "-m", "meshplane.runtime.demoapp", "--service", "reviews", "--listen", "{listen}"]
      readiness: {httpGet: {path: /healthz}}                # or {tcpSocket: {}}
    - name: istio-ingressgateway         # role gateway (or label istio: ingressgateway): Envoy only, no command
      namespace: istio-system
      role: gateway
      labels: {istio: ingressgateway}
      ports: [80]                        # Gateway ports; below 1024 they listen on port+8000
    services:
    - {name: reviews, namespace: default, ports: [{port: 9080, name: http}], selector: {app: reviews}}
    config: [...]                        # any API objects, applied in order after the services
    mesh: {localityLoadBalancing: true,  # mesh-wide settings of the control plane (defaults shown)
           eastWestGateways: auto}       # auto: an east-west gateway per network when there are several

Multi-network: clusters on different networks reach each other only through each network's east-west gateway
(mTLS passed through by SNI on 15443; see meshplane.translate.eastwest). With ``eastWestGateways`` on (``true``,
or ``auto`` and more than one network) the manifest gets workload ``istio-eastwestgateway`` in ``istio-system``
(labels ``istio: eastwestgateway``, gateway port 15443) in the first cluster of each network, and a ServiceEntry
selecting it (exported to its own namespace only) through which the control plane finds each network's gateway.

Placeholders in ``command`` and ``env``: {python} {address} {listen} {app_port} {name} {workload} {namespace}
{cluster} {zone} {region} {version}.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshplane.api.labels import label_error
from meshplane.runtime.netns import CaptureSpecError, capture_from_annotations

GATEWAY_LABELS = (("istio", "ingressgateway"), ("istio", "egressgateway"), ("istio", "eastwestgateway"))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
APP_PORT_OFFSET = 10000
PRIVILEGED_OFFSET = 8000


class ManifestError(ValueError):
    """The manifest is invalid; the message names the entry and the field."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    name: str
    network: str = "network-1"
    region: str = "region-1"
    zone: str = "zone-a"
    index: int = 1  # 1-based position: the third octet of the cluster's instance addresses


@dataclass(frozen=True, slots=True)
class Port:
    port: int
    name: str = "http"
    protocol: str = "HTTP"

    @property
    def app_port(self) -> int:
        """Where the application listens (its sidecar owns ``port`` on the instance address)."""
        p = self.port + APP_PORT_OFFSET
        return p if p < 65536 else self.port - APP_PORT_OFFSET

    @property
    def gateway_listen_port(self) -> int:
        return self.port + PRIVILEGED_OFFSET if self.port < 1024 else self.port


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    name: str
    namespace: str
    clusters: tuple[str, ...]
    replicas: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    ports: tuple[Port, ...] = ()
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    zone: str = ""
    gateway: bool = False
    readiness_path: str = ""
    readiness_tcp: bool = False
    # "" = the mesh's; "transparent" (own namespace, iptables capture) or "explicit" (http_proxy).
    interception: str = ""
    # traffic.sidecar.istio.io/* (runtime.netns); prometheus.io/* (app_metrics)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def app_metrics(self) -> tuple[int, str] | None:
        """(port, path) of the application's own metrics its agent merges into the status port, or None."""
        return app_metrics(self.annotations)

    def key(self, cluster: str) -> str:
        """Identifies one (workload, cluster) placement: ``NAMESPACE/NAME@CLUSTER``."""
        return f"{self.namespace}/{self.name}@{cluster}"


@dataclass(frozen=True, slots=True)
class SecuritySpec:
    """``security:`` of a manifest. ``mtls``: every instance gets a mesh certificate over SDS and sidecars talk
    mTLS (auto mTLS; PERMISSIVE unless a PeerAuthentication says otherwise). ``certTtlSeconds``: the longest
    certificate the CA signs (short values exercise renewal)."""

    mtls: bool = True
    cert_ttl_s: int = 24 * 3600


@dataclass(frozen=True, slots=True)
class MeshSpec:
    """``mesh:`` of a manifest: mesh-wide settings the supervisor passes to the server's flags.
    ``localityLoadBalancing``: same zone first, failover by priority (``meshplane server --locality-lb``)."""

    locality_lb: bool = True
    # None: auto (the default): on when the clusters span more than one network, as the issue asks, so that
    # cross-network traffic never goes direct. ``false`` keeps a flat network (everything reached directly).
    east_west_gateways: bool | None = None
    # ``interception``: auto (transparent when root with network namespaces and iptables, else explicit),
    # transparent or explicit. ``dnsUpstream``: HOST:PORT the agents' DNS proxies forward other names to
    # (default: the host's first nameserver).
    interception: str = "auto"
    dns_upstream: str = ""


EASTWEST_NAME = "istio-eastwestgateway"
EASTWEST_NAMESPACE = "istio-system"
EASTWEST_PORT = 15443


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    clusters: tuple[ClusterSpec, ...]
    workloads: tuple[WorkloadSpec, ...]
    objects: tuple[Mapping[str, Any], ...]  # compiled services, then ``config``, in apply order
    security: SecuritySpec = SecuritySpec()
    mesh: MeshSpec = MeshSpec()

    def cluster(self, name: str) -> ClusterSpec:
        for c in self.clusters:
            if c.name == name:
                return c
        raise KeyError(name)

    def placements(self) -> list[tuple[WorkloadSpec, ClusterSpec]]:
        """Every (workload, cluster), gateways first so they get the first address of each cluster."""
        out = [(w, self.cluster(c)) for w in self.workloads for c in w.clusters]
        return sorted(out, key=lambda wc: (not wc[0].gateway, wc[1].index))

    def find(self, name: str, namespace: str | None = None) -> list[WorkloadSpec]:
        return [w for w in self.workloads if w.name == name and (namespace is None or w.namespace == namespace)]


def _str(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    v = raw.get(key, default)
    if not isinstance(v, str) or not v:
        raise ManifestError(f"{where}: field {key!r} must be a non-empty string")
    return v


def _name(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    v = _str(raw, key, where, default)
    if not DNS_LABEL.match(v) or len(v) > 63:
        raise ManifestError(f"{where}: {key} {v!r} must be a DNS label (lowercase letters, digits, '-')")
    return v


def _str_map(raw: Any, where: str) -> dict[str, str]:
    """A map of scalars as text (environment variables: ``DEBUG: 1``); lists and maps are refused."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{where}: expected a map of strings")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if isinstance(v, (Mapping, list)):
            raise ManifestError(f"{where}.{k}: expected a string, got {v!r}")
        out[str(k)] = str(v)
    return out


def _labels(raw: Any, where: str) -> dict[str, str]:
    """A label map, strings only and checked by Kubernetes' rules, as the API would check the WorkloadEntry later
    (YAML turns ``version: 1.10`` into the number 1.1: like Kubernetes, the manifest wants it quoted)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{where}: expected a map of strings")
    for k, v in raw.items():
        if not isinstance(v, str):
            raise ManifestError(f"{where}.{k}: expected a string, got {v!r} (quote it: {k}: \"{v}\")")
        err = label_error(str(k), v)
        if err:
            raise ManifestError(f"{where}: {err}")
    return {str(k): v for k, v in raw.items()}


def _ports(raw: Any, where: str) -> tuple[Port, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ManifestError(f"{where}: expected a list of ports")
    out: list[Port] = []
    for i, p in enumerate(raw):
        if isinstance(p, int):
            p = {"port": p}
        if not isinstance(p, Mapping):
            raise ManifestError(f"{where}[{i}]: expected a port number or {{port, name, protocol}}")
        number = p.get("port", p.get("number"))
        if not isinstance(number, int) or not 0 < number < 65536:
            raise ManifestError(f"{where}[{i}].port: expected a number 1-65535, got {number!r}")
        out.append(Port(number, str(p.get("name") or "http"), str(p.get("protocol") or "HTTP").upper()))
    if len({p.port for p in out}) != len(out):
        raise ManifestError(f"{where}: duplicate port")
    return tuple(out)


def _cluster_list(raw: Mapping[str, Any], where: str, known: Mapping[str, ClusterSpec]) -> tuple[str, ...]:
    names = raw.get("clusters")
    if names is None:
        single = raw.get("cluster")
        names = [single] if single else list(known)[:1]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise ManifestError(f"{where}: clusters must be a non-empty list of cluster names")
    for n in names:
        if n not in known:
            raise ManifestError(f"{where}: cluster {n!r} is not declared under clusters")
    return tuple(str(n) for n in names)


def _workload(raw: Any, i: int, clusters: Mapping[str, ClusterSpec]) -> WorkloadSpec:
    where = f"workloads[{i}]"
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{where}: expected a map")
    name = _name(raw, "name", where)
    where = f"workload {name}"
    labels = _labels(raw.get("labels"), f"{where}.labels")
    role = str(raw.get("role") or "")
    if role not in ("", "gateway", "workload"):
        raise ManifestError(f"{where}.role: expected 'gateway' or 'workload', got {role!r}")
    gateway = role == "gateway" or (not role and any(labels.get(k) == v for k, v in GATEWAY_LABELS))
    command = raw.get("command") or []
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise ManifestError(f"{where}.command: expected a list of strings")
    if not command and not gateway:
        raise ManifestError(f"{where}.command: required (only gateways run without an application)")
    replicas = raw.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        raise ManifestError(f"{where}.replicas: expected a number >= 0")
    readiness = raw.get("readiness") or {}
    if not isinstance(readiness, Mapping):
        raise ManifestError(f"{where}.readiness: expected {{httpGet: {{path: ...}}}} or {{tcpSocket: {{}}}}")
    http_get = readiness.get("httpGet")
    path = str(http_get.get("path") or "/") if isinstance(http_get, Mapping) else ""
    ports = _ports(raw.get("ports"), f"{where}.ports")
    if command and not ports:
        raise ManifestError(f"{where}.ports: a workload with a command needs at least one port")
    return WorkloadSpec(
        name=name,
        namespace=_name(raw, "namespace", where, "default"),
        clusters=_cluster_list(raw, where, clusters),
        replicas=replicas,
        labels=labels,
        service_account=_str(raw, "serviceAccount", where, "default"),
        ports=ports,
        command=tuple(command),
        env=_str_map(raw.get("env"), f"{where}.env"),
        zone=str(raw.get("zone") or ""),
        gateway=gateway,
        readiness_path=path,
        readiness_tcp="tcpSocket" in readiness,
        interception=_interception(raw.get("interception", ""), f"{where}.interception", allow_auto=False),
        annotations=_annotations(raw.get("annotations"), f"{where}.annotations"),
    )


INTERCEPTION_MODES = ("auto", "transparent", "explicit")


def _interception(raw: Any, where: str, *, allow_auto: bool = True) -> str:
    if raw in ("", None):
        return "" if not allow_auto else "auto"
    modes = INTERCEPTION_MODES if allow_auto else INTERCEPTION_MODES[1:]
    if raw not in modes:
        raise ManifestError(f"{where}: expected {' or '.join(modes)}, got {raw!r}")
    return str(raw)


def _annotations(raw: Any, where: str) -> dict[str, str]:
    out = _str_map(raw, where)
    try:
        capture_from_annotations(out)
    except CaptureSpecError as e:
        raise ManifestError(f"{where}: {e}") from e
    try:
        app_metrics(out)
    except ValueError as e:
        raise ManifestError(f"{where}: {e}") from e
    return out


SCRAPE, SCRAPE_PORT, SCRAPE_PATH = "prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"
MERGE_METRICS = "prometheus.istio.io/merge-metrics"


def app_metrics(annotations: Mapping[str, str]) -> tuple[int, str] | None:
    """Istio's metrics merging: a workload annotated ``prometheus.io/scrape: "true"`` with ``prometheus.io/port``
    (and ``prometheus.io/path``, default ``/metrics``) has its application's metrics served by its agent's status
    port beside Envoy's, unless ``prometheus.istio.io/merge-metrics: "false"``; Prometheus scrapes the status port
    only. None when not asked for (Istio merges nothing without a port either). ValueError names a bad value."""
    def flag(key: str, default: str) -> bool:
        value = annotations.get(key, default).strip().lower()
        if value not in ("true", "false"):
            raise ValueError(f"annotation {key}: expected \"true\" or \"false\", got {annotations[key]!r}")
        return value == "true"

    scrape, merge = flag(SCRAPE, "false"), flag(MERGE_METRICS, "true")
    port_text, path = annotations.get(SCRAPE_PORT, "").strip(), annotations.get(SCRAPE_PATH, "/metrics").strip()
    if port_text and not (port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise ValueError(f"annotation {SCRAPE_PORT}: expected a port number 1-65535, got {port_text!r}")
    if not path.startswith("/"):
        raise ValueError(f"annotation {SCRAPE_PATH}: expected a path starting with '/', got {path!r}")
    if not (scrape and merge and port_text):
        return None
    return int(port_text), path


def service_entry(raw: Any, i: int) -> dict[str, Any]:
    """Compile the simple service form into a ServiceEntry (MESH_INTERNAL, STATIC, workloadSelector)."""
    where = f"services[{i}]"
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{where}: expected a map")
    if raw.get("kind") == "ServiceEntry":
        return dict(raw)
    name = _name(raw, "name", where)
    ns = _name(raw, "namespace", f"service {name}", "default")
    ports = _ports(raw.get("ports"), f"service {name}.ports")
    if not ports:
        raise ManifestError(f"service {name}.ports: at least one port is required")
    selector = _labels(raw.get("selector"), f"service {name}.selector") or {"app": name}
    hosts = raw.get("hosts") or [f"{name}.{ns}.svc.cluster.local"]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "meshplane-runtime"}},
        "spec": {
            "hosts": [str(h) for h in hosts],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": p.port, "name": p.name, "protocol": p.protocol} for p in ports],
            "workloadSelector": {"labels": selector},
        },
    }


def parse_manifest(doc: Any, *, default_name: str = "mesh") -> Manifest:
    if not isinstance(doc, Mapping):
        raise ManifestError("manifest: expected a map with clusters, workloads, services")
    unknown = sorted(set(doc) - {"apiVersion", "kind", "name", "metadata", "clusters", "workloads", "services",
                                 "config", "security", "mesh"})
    if unknown:
        raise ManifestError(f"manifest: unknown field {unknown[0]!r}")
    raw_clusters = doc.get("clusters") or [{"name": "cluster-1"}]
    if not isinstance(raw_clusters, list):
        raise ManifestError("clusters: expected a list")
    clusters: dict[str, ClusterSpec] = {}
    for i, c in enumerate(raw_clusters):
        if not isinstance(c, Mapping):
            raise ManifestError(f"clusters[{i}]: expected a map")
        name = _name(c, "name", f"clusters[{i}]")
        if name in clusters:
            raise ManifestError(f"clusters[{i}]: duplicate cluster name {name!r}")
        if i >= 250:
            raise ManifestError("clusters: at most 250 clusters")
        clusters[name] = ClusterSpec(name, str(c.get("network") or "network-1"), str(c.get("region") or "region-1"),
                                     str(c.get("zone") or "zone-a"), i + 1)
    raw_workloads = doc.get("workloads") or []
    if not isinstance(raw_workloads, list):
        raise ManifestError("workloads: expected a list")
    workloads = [_workload(w, i, clusters) for i, w in enumerate(raw_workloads)]
    seen: set[tuple[str, str]] = set()
    for w in workloads:
        if (w.namespace, w.name) in seen:
            raise ManifestError(f"workload {w.name}: declared twice in namespace {w.namespace}")
        seen.add((w.namespace, w.name))
    objects: list[Mapping[str, Any]] = [service_entry(s, i) for i, s in enumerate(doc.get("services") or [])]
    config = doc.get("config") or []
    if not isinstance(config, list) or not all(isinstance(o, Mapping) and o.get("kind") for o in config):
        raise ManifestError("config: expected a list of API objects (each with apiVersion and kind)")
    objects.extend(config)
    md = doc.get("metadata") or {}
    name = str(doc.get("name") or (md.get("name") if isinstance(md, Mapping) else "") or default_name)
    sec = doc.get("security") or {}
    if not isinstance(sec, Mapping) or set(sec) - {"mtls", "certTtlSeconds"}:
        raise ManifestError("security: expected a map with mtls (bool) and certTtlSeconds (int)")
    try:
        security = SecuritySpec(bool(sec.get("mtls", True)), int(sec.get("certTtlSeconds", 24 * 3600)))
    except (TypeError, ValueError) as e:
        raise ManifestError(f"security.certTtlSeconds: {e}") from e
    if security.cert_ttl_s < 10:
        raise ManifestError("security.certTtlSeconds: at least 10 seconds")
    mesh = _mesh(doc.get("mesh"))
    for w in workloads:
        if w.interception == "transparent" and mesh.interception == "explicit":
            raise ManifestError(f"workload {w.name}.interception: transparent needs mesh.interception transparent "
                                "or auto (every instance then gets its own network namespace)")
    networks = sorted({c.network for c in clusters.values()})
    auto = len(networks) > 1 and security.mtls  # without mTLS there is nothing to pass through: flat, as before
    want_ew = mesh.east_west_gateways if mesh.east_west_gateways is not None else auto
    if want_ew and (EASTWEST_NAMESPACE, EASTWEST_NAME) not in seen:
        if not security.mtls:
            raise ManifestError("mesh.eastWestGateways: cross-network traffic is mTLS passed through by SNI; "
                                "it needs security.mtls: true")
        workloads.append(_eastwest_workload(clusters))
        objects.insert(0, _eastwest_service())
    return Manifest(name, tuple(clusters.values()), tuple(workloads), tuple(objects), security, mesh)


def _eastwest_workload(clusters: Mapping[str, ClusterSpec]) -> WorkloadSpec:
    """One east-west gateway in the first cluster of each network (its instances are labelled with their
    network by the supervisor)."""
    first: dict[str, str] = {}
    for c in clusters.values():
        first.setdefault(c.network, c.name)
    return WorkloadSpec(
        name=EASTWEST_NAME, namespace=EASTWEST_NAMESPACE, clusters=tuple(first.values()),
        labels={"istio": "eastwestgateway", "app": EASTWEST_NAME},
        service_account="istio-eastwestgateway-service-account",
        ports=(Port(EASTWEST_PORT, "tls", "TLS"),), gateway=True)


def _eastwest_service() -> dict[str, Any]:
    """The Service of the east-west gateways: how the control plane learns each network's gateway address."""
    se = service_entry({"name": EASTWEST_NAME, "namespace": EASTWEST_NAMESPACE,
                        "ports": [{"port": EASTWEST_PORT, "name": "tls", "protocol": "TLS"}],
                        "selector": {"istio": "eastwestgateway"}}, 0)
    se["spec"]["exportTo"] = ["."]
    return se


def _mesh(raw: Any) -> MeshSpec:
    raw = raw or {}
    if not isinstance(raw, Mapping) or set(raw) - {"localityLoadBalancing", "eastWestGateways", "interception",
                                                   "dnsUpstream"}:
        raise ManifestError("mesh: expected a map with localityLoadBalancing (bool), eastWestGateways "
                            "(true, false or auto), interception (auto, transparent, explicit), dnsUpstream "
                            "(HOST:PORT)")
    locality = raw.get("localityLoadBalancing", True)
    if not isinstance(locality, bool):
        raise ManifestError(f"mesh.localityLoadBalancing: expected true or false, got {locality!r}")
    ew = raw.get("eastWestGateways", "auto")
    if ew != "auto" and not isinstance(ew, bool):
        raise ManifestError(f"mesh.eastWestGateways: expected true, false or auto, got {ew!r}")
    upstream = raw.get("dnsUpstream", "")
    if upstream:
        host, sep, port = str(upstream).rpartition(":")
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            host = ""
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ManifestError(f"mesh.dnsUpstream: expected IPv4:PORT, got {upstream!r}")
    return MeshSpec(locality_lb=locality, east_west_gateways=None if ew == "auto" else ew,
                    interception=_interception(raw.get("interception", "auto"), "mesh.interception"),
                    dns_upstream=str(upstream or ""))


def load_manifest(path: Path) -> Manifest:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        raise ManifestError(f"{path}: {e}") from e
    if not docs:
        raise ManifestError(f"{path}: empty manifest")
    if not isinstance(docs[0], Mapping):
        raise ManifestError(f"{path}: expected a map with clusters, workloads, services at the top, "
                            f"got {type(docs[0]).__name__}")
    # A manifest may be followed by more YAML documents: API objects appended to ``config``.
    head = dict(docs[0])
    if docs[1:]:
        head["config"] = list(head.get("config") or []) + docs[1:]
    return parse_manifest(head, default_name=path.stem)


def instance_address(mesh_octet: int, cluster_index: int, n: int) -> str:
    """``127.<mesh>.<cluster>.<n>``: one loopback address per instance; cluster 0 is the control plane's."""
    if not (2 <= mesh_octet <= 254 and 0 <= cluster_index <= 254 and 1 <= n <= 254):
        raise ManifestError(f"address 127.{mesh_octet}.{cluster_index}.{n} out of range (at most 254 instances "
                            "per cluster)")
    return str(ipaddress.IPv4Address(f"127.{mesh_octet}.{cluster_index}.{n}"))


def expand(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{key}`` placeholders that name a known value; everything else stays as written."""
    return re.sub(r"\{([a-z_]+)\}", lambda m: values.get(m.group(1), m.group(0)), template)
