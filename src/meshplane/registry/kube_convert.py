"""Pure conversion of Kubernetes objects (Services, EndpointSlices, Pods, Nodes, Namespaces) into mesh
Services and Endpoints, and the per-cluster index that keeps that conversion incremental.

Why separate from the watch loop (:mod:`meshplane.kube.source`): that does I/O and is tested against a fake API
server; everything here is plain functions over JSON-shaped objects (``dict``, as the API sends them), unit-tested
without a network. Following Istio's kube controller (pilot/pkg/serviceregistry/kube/controller): a Service is
named ``NAME.NAMESPACE.svc.DOMAIN`` in every cluster (namespace sameness), its endpoints come from the
EndpointSlices labelled ``kubernetes.io/service-name``, each endpoint takes labels and service account from its
Pod and locality from its Node (``topology.kubernetes.io/region|zone``, ``topology.istio.io/subzone``); the
network is the Pod's, else the Node's, else the Namespace's ``topology.istio.io/network`` label, else the
cluster's. Only namespaces matching the discovery selectors are part of the mesh.

:class:`ClusterIndex` holds the objects of one cluster and recomputes only the hosts a change touches, so an
EndpointSlice change in one cluster recomputes one host of one shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from meshplane.model.names import Hostname, Namespace
from meshplane.model.proxy import Locality
from meshplane.model.service import Endpoint, Resolution, Service, ServicePort, parse_protocol
from meshplane.model.spec import MemberClusterDiscoverySelectors, MemberClusterDiscoverySelectorsMatchExpressions

KubeObject = Mapping[str, Any]

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
NETWORK_LABEL = "topology.istio.io/network"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_DOMAIN = "cluster.local"

# The kinds a member cluster's source keeps, by the name used in the index and the API paths.
NAMESPACES = "namespaces"
NODES = "nodes"
PODS = "pods"
SERVICES = "services"
ENDPOINT_SLICES = "endpointslices"
KINDS: tuple[str, ...] = (NAMESPACES, NODES, PODS, SERVICES, ENDPOINT_SLICES)


def _meta(obj: KubeObject) -> Mapping[str, Any]:
    md = obj.get("metadata")
    return md if isinstance(md, dict) else {}


def _labels(obj: KubeObject) -> dict[str, str]:
    raw = _meta(obj).get("labels")
    if not isinstance(raw, dict):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


def object_key(obj: KubeObject) -> tuple[str, str]:
    """(namespace, name); namespace is "" for cluster-scoped objects (Nodes, Namespaces)."""
    md = _meta(obj)
    return str(md.get("namespace") or ""), str(md.get("name") or "")


def hostname(name: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> Hostname:
    return Hostname(f"{name}.{namespace}.svc.{domain}")


# --- discovery selectors ----------------------------------------------------------------------------------------

DiscoverySelector = MemberClusterDiscoverySelectors
"""One of a MemberCluster's ``spec.discoverySelectors``, as the typed model decodes it."""


def _requirement_holds(labels: Mapping[str, str], req: MemberClusterDiscoverySelectorsMatchExpressions) -> bool:
    key = req.key or ""
    values = set(req.values)
    op = req.operator
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False  # no operator selects nothing, as Kubernetes rejects it


def selector_matches(selector: DiscoverySelector, labels: Mapping[str, str]) -> bool:
    """A Kubernetes LabelSelector (matchLabels + matchExpressions); an empty selector matches everything."""
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    return all(_requirement_holds(labels, r) for r in selector.match_expressions)


def namespace_selected(selectors: Sequence[DiscoverySelector], namespace_labels: Mapping[str, str]) -> bool:
    """Istio's discoverySelectors: no selectors means every namespace; otherwise any selector may match."""
    if not selectors:
        return True
    return any(selector_matches(s, namespace_labels) for s in selectors)


# --- nodes, pods -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NodeInfo:
    locality: Locality
    network: str = ""


def node_info(node: KubeObject) -> NodeInfo:
    labels = _labels(node)
    return NodeInfo(
        Locality(labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, ""), labels.get(SUBZONE_LABEL, "")),
        labels.get(NETWORK_LABEL, ""),
    )


@dataclass(frozen=True, slots=True)
class PodInfo:
    """The parts of a Pod an endpoint carries; compared to skip Pod updates that change nothing of these."""

    labels: Mapping[str, str]
    service_account: str
    node_name: str

    @property
    def key(self) -> tuple[object, ...]:
        return (tuple(sorted(self.labels.items())), self.service_account, self.node_name)


