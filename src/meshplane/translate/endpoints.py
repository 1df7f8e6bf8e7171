"""EDS: ClusterLoadAssignments for outbound EDS clusters, grouped by locality, prioritised by nearness.

Locality failover: endpoints in the proxy's own region/zone/subzone get priority 0, then the same zone, the same
region, the rest (priorities compacted, as Envoy requires them contiguous). Istio only does this when the
DestinationRule has outlierDetection; meshplane does it whenever ``MeshSettings.locality_lb_enabled`` unless
``locality_lb_requires_outlier_detection`` asks for Istio's behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from google.protobuf import wrappers_pb2

from meshplane.model import spec as istio
from meshplane.model.labels import labels_match
from meshplane.model.names import Hostname
from meshplane.model.proxy import Locality, Proxy
from meshplane.model.service import Endpoint
from meshplane.model.spec import MutualTLSMode
from meshplane.translate import dynsubset, telemetry
from meshplane.translate.common import parse_cluster_name
from meshplane.translate.context import PushContext
from meshplane.translate.eastwest import through_gateways
from meshplane.translate.peerauthn import endpoint_mtls_mode
from meshplane.translate.policy import effective_policy, subset_labels
from meshplane.translate.tls import TLS_MODE_LABEL, TRANSPORT_SOCKET_MATCH


def locality_priority(proxy: Locality, ep: Locality, failover: Mapping[str, str] | None = None) -> int:
    """P0 same region/zone/subzone, P1 same zone, P2 same region, P3 the region ``failover`` names for the
    proxy's region, P4 the rest (P3 when there is no failover rule)."""
    if not proxy.region:
        return 0
    if ep.region != proxy.region:
        if failover:
            return 3 if failover.get(proxy.region) == ep.region else 4
        return 3
    if ep.zone != proxy.zone:
        return 2
    if ep.subzone != proxy.subzone:
        return 1
    return 0


_REGION = "topology.kubernetes.io/region"
_ZONE = "topology.kubernetes.io/zone"
_SUBZONE = "topology.istio.io/subzone"
_NETWORK = "topology.istio.io/network"
_CLUSTER = "topology.istio.io/cluster"


def _proxy_label(proxy: Proxy, key: str) -> str | None:
    return {_REGION: proxy.locality.region, _ZONE: proxy.locality.zone, _SUBZONE: proxy.locality.subzone,
            _NETWORK: proxy.network, _CLUSTER: proxy.cluster_id}.get(key, proxy.labels.get(key))


def _endpoint_label(ep: Endpoint, key: str) -> str | None:
    return {_REGION: ep.locality.region, _ZONE: ep.locality.zone, _SUBZONE: ep.locality.subzone,
            _NETWORK: ep.network, _CLUSTER: ep.cluster_id}.get(key, ep.labels.get(key))


def failover_priority(proxy: Proxy, ep: Endpoint, keys: list[str]) -> int:
    """Istio's failoverPriority: an endpoint matching the proxy on the first N keys gets priority len-N.
    A ``key=value`` entry matches endpoints whose label has that value."""
    matched = 0
    for entry in keys:
        key, sep, value = entry.partition("=")
        want = value if sep else _proxy_label(proxy, key)
        if want is None or _endpoint_label(ep, key) != want:
            break
        matched += 1
    return len(keys) - matched


def _locality_matches(pattern: str, loc: Locality) -> bool:
    parts = pattern.split("/")
    return all(want in ("*", have) for want, have in zip(parts, (loc.region, loc.zone, loc.subzone), strict=False))


