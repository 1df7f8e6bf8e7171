"""The immutable PushContext: one config version and one registry snapshot, indexed once for every proxy.

Istio's ``PushContext`` is the model: building the indexes (VirtualServices by gateway and host with
exportTo, DestinationRules by host, Gateways, Sidecars) costs once per config version; every proxy's
generation only looks things up. An endpoint-only change (:meth:`PushContext.with_registry`) reuses the config
indexes; a new config version re-reads only the VirtualServices that changed (``ConfigIndex.vs_records`` of the
previous context). The context also
memoises generated resources (see ``generate``) so proxies that see the same thing share serialized protos; the
memo is private state that never changes what the context means.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from meshplane.model import spec as istio
from meshplane.model.config import ConfigSnapshot
from meshplane.model.labels import labels_match
from meshplane.model.names import Hostname
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.resources import (
    DESTINATION_RULES,
    GATEWAYS,
    SIDECARS,
    TRAFFIC_LABELS,
    VIRTUAL_SERVICES,
)
from meshplane.model.service import RegistrySnapshot, Service, export_namespaces
from meshplane.model.spec import ConfigObject
from meshplane.translate.hosts import host_matches, namespace_matches, resolve_host
from meshplane.translate.memo import PushMemo, Slot
from meshplane.translate.mesh import MeshSettings

MESH_GATEWAY = "mesh"


@dataclass(frozen=True, slots=True, eq=False)
class _Rec:
    """What every record shares: the decoded object and its identity."""

    obj: ConfigObject[Any]

    @property
    def namespace(self) -> str:
        return self.obj.meta.namespace

    @property
    def name(self) -> str:
        return self.obj.meta.name

    @property
    def key(self) -> str:
        return self.obj.key

    @property
    def order(self) -> tuple[str, str, str]:
        return self.obj.order



@dataclass(frozen=True, slots=True, eq=False)
class VirtualServiceRec(_Rec):
    hosts: tuple[Hostname, ...]  # resolved (FQDN or wildcard); empty for a delegate
    gateways: tuple[str, ...]  # "mesh" or "ns/name"
    export_to: frozenset[str]
    source_labels: bool = False  # some route matches on sourceLabels (the view is label-sensitive)

    @property
    def spec(self) -> istio.VirtualService:
        return cast(istio.VirtualService, self.obj.spec)

    def visible_in(self, namespace: str) -> bool:
        return "*" in self.export_to or namespace in self.export_to


@dataclass(frozen=True, slots=True, eq=False)
class DestinationRuleRec(_Rec):
    host: Hostname  # resolved
    export_to: frozenset[str]
    selector: Mapping[str, str] | None

    @property
    def spec(self) -> istio.DestinationRule:
        return cast(istio.DestinationRule, self.obj.spec)

    def subset(self, name: str) -> istio.Subset | None:
        for s in self.spec.subsets:
            if s.name == name:
                return s
        return None



@dataclass(frozen=True, slots=True, eq=False)
class GatewayRec(_Rec):
    selector: Mapping[str, str]

    @property
    def servers(self) -> tuple[istio.Server, ...]:
        return cast(istio.Gateway, self.obj.spec).servers



@dataclass(frozen=True, slots=True, eq=False)
class SidecarRec(_Rec):
    selector: Mapping[str, str] | None
    egress_hosts: tuple[tuple[str, str], ...]  # (namespace pattern, host pattern)
    outbound_policy: str | None

    @property
    def spec(self) -> istio.Sidecar:
        return cast(istio.Sidecar, self.obj.spec)

    def allows(self, svc_namespace: str, hostname: str) -> bool:
        return any(
            namespace_matches(ns, svc_namespace, self.namespace) and host_matches(h, hostname)
            for ns, h in self.egress_hosts
        )


@dataclass(frozen=True, slots=True, eq=False)
class ConfigIndex:
    """Everything derived from the config alone (reused by :meth:`PushContext.with_registry`)."""

    mesh_virtual_services: tuple[VirtualServiceRec, ...]
    mesh_vs_by_host: Mapping[Hostname, tuple[VirtualServiceRec, ...]]  # exact hosts; wildcards in mesh_vs_wildcards
    mesh_vs_wildcards: tuple[VirtualServiceRec, ...]
    # Whether any config depends on a proxy's labels (sourceLabels, workloadSelector): if not, proxies of a
    # namespace share one view whatever their labels.
    label_sensitive: bool
    gateway_virtual_services: Mapping[str, tuple[VirtualServiceRec, ...]]  # "ns/name" -> VSs bound to it
    delegates: Mapping[tuple[str, str], VirtualServiceRec]
    destination_rules: Mapping[Hostname, tuple[DestinationRuleRec, ...]]  # resolved host -> rules, oldest first
    wildcard_destination_rules: tuple[DestinationRuleRec, ...]
    gateways: tuple[GatewayRec, ...]
    sidecars: Mapping[str, tuple[SidecarRec, ...]]  # namespace -> sidecars
    # The VirtualService records by object identity, for the next index: records are pure functions of (object,
    # domain suffix) and the controller keeps unchanged objects identical across snapshots, so a burst of
    # VirtualService writes re-reads only the written ones. Each entry keeps its object, so an id is not reused.
    vs_records: Mapping[int, VirtualServiceRec] = field(default_factory=dict)
    domain_suffix: str = ""


def _resolve_gateway(ref: str, namespace: str, domain_suffix: str) -> str:
    if ref == MESH_GATEWAY:
        return ref
    if "/" in ref:
        return ref
    if "." in ref:  # deprecated FQDN form: name.namespace.svc.cluster.local
        parts = ref.split(".")
        return f"{parts[1]}/{parts[0]}"
    return f"{namespace}/{ref}"


def _vs_rec(obj: ConfigObject[istio.VirtualService], suffix: str) -> VirtualServiceRec:
    ns, vs = obj.meta.namespace, obj.spec
    hosts = tuple(resolve_host(h, ns, suffix) for h in vs.hosts)
    gateways = tuple(_resolve_gateway(g, ns, suffix) for g in vs.gateways or (MESH_GATEWAY,))
    return VirtualServiceRec(obj, hosts, gateways, export_namespaces(vs.export_to, ns), _uses_source_labels(vs))


def build_index(config: ConfigSnapshot, mesh: MeshSettings, previous: ConfigIndex | None = None) -> ConfigIndex:
    """Index ``config`` for lookups; ``previous`` (the last index) lends the records of unchanged objects."""
    suffix = mesh.domain_suffix
    mesh_vs: list[VirtualServiceRec] = []
    gw_vs: dict[str, list[VirtualServiceRec]] = {}
    delegates: dict[tuple[str, str], VirtualServiceRec] = {}
    known = previous.vs_records if previous is not None and previous.domain_suffix == suffix else {}
    recs: dict[int, VirtualServiceRec] = {}
    for obj in config.of(VIRTUAL_SERVICES):
        hit = known.get(id(obj))
        rec = hit if hit is not None and hit.obj is obj else _vs_rec(obj, suffix)
        recs[id(obj)] = rec
        hosts, gateways, ns, name = rec.hosts, rec.gateways, rec.namespace, rec.name
        if not hosts:
            delegates[(ns, name)] = rec
            continue
        for g in gateways:
            if g == MESH_GATEWAY:
                mesh_vs.append(rec)
            else:
                gw_vs.setdefault(g, []).append(rec)
    mesh_vs.sort(key=lambda r: r.order)
    by_host: dict[Hostname, list[VirtualServiceRec]] = {}
    wild_vs: list[VirtualServiceRec] = []
    for r in mesh_vs:
        for h in r.hosts:
            if "*" in h:
                if not wild_vs or wild_vs[-1] is not r:
                    wild_vs.append(r)
            else:
                by_host.setdefault(h, []).append(r)
    label_sensitive = any(r.source_labels for r in recs.values())
    drs: dict[Hostname, list[DestinationRuleRec]] = {}
    wild: list[DestinationRuleRec] = []
    for obj in config.of(DESTINATION_RULES):
        ns, dr = obj.meta.namespace, obj.spec
        host = resolve_host(dr.host or "", ns, suffix)
        if not host:
            continue
        ws = dr.workload_selector
        rec2 = DestinationRuleRec(obj, host, export_namespaces(dr.export_to, ns),
                                  dict(ws.match_labels) if ws is not None else None)
        if host.startswith("*"):
            wild.append(rec2)
        else:
            drs.setdefault(host, []).append(rec2)
    gws: list[GatewayRec] = []
    for obj in config.of(GATEWAYS):
        gws.append(GatewayRec(obj, dict(obj.spec.selector)))
    gws.sort(key=lambda g: (g.namespace, g.name))
    sidecars: dict[str, list[SidecarRec]] = {}
    for obj in config.of(SIDECARS):
        ns, sc = obj.meta.namespace, obj.spec
        egress: list[tuple[str, str]] = []
        for e in sc.egress:
            for h in e.hosts:
                pns, sep, phost = h.partition("/")
                if not sep:
                    pns, phost = "*", pns
                egress.append((pns, resolve_host(phost, ns if pns in (".", "*") else pns, suffix)))
        otp = sc.outbound_traffic_policy.mode if sc.outbound_traffic_policy is not None else None
        sidecars.setdefault(ns, []).append(SidecarRec(
            obj, dict(sc.workload_selector.labels) if sc.workload_selector is not None else None,
            tuple(egress), otp.value if otp else None))
    label_sensitive = label_sensitive or bool(config.of(TRAFFIC_LABELS)) or any(  # $getLabel: see trafficlabel
        r.selector for rs in drs.values() for r in rs) or any(
        r.selector for r in wild) or any(sc.selector for scs in sidecars.values() for sc in scs)
    return ConfigIndex(
        mesh_virtual_services=tuple(mesh_vs),
        mesh_vs_by_host={k: tuple(v) for k, v in by_host.items()},
        mesh_vs_wildcards=tuple(wild_vs),
        label_sensitive=label_sensitive,
        gateway_virtual_services={k: tuple(sorted(v, key=lambda r: r.order)) for k, v in gw_vs.items()},
        delegates=delegates,
        destination_rules={k: tuple(sorted(v, key=lambda r: r.order)) for k, v in drs.items()},
        wildcard_destination_rules=tuple(sorted(wild, key=lambda r: (-len(r.host), r.order))),
        gateways=tuple(gws),
        sidecars={k: tuple(sorted(v, key=lambda r: r.name)) for k, v in sidecars.items()},
        vs_records=recs,
        domain_suffix=suffix,
    )


def _uses_source_labels(vs: istio.VirtualService) -> bool:
    return any(m.source_labels for route in vs.http for m in route.match) or any(
        m.source_labels for route in vs.tcp for m in route.match) or any(
        m.source_labels for route in vs.tls for m in route.match)


@dataclass(frozen=True, slots=True)
class ProxyScope:
    """What one proxy sees: its Sidecar (if any), visible services, outbound policy. Hashable key included."""

    key: tuple[object, ...]
    sidecar: SidecarRec | None
    services: tuple[Service, ...]
    outbound_policy: str
    gateways: tuple[GatewayRec, ...]
    hostnames: frozenset[Hostname] = frozenset()  # of ``services``: O(1) "does this change concern me"

    def sees_any(self, hosts: frozenset[Hostname]) -> bool:
        small, large = (hosts, self.hostnames) if len(hosts) <= len(self.hostnames) else (self.hostnames, hosts)
        return any(h in large for h in small)


# A proxy's view (its Sidecar, visible services, gateways) depends on config and services, never on endpoints.
SCOPES: Slot[tuple[object, ...], ProxyScope] = Slot("scopes", endpoint_free=True)


@dataclass(frozen=True, eq=False)
class PushContext:
    config: ConfigSnapshot
    registry: RegistrySnapshot
    mesh: MeshSettings
    index: ConfigIndex
    version: str
    # JWKS documents the control plane fetched (``jwksUri`` -> JWKS JSON; see ``jwt``), fixed for this context.
    jwks: Mapping[str, str] = field(default_factory=dict)
    # Memo of generated resources and proxy scopes (translate.memo); private, never changes what the context means.
    memo: PushMemo = field(default_factory=PushMemo, repr=False, compare=False)

    def with_registry(self, registry: RegistrySnapshot, changed: frozenset[Hostname] | None = None) -> PushContext:
        """The same config with new endpoints/services: the config indexes are reused; of the memo, what does
        not depend on endpoints (proxy scopes, cluster names) is kept when the services are the same object
        (an endpoint-only update), so an EDS push costs what changed, not a new scope per proxy. When the hosts
        whose endpoints changed are known (``changed``), every ClusterLoadAssignment of another host is kept too:
        one moved endpoint rebuilds only its own host's assignments, not the mesh's (an assignment depends on its
        host's endpoints, the config and the proxy's view only; east-west gateway moves are full pushes)."""
        memo = self.memo.after_endpoint_push(changed) if registry.services is self.registry.services else PushMemo()
        return PushContext(self.config, registry, self.mesh, self.index, _version(self.config, registry, self.jwks),
                           self.jwks, memo)

    # ---- lookups -------------------------------------------------------------------------------------------

    def service(self, host: Hostname) -> Service | None:
        return self.registry.service(host)

    def sidecar_for(self, proxy: Proxy) -> SidecarRec | None:
        if proxy.type is not ProxyType.SIDECAR:
            return None
        own = self.index.sidecars.get(proxy.namespace, ())
        for sc in own:
            if sc.selector and labels_match(sc.selector, proxy.labels):
                return sc
        for sc in own:
            if not sc.selector:
                return sc
        for sc in self.index.sidecars.get(self.mesh.root_namespace, ()):
            if not sc.selector:
                return sc
        return None

    def scope(self, proxy: Proxy) -> ProxyScope:
        labels: tuple[tuple[str, str], ...] = ()
        if self.index.label_sensitive or proxy.type is ProxyType.ROUTER:
            labels = tuple(sorted(proxy.labels.items()))
        key = (proxy.type, proxy.namespace, labels)
        cached = self.memo.get(SCOPES, key)
        if cached is not None:
            return cached
        sidecar = self.sidecar_for(proxy)
        services = tuple(
            svc for _, svc in sorted(self.registry.services.items())
            if svc.visible_in(proxy.namespace) and (sidecar is None or not sidecar.egress_hosts
                                                    or sidecar.allows(svc.namespace, svc.hostname))
        )
        policy = (sidecar.outbound_policy if sidecar and sidecar.outbound_policy else
                  self.mesh.outbound_traffic_policy).upper()
        gateways: tuple[GatewayRec, ...] = ()
        if proxy.type is ProxyType.ROUTER:
            gateways = tuple(g for g in self.index.gateways if g.selector and labels_match(g.selector, proxy.labels))
        scope = ProxyScope(
            key=(proxy.type.value, proxy.namespace, sidecar.key if sidecar else "",
                 tuple(g.key for g in gateways), labels),
            sidecar=sidecar, services=services, outbound_policy=policy, gateways=gateways,
            hostnames=frozenset(svc.hostname for svc in services))
        return self.memo.put(SCOPES, key, scope)

    def virtual_service_for(self, host: Hostname, proxy_namespace: str,
                            candidates: Sequence[VirtualServiceRec] | None = None) -> VirtualServiceRec | None:
        """The VirtualService that routes ``host``: an exact host match (oldest first) beats the most specific
        wildcard; only those exported to the proxy's namespace count."""
        best: tuple[int, VirtualServiceRec] | None = None
        if candidates is None:
            for vs in self.index.mesh_vs_by_host.get(host, ()):
                if vs.visible_in(proxy_namespace):
                    return vs
            candidates = self.index.mesh_vs_wildcards
        for vs in candidates:
            if not vs.visible_in(proxy_namespace):
                continue
            for h in vs.hosts:
                if h == host:
                    return vs
                if host_matches(h, host) and (best is None or len(h) > best[0]):
                    best = (len(h), vs)
        return best[1] if best else None

    def destination_rule(self, host: Hostname, proxy_namespace: str,
                         proxy_labels: Mapping[str, str] | None = None) -> DestinationRuleRec | None:
        """Istio's precedence: a rule in the proxy's namespace, then in the service's namespace, then the root
        namespace, then any exported one; exact host beats wildcard."""
        svc = self.registry.service(host)
        svc_ns = svc.namespace if svc else ""
        candidates = list(self.index.destination_rules.get(host, ()))
        candidates += [r for r in self.index.wildcard_destination_rules if host_matches(r.host, host)]
        visible = [r for r in candidates if ("*" in r.export_to or proxy_namespace in r.export_to)
                   and (r.selector is None or (proxy_labels is not None and labels_match(r.selector, proxy_labels)))]
        for want in (proxy_namespace, svc_ns, self.mesh.root_namespace):
            for r in visible:
                if r.namespace == want:
                    return r
        return visible[0] if visible else None


def _version(config: ConfigSnapshot, registry: RegistrySnapshot, jwks: Mapping[str, str]) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(str(config.version).encode())
    h.update(registry.version.encode() or str(id(registry)).encode())
    for uri in sorted(jwks):
        h.update(f"{uri}\0{jwks[uri]}\0".encode())
    return h.hexdigest()


def build_push_context(config: ConfigSnapshot, registry: RegistrySnapshot, mesh: MeshSettings,
                       previous: PushContext | None = None, jwks: Mapping[str, str] | None = None) -> PushContext:
    """A new context; ``previous`` (the last one built) lends the config records of unchanged objects. ``jwks``:
    the keys the control plane resolved for ``jwksUri``s (``jwks`` module of the server), copied."""
    index = build_index(config, mesh, previous.index if previous is not None else None)
    keys = dict(jwks or {})
    return PushContext(config, registry, mesh, index, _version(config, registry, keys), keys)
