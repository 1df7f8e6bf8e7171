"""ASM's VirtualService ``fallback`` extension: when a destination's subset has no healthy endpoint, route to the
fallback destination instead.

Why an aggregate cluster (``envoy.clusters.aggregate``): it is exactly this rule in the data plane. Its member
clusters are tried in priority order and the first one with healthy hosts takes the request, decided per request
by Envoy's load balancer from live health, with no control-plane round trip when the last instance of a subset
goes away. A route destination::

    route:
    - destination: {host: mockb, subset: v2}
      fallback: {target: {host: mockb, subset: v1}}

sends to ``fallback|outbound|8000|v2|mockb...|outbound|8000|v1|mockb...`` (an aggregate of the two subset
clusters). The name has more than four ``|``-separated parts, so ``common.parse_cluster_name`` never mistakes it
for an outbound cluster. When the primary cluster does not exist for the proxy, the fallback cluster is used
directly; when the fallback does not exist, the primary.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2

from meshplane.model import spec as istio
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.translate.common import BLACKHOLE, duration, pack
from meshplane.translate.context import MESH_GATEWAY, PushContext, VirtualServiceRec
from meshplane.translate.destinations import destination_host, subset_cluster

AGGREGATE = "envoy.clusters.aggregate"
PREFIX = "fallback"


def aggregate_name(primary: str, fallback: str) -> str:
    return f"{PREFIX}|{primary}|{fallback}"


def fallback_target(route_dest: istio.HTTPRouteDestination) -> istio.Destination | None:
    """The ``fallback.target`` of a route destination, if it names a host."""
    target = route_dest.fallback.target if route_dest.fallback is not None else None
    return target if target is not None and target.host else None


def choose(primary: str, route_dest: istio.HTTPRouteDestination, vs_namespace: str, ctx: PushContext, port: int,
           clusters: Collection[str]) -> str:
    """The cluster a route destination with (maybe) a ``fallback`` goes to; ``primary`` is what the destination
    alone resolved to (BlackHoleCluster when the proxy has no such cluster)."""
    target = fallback_target(route_dest)
    if target is None:
        return primary
    fb = subset_cluster(target, vs_namespace, ctx, port)
    if fb is None or fb not in clusters:
        return primary
    if primary == BLACKHOLE:
        return fb
    name = aggregate_name(primary, fb)
    return name if name in clusters else primary


def _visible_virtual_services(proxy: Proxy, ctx: PushContext) -> Iterator[VirtualServiceRec]:
    if proxy.type is ProxyType.ROUTER:
        for gw in ctx.scope(proxy).gateways:
            yield from ctx.index.gateway_virtual_services.get(gw.key, ())
    else:
        for vs in ctx.index.mesh_virtual_services:
            if vs.visible_in(proxy.namespace) and MESH_GATEWAY in vs.gateways:
                yield vs


def _fallback_pairs(route_dest: istio.HTTPRouteDestination, target: istio.Destination, vs: VirtualServiceRec,
                    ctx: PushContext, known: Collection[str]) -> Iterator[tuple[str, str]]:
    """(primary, fallback) cluster pairs of one route destination, on every port of its service.

    Every subset of the destination's host gets its aggregate with the target, not only the one routed to now:
    when a route stops using a fallback, its aggregate stays until the subset itself goes, so a route change never
    races the removal of the cluster it left."""
    svc = ctx.service(destination_host(route_dest.destination, vs.namespace, ctx))
    for port in [p.number for p in svc.ports] if svc is not None else [0]:
        primary = subset_cluster(route_dest.destination, vs.namespace, ctx, port)
        fb = subset_cluster(target, vs.namespace, ctx, port)
        for name in [primary, *_sibling_subsets(primary, known)]:
            if name and fb and name != fb and name in known and fb in known:
                yield name, fb


def fallback_clusters(proxy: Proxy, ctx: PushContext, known: Collection[str]) -> list[cluster_pb2.Cluster]:
    """Aggregate clusters for every ``fallback`` in the VirtualServices this proxy sees whose two clusters it has."""
    pairs: dict[str, tuple[str, str]] = {}
    for vs in _visible_virtual_services(proxy, ctx):
        for http in vs.spec.http:
            for d in http.route:
                target = fallback_target(d)
                if target is not None:
                    pairs.update((aggregate_name(*pair), pair) for pair in _fallback_pairs(d, target, vs, ctx, known))
    return [aggregate_cluster(name, *pair, connect_timeout_s=ctx.mesh.connect_timeout_s)
            for name, pair in sorted(pairs.items())]


def _sibling_subsets(primary: str | None, known: Collection[str]) -> list[str]:
    if not primary:
        return []
    parts = primary.split("|")
    if len(parts) != 4:
        return []
    head, tail = f"{parts[0]}|{parts[1]}|", f"|{parts[3]}"
    return sorted(n for n in known if n.startswith(head) and n.endswith(tail) and n.count("|") == 3
                  and n != primary and n != f"{head}{tail}")


def aggregate_cluster(name: str, primary: str, fallback: str, *, connect_timeout_s: float) -> cluster_pb2.Cluster:
    c = cluster_pb2.Cluster(name=name, lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    c.alt_stat_name = name
    c.connect_timeout.CopyFrom(duration(connect_timeout_s))
    c.cluster_type.name = AGGREGATE
    c.cluster_type.typed_config.CopyFrom(pack(aggregate_pb2.ClusterConfig(clusters=[primary, fallback])))
    return c
