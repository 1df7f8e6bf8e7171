"""EDS: ClusterLoadAssignments for outbound EDS clusters, grouped by locality, prioritised by nearness.

Locality failover: endpoints in the proxy's own region/zone/subzone get priority 0, then the same zone, the same
region, the rest (priorities compacted, as Envoy requires them contiguous). Istio only does this when the
DestinationRule has outlierDetection; meshplane does it whenever ``MeshSettings.locality_lb_enabled`` unless
``locality_lb_requires_outlier_detection`` asks for Istio's behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import wrappers_pb2

from meshplane.model.proxy import Locality, Proxy
from meshplane.model.service import Endpoint
from meshplane.translate.common import parse_cluster_name
from meshplane.translate.context import PushContext
from meshplane.translate.policy import effective_policy, subset_labels


def locality_priority(proxy: Locality, ep: Locality) -> int:
    if not proxy.region:
        return 0
    if ep.region != proxy.region:
        return 3
    if ep.zone != proxy.zone:
        return 2
    if ep.subzone != proxy.subzone:
        return 1
    return 0


def build_load_assignment(name: str, proxy: Proxy, ctx: PushContext) -> endpoint_pb2.ClusterLoadAssignment | None:
    """The endpoints of an ``outbound|...`` cluster; an empty assignment for an unknown one (so a cluster that
    went away never stalls Envoy's warming), None for names that are not outbound clusters."""
    parsed = parse_cluster_name(name)
    if parsed is None or parsed[0] != "outbound":
        return None
    _, port_no, subset, host = parsed
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    svc = ctx.service(host)
    if svc is None:
        return cla
    port = svc.port(port_no)
    if port is None:
        return cla
    dr = ctx.destination_rule(host, proxy.namespace, proxy.labels)
    labels: Mapping[str, str] | None = None
    if subset:
        labels = subset_labels(dr, subset)
        if labels is None:
            return cla
    eps = [e for e in ctx.registry.endpoints_of(host) if labels is None or all(
        e.labels.get(k) == v for k, v in labels.items())]
    policy = effective_policy(dr, port_no, subset)
    use_locality = ctx.mesh.locality_lb_enabled and (
        not ctx.mesh.locality_lb_requires_outlier_detection or policy.get("outlierDetection") is not None)
    groups: dict[tuple[Locality, int], list[Endpoint]] = {}
    for e in eps:
        prio = locality_priority(proxy.locality, e.locality) if use_locality else 0
        groups.setdefault((e.locality, prio), []).append(e)
    prios = sorted({p for _, p in groups})
    compact = {p: i for i, p in enumerate(prios)}
    for (loc, prio), members in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0].region,
                                                                       kv[0][0].zone, kv[0][0].subzone)):
        lle = cla.endpoints.add()
        lle.locality.CopyFrom(base_pb2.Locality(region=loc.region, zone=loc.zone, sub_zone=loc.subzone))
        lle.priority = compact[prio]
        lle.load_balancing_weight.value = sum(m.weight for m in members)
        for m in members:
            lle.lb_endpoints.append(endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=m.address, port_value=m.port_for(port)))),
                health_status=health_check_pb2.HEALTHY if m.healthy else health_check_pb2.UNHEALTHY,
                load_balancing_weight=wrappers_pb2.UInt32Value(value=max(m.weight, 1)),
            ))
    return cla
