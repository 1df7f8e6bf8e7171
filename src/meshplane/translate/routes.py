"""RDS for sidecars: one RouteConfiguration per outbound HTTP port (Istio's "9080"), plus ``http_proxy`` for
the explicit-proxy listener of the local runtime; gateways' route configurations come from ``gateway``.

A virtual host per (service, port) carries the Host values a client may use: the short name (same namespace
only), name.namespace, name.namespace.svc, the FQDN and the service's VIPs, each bare and with ``:port``. Domains
must be unique in one RouteConfiguration: in ``http_proxy`` (all ports together) a bare name belongs to the
service's port 80, or to its first HTTP port when it has no port 80. The last virtual host catches unknown hosts:
``PassthroughCluster`` under ALLOW_ANY, ``BlackHoleCluster`` under REGISTRY_ONLY.

Every route configuration (a gateway's too) says where the proxy's identity header may go: only to clusters of
mesh services (``in_mesh_cluster``; ``telemetry.send_identity_to_mesh``).
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from meshplane.model.names import Hostname
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.resources import HEADER_PROPAGATIONS, TRAFFIC_LABELS
from meshplane.model.service import Location, Service, ServicePort
from meshplane.translate import fallback, telemetry, trafficlabel
from meshplane.translate.clusters import known_cluster_names
from meshplane.translate.common import BLACKHOLE, PASSTHROUGH, cluster_name, parse_cluster_name, proto_duration
from meshplane.translate.context import MESH_GATEWAY, PushContext
from meshplane.translate.hosts import service_domains
from meshplane.translate.httproute import RouteScope, default_route, hash_policies, http_routes
from meshplane.translate.tcproute import service_connect_targets

HTTP_PROXY_ROUTE = "http_proxy"


def _service_routes(svc: Service, port: ServicePort, proxy: Proxy, ctx: PushContext,
                    scope: RouteScope) -> list[rc.Route]:
    vs = ctx.virtual_service_for(svc.hostname, proxy.namespace)
    if vs is not None and vs.spec.http:
        return http_routes(vs, scope)
    route = default_route(cluster_name("outbound", port.number, "", svc.hostname), scope)
    route.route.hash_policy.extend(hash_policies(svc.hostname, port.number, "", proxy, ctx))
    return [route]


def connect_route(name: str, cluster: str, weighted: list[tuple[str, int]] | None = None) -> rc.Route:
    """A CONNECT tunnel (how HTTP-proxy clients reach TLS and TCP services: ``https_proxy``) to ``cluster``, or
    split over ``weighted`` (cluster, weight) targets (a VirtualService ``tcp`` route)."""
    r = rc.Route(name=name)
    r.match.connect_matcher.SetInParent()
    if weighted and len(weighted) > 1:
        for target, weight in weighted:
            r.route.weighted_clusters.clusters.add(name=target).weight.value = weight
    else:
        r.route.cluster = cluster
    r.route.timeout.CopyFrom(proto_duration(0))
    up = r.route.upgrade_configs.add(upgrade_type="CONNECT")
    up.connect_config.SetInParent()
    return r


def catch_all(policy: str, connect: bool = False) -> rc.VirtualHost:
    allow = policy != "REGISTRY_ONLY"
    vh = rc.VirtualHost(name="allow_any" if allow else "block_all", domains=["*"])
    if connect:
        vh.routes.append(connect_route("connect", PASSTHROUGH if allow else BLACKHOLE))
    r = vh.routes.add(name="allow_any" if allow else "block_all")
    r.match.prefix = "/"
    r.route.cluster = PASSTHROUGH if allow else BLACKHOLE
    r.route.timeout.CopyFrom(proto_duration(0))
    return vh


def _vhost(svc: Service, port: ServicePort, domains: list[str], proxy: Proxy, ctx: PushContext,
           clusters: frozenset[str]) -> rc.VirtualHost:
    scope = RouteScope(proxy, ctx, port.number, frozenset({MESH_GATEWAY}), clusters)
    vh = rc.VirtualHost(name=f"{svc.hostname}:{port.number}", domains=domains)
    vh.routes.extend(_service_routes(svc, port, proxy, ctx, scope))
    return vh


def _domains(svc: Service, port: ServicePort, proxy: Proxy, ctx: PushContext, bare: bool) -> list[str]:
    out = service_domains(svc.hostname, svc.namespace, port.number, proxy.namespace, ctx.mesh.domain_suffix,
                          with_bare=bare)
    for vip in svc.addresses:
        if "/" not in vip:
            out += [vip, f"{vip}:{port.number}"] if bare else [f"{vip}:{port.number}"]
    return out


def _unique(domains: list[str], used: set[str]) -> list[str]:
    out = []
    for d in domains:
        if d not in used:
            used.add(d)
            out.append(d)
    return out


def sidecar_route_configs(proxy: Proxy, ctx: PushContext) -> list[route_pb2.RouteConfiguration]:
    scope = ctx.scope(proxy)
    clusters = known_cluster_names(proxy, ctx)
    by_port: dict[int, list[tuple[Service, ServicePort]]] = {}
    if proxy.interception_mode != "NONE":  # they serve the per-port listeners, which only REDIRECT has
        for svc in scope.services:
            for p in svc.ports:
                if p.protocol.is_http:
                    by_port.setdefault(p.number, []).append((svc, p))
    out: list[route_pb2.RouteConfiguration] = []
    for number in sorted(by_port):
        rcfg = route_pb2.RouteConfiguration(name=str(number))
        rcfg.validate_clusters.value = False
        used: set[str] = set()
        for svc, p in by_port[number]:
            domains = _unique(_domains(svc, p, proxy, ctx, True), used)
            if domains:
                rcfg.virtual_hosts.append(_vhost(svc, p, domains, proxy, ctx, clusters))
        rcfg.virtual_hosts.append(catch_all(scope.outbound_policy))
        out.append(rcfg)
    if proxy.interception_mode == "NONE":
        rcfg = route_pb2.RouteConfiguration(name=HTTP_PROXY_ROUTE)
        rcfg.validate_clusters.value = False
        used = set()
        for svc in scope.services:
            for p in svc.ports:
                if p.protocol.is_http:
                    continue
                domains = _unique(_domains(svc, p, proxy, ctx, False), used)
                if domains:
                    vh = rcfg.virtual_hosts.add(name=f"{svc.hostname}:{p.number}", domains=domains)
                    targets = service_connect_targets(svc, p, proxy, ctx, clusters)
                    vh.routes.append(connect_route("connect", targets[0][0], targets))
            http_ports = [p for p in svc.ports if p.protocol.is_http]
            if not http_ports:
                continue
            bare_port = svc.port(80) if svc.port(80) in http_ports else http_ports[0]
            for p in http_ports:
                domains = _unique(_domains(svc, p, proxy, ctx, p is bare_port), used)
                if domains:
                    rcfg.virtual_hosts.append(_vhost(svc, p, domains, proxy, ctx, clusters))
        rcfg.virtual_hosts.append(catch_all(scope.outbound_policy, connect=True))
        out.append(rcfg)
    return out


def in_mesh_cluster(name: str, ctx: PushContext) -> bool:
    """Whether an outbound cluster reaches mesh workloads: a service that is ``MESH_INTERNAL`` (a Kubernetes
    service, a ServiceEntry that says so, as for WorkloadEntries), or a VirtualService ``fallback`` aggregate of
    two such clusters. Not the PassthroughCluster, the BlackHoleCluster nor a ``MESH_EXTERNAL`` ServiceEntry's."""
    parts = name.split("|")
    if parts[0] == fallback.PREFIX and len(parts) == 9:
        return in_mesh_cluster("|".join(parts[1:5]), ctx) and in_mesh_cluster("|".join(parts[5:]), ctx)
    parsed = parse_cluster_name(name)
    if parsed is None or parsed[0] != "outbound":
        return False
    svc = ctx.service(Hostname(parsed[3]))
    return svc is not None and svc.location is Location.MESH_INTERNAL


def build_route_configs(proxy: Proxy, ctx: PushContext) -> list[route_pb2.RouteConfiguration]:
    if proxy.type is ProxyType.ROUTER:
        from meshplane.translate.gateway import gateway_route_configs

        out = gateway_route_configs(proxy, ctx)
    else:
        out = sidecar_route_configs(proxy, ctx)
    trafficlabel.attach_outbound(out, proxy,  # ASM's request labels
                                 ctx.config.of(TRAFFIC_LABELS), ctx.config.of(HEADER_PROPAGATIONS))
    identity_reach(out, ctx)
    return out


def identity_reach(configs: list[route_pb2.RouteConfiguration], ctx: PushContext) -> None:
    """Where the proxy's identity header may go (``telemetry.send_identity_to_mesh``); again after EnvoyFilter
    patches, so a route they add or change follows the same rule."""
    telemetry.send_identity_to_mesh(configs, lambda name: in_mesh_cluster(name, ctx))