def pod_info(pod: KubeObject) -> PodInfo:
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    return PodInfo(
        MappingProxyType(_labels(pod)),
        str(spec.get("serviceAccountName") or spec.get("serviceAccount") or ""),
        str(spec.get("nodeName") or ""),
    )


# --- services ----------------------------------------------------------------------------------------------------

def convert_service(svc: KubeObject, domain: str = DEFAULT_DOMAIN) -> Service | None:
    """A Kubernetes Service as a mesh Service, or None for kinds the mesh does not route (ExternalName)."""
    namespace, name = object_key(svc)
    spec = svc.get("spec") if isinstance(svc.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    svc_type = str(spec.get("type") or "ClusterIP")
    if not name or svc_type == "ExternalName":
        return None
    ports: list[ServicePort] = []
    for p in spec.get("ports") or []:
        if not isinstance(p, dict) or not p.get("port"):
            continue
        number = int(p["port"])
        port_name = str(p.get("name") or f"port-{number}")
        # appProtocol wins over the name prefix (Istio's protocol selection); "kubernetes.io/h2c" style values
        # keep only their last segment.
        app = str(p.get("appProtocol") or "").rsplit("/", 1)[-1]
        protocol = parse_protocol(app if app not in ("h2c",) else "HTTP2", str(p.get("name") or ""))
        if str(p.get("protocol") or "TCP").upper() == "UDP":
            continue  # the mesh carries TCP only, as Istio
        target = p.get("targetPort")
        ports.append(ServicePort(port_name, number, protocol, target if isinstance(target, int) else 0))
    cluster_ip = str(spec.get("clusterIP") or "")
    addresses = tuple(a for a in [cluster_ip] if a and a != "None")
    return Service(
        hostname=hostname(name, namespace, domain),
        namespace=Namespace(namespace),
        ports=tuple(ports),
        addresses=addresses,
        # A headless Service (clusterIP None) still gets EDS endpoints here; STATIC either way.
        resolution=Resolution.STATIC,
        labels=MappingProxyType(_labels(svc)),
        source=f"Kubernetes/{namespace}/{name}",
    )


# --- endpoint slices ---------------------------------------------------------------------------------------------

def _cond(conditions: Mapping[str, Any], key: str, default: bool) -> bool:
    value = conditions.get(key)
    return default if value is None else bool(value)


def endpoint_healthy(conditions: Mapping[str, Any] | None) -> bool:
    """Ready (unset means ready, per the EndpointSlice API) and not terminating."""
    c = conditions or {}
    return _cond(c, "ready", True) and not _cond(c, "terminating", False)


@dataclass(frozen=True, slots=True)
class ClusterDefaults:
    """What a member cluster's MemberCluster says about all of its workloads, used when nodes do not."""

    cluster_id: str
    network: str = ""
    locality: Locality = field(default_factory=Locality)


def slice_service_name(es: KubeObject) -> str:
    return _labels(es).get(SERVICE_NAME_LABEL, "")


def slice_pod_refs(es: KubeObject) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    ns = object_key(es)[0]
    for ep in es.get("endpoints") or []:
        ref = ep.get("targetRef") if isinstance(ep, dict) else None
        if isinstance(ref, dict) and ref.get("kind", "Pod") == "Pod" and ref.get("name"):
            out.append((str(ref.get("namespace") or ns), str(ref["name"])))
    return out


def endpoints_from_slice(
    es: KubeObject,
    *,
    defaults: ClusterDefaults,
    pods: Mapping[tuple[str, str], PodInfo],
    nodes: Mapping[str, NodeInfo],
    namespace_network: str = "",
) -> list[Endpoint]:
    """The endpoints of one EndpointSlice (IPv4/IPv6 address types; FQDN slices are skipped)."""
    if str(es.get("addressType") or "IPv4") not in ("IPv4", "IPv6"):
        return []
    namespace = object_key(es)[0]
    ports: dict[str, int] = {}
    for p in es.get("ports") or []:
        if isinstance(p, dict) and p.get("port") is not None:
            ports[str(p.get("name") or "")] = int(p["port"])
    out: list[Endpoint] = []
    for raw in es.get("endpoints") or []:
        if not isinstance(raw, dict):
            continue
        pod: PodInfo | None = None
        ref = raw.get("targetRef")
        if isinstance(ref, dict) and ref.get("kind", "Pod") == "Pod":
            pod = pods.get((str(ref.get("namespace") or namespace), str(ref.get("name") or "")))
        node_name = str(raw.get("nodeName") or (pod.node_name if pod else ""))
        node = nodes.get(node_name)
        locality = node.locality if node is not None else Locality()
        if not locality.zone and raw.get("zone"):
            locality = Locality(locality.region, str(raw["zone"]), locality.subzone)
        if not locality.region and not locality.zone:
            locality = defaults.locality
        labels = dict(pod.labels) if pod else {}
        network = (labels.get(NETWORK_LABEL) or (node.network if node else "") or namespace_network
                   or defaults.network)
        healthy = endpoint_healthy(raw.get("conditions") if isinstance(raw.get("conditions"), dict) else None)
        workload = str(ref.get("name") or "") if isinstance(ref, dict) else ""
        for address in raw.get("addresses") or []:
            out.append(Endpoint(
                address=str(address),
                ports=MappingProxyType(ports),
                labels=MappingProxyType(labels),
                service_account=pod.service_account if pod else "",
                cluster_id=defaults.cluster_id,
                network=network,
                locality=locality,
                healthy=healthy,
                workload_name=workload,
                namespace=namespace,
            ))
    return out


# --- the incremental index of one cluster ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Change:
    """What one applied event changed: hosts whose endpoints differ, and whether the service list differs."""

    hosts: frozenset[Hostname] = frozenset()
    services: bool = False

    def __bool__(self) -> bool:
        return self.services or bool(self.hosts)

    def __or__(self, other: Change) -> Change:
        return Change(self.hosts | other.hosts, self.services or other.services)


class ClusterIndex:
    """The Kubernetes objects of one member cluster and the mesh view derived from them.

    ``apply(kind, event_type, obj)`` and ``replace(kind, objects)`` return a :class:`Change`; only the hosts
    a change can affect are recomputed (a slice: its service's host; a pod: the hosts whose slices point at it;
    a node: the hosts with endpoints on it; a namespace or service: the hosts of that namespace / service).
    """

    def __init__(self, defaults: ClusterDefaults, discovery_selectors: Sequence[DiscoverySelector] = (),
                 domain: str = DEFAULT_DOMAIN) -> None:
        self.defaults = defaults
        self.selectors = tuple(discovery_selectors)
        self.domain = domain
        self._objects: dict[str, dict[tuple[str, str], KubeObject]] = {k: {} for k in KINDS}
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._services: dict[tuple[str, str], Service] = {}  # selected services by (ns, name)
        self._slices_by_service: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._service_of_slice: dict[tuple[str, str], tuple[str, str]] = {}
        self._hosts_by_pod: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._hosts_by_node: dict[str, set[tuple[str, str]]] = {}
        self._endpoints: dict[Hostname, tuple[Endpoint, ...]] = {}
        self._service_list: tuple[Service, ...] = ()
        self._endpoint_view: Mapping[Hostname, tuple[Endpoint, ...]] = MappingProxyType({})

    # --- views ---

    def services(self) -> tuple[Service, ...]:
        return self._service_list

    def endpoints(self) -> Mapping[Hostname, tuple[Endpoint, ...]]:
        return self._endpoint_view

    def count(self, kind: str) -> int:
        return len(self._objects[kind])

    # --- changes ---

    def apply(self, kind: str, event_type: str, obj: KubeObject) -> Change:
        key = object_key(obj)
        objs = self._objects[kind]
        if event_type == "DELETED":
            old = objs.pop(key, None)
            if old is None:
                return Change()
        else:
            objs[key] = obj
        return self._refresh(kind, {key})

    def replace(self, kind: str, objects: Iterable[KubeObject]) -> Change:
        """A relist: the objects of ``kind`` are exactly these now."""
        new = {object_key(o): o for o in objects}
        old = self._objects[kind]
        touched = {k for k in set(old) | set(new) if old.get(k) is not new.get(k)}
        self._objects[kind] = new
        return self._refresh(kind, touched) if touched else Change()

    # --- internals ---

    def _selected(self, namespace: str) -> bool:
        ns = self._objects[NAMESPACES].get(("", namespace))
        labels = _labels(ns) if ns is not None else {}
        if self.selectors and ns is None:
            return False
        return namespace_selected(self.selectors, labels)

    def _namespace_network(self, namespace: str) -> str:
        ns = self._objects[NAMESPACES].get(("", namespace))
        return _labels(ns).get(NETWORK_LABEL, "") if ns is not None else ""

    def _refresh(self, kind: str, keys: set[tuple[str, str]]) -> Change:
        services_changed = False
        hosts: set[tuple[str, str]] = set()
        if kind == NAMESPACES:
            names = {name for _, name in keys}
            for key in list(self._objects[SERVICES]) + list(self._services):
                if key[0] in names:
                    services_changed |= self._refresh_service(key)
                    hosts.add(key)
            for es_key, es_obj in self._objects[ENDPOINT_SLICES].items():
                if es_key[0] in names:
                    hosts.add((es_key[0], slice_service_name(es_obj)))
        elif kind == SERVICES:
            for key in keys:
                services_changed |= self._refresh_service(key)
                hosts.add(key)
        elif kind == ENDPOINT_SLICES:
            for key in keys:
                es = self._objects[ENDPOINT_SLICES].get(key)
                previous = self._service_of_slice.pop(key, None)
                if previous is not None:
                    self._slices_by_service.get(previous, set()).discard(key)
                    hosts.add(previous)
                if es is not None and slice_service_name(es):
                    svc_key = (key[0], slice_service_name(es))
                    self._service_of_slice[key] = svc_key
                    self._slices_by_service.setdefault(svc_key, set()).add(key)
                    hosts.add(svc_key)
        elif kind == PODS:
            for key in keys:
                pod = self._objects[PODS].get(key)
                info = pod_info(pod) if pod is not None else None
                old = self._pods.get(key)
                if (info.key if info else None) == (old.key if old else None):
                    continue
                if info is None:
                    self._pods.pop(key, None)
                else:
                    self._pods[key] = info
                hosts |= self._hosts_by_pod.get(key, set())
        elif kind == NODES:
            for _, name in keys:
                node_obj = self._objects[NODES].get(("", name))
                ninfo = node_info(node_obj) if node_obj is not None else None
                if ninfo == self._nodes.get(name):
                    continue
                if ninfo is None:
                    self._nodes.pop(name, None)
                else:
                    self._nodes[name] = ninfo
                hosts |= self._hosts_by_node.get(name, set())
        changed_hosts = {h for key in hosts if (h := self._refresh_endpoints(key)) is not None}
        if services_changed:
            self._service_list = tuple(self._services[k] for k in sorted(self._services))
        if changed_hosts:
            self._endpoint_view = MappingProxyType(dict(self._endpoints))
        return Change(frozenset(changed_hosts), services_changed)

    def _refresh_service(self, key: tuple[str, str]) -> bool:
        obj = self._objects[SERVICES].get(key)
        svc = convert_service(obj, self.domain) if obj is not None and self._selected(key[0]) else None
        old = self._services.get(key)
        if svc == old:
            return False
        if svc is None:
            del self._services[key]
        else:
            self._services[key] = svc
        return True

    def _refresh_endpoints(self, svc_key: tuple[str, str]) -> Hostname | None:
        """Recompute one host's endpoints; the host name if they changed."""
        host = hostname(svc_key[1], svc_key[0], self.domain)
        eps: list[Endpoint] = []
        if svc_key in self._services:
            net = self._namespace_network(svc_key[0])
            for es_key in sorted(self._slices_by_service.get(svc_key, ())):
                es = self._objects[ENDPOINT_SLICES].get(es_key)
                if es is None:
                    continue
                for pod_key in slice_pod_refs(es):
                    self._hosts_by_pod.setdefault(pod_key, set()).add(svc_key)
                    pod = self._pods.get(pod_key)
                    if pod is not None and pod.node_name:
                        self._hosts_by_node.setdefault(pod.node_name, set()).add(svc_key)
                for raw in es.get("endpoints") or []:
                    if isinstance(raw, dict) and raw.get("nodeName"):
                        self._hosts_by_node.setdefault(str(raw["nodeName"]), set()).add(svc_key)
                eps.extend(endpoints_from_slice(es, defaults=self.defaults, pods=self._pods, nodes=self._nodes,
                                                namespace_network=net))
        new = tuple(eps)
        old = self._endpoints.get(host, ())
        if [e.key() for e in new] == [e.key() for e in old]:
            return None
        if new:
            self._endpoints[host] = new
        else:
            self._endpoints.pop(host, None)
        return host
