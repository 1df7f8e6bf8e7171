"""VirtualService ``tcp`` and ``tls`` routes -> tcp_proxy targets (weighted clusters) and SNI filter chains."""

from __future__ import annotations

from collections.abc import Sequence

from meshplane.model import spec as istio
from meshplane.model.proxy import Proxy
from meshplane.model.service import Service, ServicePort
from meshplane.translate.common import cluster_name
from meshplane.translate.context import MESH_GATEWAY, PushContext, VirtualServiceRec
from meshplane.translate.hosts import host_matches
from meshplane.translate.httproute import RouteScope, destination_cluster, match_applies, route_weights


def weighted_targets(route: Sequence[istio.RouteDestination], vs: VirtualServiceRec,
                     scope: RouteScope) -> list[tuple[str, int]]:
    """(cluster, weight) of each destination; destinations naming the same cluster add up, zero weights drop."""
    merged: dict[str, int] = {}
    for d, w in zip(route, route_weights([d.weight for d in route]), strict=True):
        name = destination_cluster(d.destination, vs.namespace, scope)
        merged[name] = merged.get(name, 0) + w
    return [(n, w) for n, w in merged.items() if w > 0 or len(merged) == 1]


def tcp_targets(vs: VirtualServiceRec, scope: RouteScope) -> list[tuple[str, int]] | None:
    """The first ``tcp`` route of ``vs`` that applies on this port (matches: port, sourceLabels, gateways)."""
    for tcp in vs.spec.tcp:
        if not tcp.match or any(match_applies(m, scope) for m in tcp.match):
            return weighted_targets(tcp.route, vs, scope)
    return None


def service_tcp_targets(svc: Service, port: ServicePort, proxy: Proxy, ctx: PushContext,
                        clusters: frozenset[str]) -> list[tuple[str, int]]:
    """Where a sidecar sends a TCP service port's connections: its VirtualService ``tcp`` route's weighted
    destinations, else the port's own cluster (the per-port TCP listener and the explicit proxy's CONNECT route
    both use this)."""
    vs = ctx.virtual_service_for(svc.hostname, proxy.namespace)
    if vs is not None:
        targets = tcp_targets(vs, RouteScope(proxy, ctx, port.number, frozenset({MESH_GATEWAY}), clusters))
        if targets:
            return targets
    return [(cluster_name("outbound", port.number, "", svc.hostname), 100)]


def tls_chains(vs: VirtualServiceRec, scope: RouteScope) -> list[tuple[list[str], list[tuple[str, int]]]]:
    """(SNI names, targets) for every ``tls`` route of ``vs`` that applies on this port."""
    out = []
    for tls in vs.spec.tls:
        for m in tls.match:
            if match_applies(m, scope):
                out.append((list(m.sni_hosts), weighted_targets(tls.route, vs, scope)))
    return out


def service_connect_targets(svc: Service, port: ServicePort, proxy: Proxy, ctx: PushContext,
                            clusters: frozenset[str]) -> list[tuple[str, int]]:
    """Where the explicit proxy sends a CONNECT tunnel to ``svc``'s ``port``. For a TLS or HTTPS port, the first
    VirtualService ``tls`` route on that port whose ``sniHosts`` name the service's host (or that has none): the
    proxy cannot read the SNI, which travels inside the tunnel, but the CONNECT authority names the host the client
    is about to open TLS to, the same name a REDIRECT-mode sidecar matches the SNI against. Other ports, and TLS
    ports no ``tls`` route covers, go as :func:`service_tcp_targets` says."""
    if port.protocol.is_tls:
        vs = ctx.virtual_service_for(svc.hostname, proxy.namespace)
        if vs is not None:
            scope = RouteScope(proxy, ctx, port.number, frozenset({MESH_GATEWAY}), clusters)
            for sni, targets in tls_chains(vs, scope):
                if targets and (not sni or any(host_matches(name, svc.hostname) for name in sni)):
                    return targets
    return service_tcp_targets(svc, port, proxy, ctx, clusters)