def distribute_weights(setting: istio.LocalityLoadBalancerSetting, proxy: Locality,
                       localities: list[Locality]) -> dict[Locality, int] | None:
    """``distribute``: the first rule whose ``from`` matches the proxy; each ``to`` pattern's weight is split
    between the endpoint localities it matches."""
    for rule in setting.distribute:
        if not _locality_matches(rule.from_ or "*", proxy):
            continue
        out: dict[Locality, int] = {}
        for pattern, weight in rule.to.items():
            members = [loc for loc in localities if _locality_matches(pattern, loc) and loc not in out]
            for loc in members:
                out[loc] = max(1, weight // len(members)) if weight > 0 else 0
        return out
    return None


def _failover_regions(setting: istio.LocalityLoadBalancerSetting) -> dict[str, str]:
    """``failover``: region -> the region its traffic goes to next (entries naming both)."""
    return {f.from_: f.to for f in setting.failover if f.from_ is not None and f.to is not None}


_Groups = dict[tuple[Locality, int], list[Endpoint]]  # (locality, priority before compaction) -> endpoints


def _priorities(proxy: Proxy, eps: Sequence[Endpoint], setting: istio.LocalityLoadBalancerSetting,
                weights: Mapping[Locality, int] | None, use_locality: bool) -> _Groups:
    """Endpoints grouped by locality and priority; ``distribute`` drops the localities it sends nothing."""
    failover = _failover_regions(setting)
    groups: _Groups = {}
    for e in eps:
        if not use_locality or weights is not None:
            prio = 0
        elif setting.failover_priority:
            prio = failover_priority(proxy, e, list(setting.failover_priority))
        else:
            prio = locality_priority(proxy.locality, e.locality, failover)
        if weights is not None and weights.get(e.locality, 0) == 0:
            continue  # distribute sends nothing to localities it does not name
        groups.setdefault((e.locality, prio), []).append(e)
    return groups


def build_load_assignment(name: str, proxy: Proxy, ctx: PushContext) -> endpoint_pb2.ClusterLoadAssignment | None:
    """The endpoints of an ``outbound|...`` cluster; an empty assignment for an unknown one (so a cluster that
    went away never stalls Envoy's warming), None for names that are not outbound clusters."""
    parsed = parse_cluster_name(name)
    if parsed is None or parsed[0] != "outbound":
        return None
    _, port_no, subset, name_host = parsed
    host = Hostname(name_host)
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
    eps = [e for e in ctx.registry.endpoints_of(host) if labels is None or labels_match(labels, e.labels)]
    workloads = {id(e) for e in eps}  # the endpoints themselves, not east-west gateways standing in for them
    eps = through_gateways(proxy, eps, port, ctx)  # multi-network: other networks via their east-west gateway
    policy = effective_policy(dr, port_no, subset)
    use_locality = ctx.mesh.locality_lb_enabled and (
        not ctx.mesh.locality_lb_requires_outlier_detection or policy.outlier_detection is not None)
    lb = policy.load_balancer
    setting = (lb.locality_lb_setting if lb is not None else None) or istio.LocalityLoadBalancerSetting()
    if setting.enabled is False:
        use_locality = False
    weights = distribute_weights(setting, proxy.locality, [e.locality for e in eps]) if use_locality else None
    dyn = dynsubset.of(dr.spec) if dr is not None and not subset else None
    groups = _priorities(proxy, eps, setting, weights, use_locality)
    prios = sorted({p for _, p in groups})
    compact = {p: i for i, p in enumerate(prios)}
    for (loc, prio), members in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0].region,
                                                                       kv[0][0].zone, kv[0][0].subzone)):
        lle = cla.endpoints.add()
        lle.locality.CopyFrom(base_pb2.Locality(region=loc.region, zone=loc.zone, sub_zone=loc.subzone))
        lle.priority = compact[prio]
        lle.load_balancing_weight.value = weights[loc] if weights is not None else sum(m.weight for m in members)
        for m in members:
            ep_port = m.port_for(port)
            lbe = lle.lb_endpoints.add(
                endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=m.address, port_value=ep_port))),
                health_status=health_check_pb2.HEALTHY if m.healthy else health_check_pb2.UNHEALTHY,
                load_balancing_weight=wrappers_pb2.UInt32Value(value=max(m.weight, 1)),
            )
            if m.labels.get(TLS_MODE_LABEL) == "istio" and (
                    id(m) not in workloads  # an east-west gateway passes mTLS through by SNI: always mTLS
                    or endpoint_mtls_mode(ctx, m, svc.namespace, ep_port) is not MutualTLSMode.DISABLE):
                # Auto mTLS (see clusters._auto_mtls): this endpoint has a sidecar whose PeerAuthentication accepts
                # ISTIO_MUTUAL on this port (see peerauthn); without the match the plaintext socket is chosen.
                lbe.metadata.filter_metadata[TRANSPORT_SOCKET_MATCH].update({"tlsMode": "istio"})
            if not port.protocol.is_http and id(m) in workloads:
                # TCP metrics at the source name the destination workload from here (no response header on TCP);
                # not on an east-west gateway standing in for a network's endpoints
                peer = telemetry.endpoint_identity(m)
                if peer is not None:
                    lbe.metadata.filter_metadata[telemetry.PEER_METADATA].update({telemetry.PEER_KEY: peer})
            if dyn is not None:
                lb_md = dynsubset.endpoint_metadata(dyn, m.labels)
                if lb_md:
                    lbe.metadata.filter_metadata[dynsubset.LB_NAMESPACE].update(lb_md)
    return cla
