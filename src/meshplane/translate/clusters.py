"""CDS: outbound clusters per (service, port, subset), inbound clusters to the local app, and the specials.

Names follow Istio: ``outbound|PORT|SUBSET|HOST`` and ``inbound|PORT||``; ``BlackHoleCluster`` (no endpoints)
and ``PassthroughCluster``. With a sidecar used as an explicit HTTP proxy there is no original destination to
pass through to, so there ``PassthroughCluster`` is a dynamic forward proxy cluster (Envoy resolves the Host
header); with traffic capture (``INTERCEPTION_MODE=REDIRECT``) and on gateways it is ORIGINAL_DST like Istio's.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import wrappers_pb2

from meshplane.model import spec as istio
from meshplane.model.labels import labels_match
from meshplane.model.names import Hostname
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.service import Endpoint, Location, Protocol, Resolution, Service, ServicePort
from meshplane.translate import dynsubset, telemetry
from meshplane.translate.authz import ext_authz_clusters
from meshplane.translate.common import (
    BLACKHOLE,
    PASSTHROUGH,
    ads_source,
    cluster_name,
    duration,
    pack,
    proto_duration,
)
from meshplane.translate.context import DestinationRuleRec, PushContext
from meshplane.translate.dfp import dns_cache_config
from meshplane.translate.eastwest import is_sni_dnat, sni_dnat_clusters, sni_name
from meshplane.translate.fallback import fallback_clusters
from meshplane.translate.memo import Slot
from meshplane.translate.mesh import MeshSettings
from meshplane.translate.policy import effective_policy, subset_labels
from meshplane.translate.tls import transport_socket, upstream_tls
from meshplane.translate.tracing import tracing_clusters

_MAX = 2**32 - 1
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def uses_dynamic_forward_proxy(proxy: Proxy) -> bool:
    return proxy.type is ProxyType.SIDECAR and proxy.interception_mode == "NONE"


def _socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


def _lb_endpoint(address: str, port: int, weight: int = 1) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=_socket(address, port)),
        load_balancing_weight=wrappers_pb2.UInt32Value(value=max(weight, 1)),
    )


def special_clusters(proxy: Proxy, mesh: MeshSettings) -> list[cluster_pb2.Cluster]:
    timeout = duration(mesh.connect_timeout_s)
    blackhole = cluster_pb2.Cluster(name=BLACKHOLE, type=cluster_pb2.Cluster.STATIC, connect_timeout=timeout,
                                    load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=BLACKHOLE))
    if uses_dynamic_forward_proxy(proxy):
        passthrough = cluster_pb2.Cluster(
            name=PASSTHROUGH, connect_timeout=timeout, lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
            cluster_type=cluster_pb2.Cluster.CustomClusterType(
                name="envoy.clusters.dynamic_forward_proxy",
                typed_config=pack(dfp_cluster_pb2.ClusterConfig(dns_cache_config=dns_cache_config()))))
    else:
        passthrough = cluster_pb2.Cluster(
            name=PASSTHROUGH, type=cluster_pb2.Cluster.ORIGINAL_DST, connect_timeout=timeout,
            lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    _default_circuit_breakers(passthrough)
    return [blackhole, passthrough]


def _default_circuit_breakers(c: cluster_pb2.Cluster, pool: istio.ConnectionPoolSettings | None = None) -> None:
    """Istio's defaults: effectively unlimited, so Envoy's small defaults (e.g. 3 retries) never surprise."""
    tcp = (pool.tcp if pool else None) or istio.TCPSettings()
    http = (pool.http if pool else None) or istio.HTTPSettings()

    def val(limit: int | None) -> wrappers_pb2.UInt32Value:
        return wrappers_pb2.UInt32Value(value=limit if limit is not None else _MAX)

    c.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            max_connections=val(tcp.max_connections),
            max_pending_requests=val(http.http1_max_pending_requests),
            max_requests=val(http.http2_max_requests),
            max_retries=val(http.max_retries),
            track_remaining=True,
        )
    ]))


def _speaks_h2(port: ServicePort, http: istio.HTTPSettings | None) -> bool:
    """The cluster's codec is HTTP/2: the port's protocol is, or ``h2UpgradePolicy: UPGRADE`` upgrades HTTP."""
    upgrade = http is not None and http.h2_upgrade_policy is istio.HTTPSettingsH2UpgradePolicy.UPGRADE
    return port.protocol.is_http2 or (port.protocol is Protocol.HTTP and upgrade)


def _http_options(c: cluster_pb2.Cluster, port: ServicePort, http: istio.HTTPSettings | None) -> None:
    """The upstream codec (h2 when the cluster speaks it, h1 when the pool says anything) and the pool's
    per-connection limits; nothing for a non-HTTP port or an h1 one the pool says nothing about."""
    if not port.protocol.is_http:
        return
    settings = http or istio.HTTPSettings()
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    if _speaks_h2(port, http):
        opts.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    elif settings == istio.HTTPSettings():
        return
    else:
        opts.explicit_http_config.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    if settings.max_requests_per_connection:
        opts.common_http_protocol_options.max_requests_per_connection.value = settings.max_requests_per_connection
    if settings.idle_timeout is not None:
        opts.common_http_protocol_options.idle_timeout.CopyFrom(proto_duration(settings.idle_timeout))
    c.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(pack(opts))


_DEFAULT_LB = cluster_pb2.Cluster.LEAST_REQUEST
_SIMPLE_LB = {
    istio.SimpleLB.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    istio.SimpleLB.RANDOM: cluster_pb2.Cluster.RANDOM,
    istio.SimpleLB.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    istio.SimpleLB.LEAST_CONN: cluster_pb2.Cluster.LEAST_REQUEST,
}


def _consistent_hash_lb(c: cluster_pb2.Cluster, ch: istio.ConsistentHashLB) -> None:
    if ch.maglev is not None:
        c.lb_policy = cluster_pb2.Cluster.MAGLEV
        if ch.maglev.table_size:
            c.maglev_lb_config.table_size.value = ch.maglev.table_size
        return
    c.lb_policy = cluster_pb2.Cluster.RING_HASH
    ring = ch.ring_hash.minimum_ring_size if ch.ring_hash is not None else None
    c.ring_hash_lb_config.minimum_ring_size.value = ring or ch.minimum_ring_size or 1024


def _lb(c: cluster_pb2.Cluster, lb: istio.LoadBalancerSettings | None) -> None:
    """Istio's default (no ``simple``, UNSPECIFIED, or PASSTHROUGH handled by the caller) is LEAST_REQUEST."""
    if lb is not None and lb.consistent_hash is not None:
        _consistent_hash_lb(c, lb.consistent_hash)
        return
    simple = lb.simple if lb is not None else None
    c.lb_policy = _SIMPLE_LB.get(simple, _DEFAULT_LB) if simple is not None else _DEFAULT_LB


def _enforced(count: int) -> int:
    return 100 if count > 0 else 0


def _outlier(c: cluster_pb2.Cluster, od: istio.OutlierDetection) -> None:
    out = outlier_detection_pb2.OutlierDetection()
    five = od.consecutive5xx_errors
    if five is not None:
        out.consecutive_5xx.value = five
    out.enforcing_consecutive_5xx.value = _enforced(five or 0)
    gw = od.consecutive_gateway_errors if od.consecutive_gateway_errors is not None else od.consecutive_errors
    if gw is not None:
        out.consecutive_gateway_failure.value = gw
        out.enforcing_consecutive_gateway_failure.value = _enforced(gw)
    if od.split_external_local_origin_errors:
        out.split_external_local_origin_errors = True
        if od.consecutive_local_origin_failures is not None:
            out.consecutive_local_origin_failure.value = od.consecutive_local_origin_failures
    if od.interval is not None:
        out.interval.CopyFrom(proto_duration(od.interval))
    if od.base_ejection_time is not None:
        out.base_ejection_time.CopyFrom(proto_duration(od.base_ejection_time))
    if od.max_ejection_percent is not None:
        out.max_ejection_percent.value = od.max_ejection_percent
    out.enforcing_success_rate.value = 0
    c.outlier_detection.CopyFrom(out)
    if od.min_health_percent is not None:
        c.common_lb_config.healthy_panic_threshold.value = float(od.min_health_percent)


def _failover_outlier(c: cluster_pb2.Cluster, mesh: MeshSettings) -> None:
    """meshplane's default passive health while locality load balancing is on (see ``MeshSettings``): Istio
    fails over only when the DestinationRule has outlierDetection (istio/istio#48084, #39477). Every host may be
    ejected (a whole zone must be able to leave); should too many be, Envoy's panic threshold spreads the load
    again rather than sending nothing."""
    if not mesh.locality_lb_enabled or mesh.failover_consecutive_gateway_errors <= 0:
        return
    out = c.outlier_detection
    out.consecutive_gateway_failure.value = mesh.failover_consecutive_gateway_errors
    out.enforcing_consecutive_gateway_failure.value = 100
    out.enforcing_consecutive_5xx.value = 0
    out.enforcing_success_rate.value = 0
    out.interval.CopyFrom(duration(mesh.failover_ejection_interval_s))
    out.base_ejection_time.CopyFrom(duration(mesh.failover_base_ejection_s))
    out.max_ejection_percent.value = 100


def _tcp_keepalive(c: cluster_pb2.Cluster, ka: istio.TcpKeepalive) -> None:
    """Envoy counts keepalive time and interval in whole seconds (Istio truncates the same way)."""
    kc = c.upstream_connection_options.tcp_keepalive
    if ka.probes:
        kc.keepalive_probes.value = ka.probes
    if ka.time is not None:
        kc.keepalive_time.value = ka.time // 1_000_000_000
    if ka.interval is not None:
        kc.keepalive_interval.value = ka.interval // 1_000_000_000


def _auto_mtls(c: cluster_pb2.Cluster, tctx: tls_pb2.UpstreamTlsContext | None) -> None:
    """Istio's auto mTLS: endpoints whose metadata says ``tlsMode: istio`` (a sidecar runs there and its
    PeerAuthentication accepts mTLS on the port; see ``endpoints``) get ISTIO_MUTUAL, the others plaintext; one
    cluster serves both during a migration."""
    if tctx is None:
        return
    m = c.transport_socket_matches.add(name="tlsMode-istio")
    m.match.update({"tlsMode": "istio"})
    m.transport_socket.CopyFrom(transport_socket(tctx))
    plain = c.transport_socket_matches.add(name="tlsMode-disabled")
    plain.transport_socket.name = "envoy.transport_sockets.raw_buffer"
    plain.transport_socket.typed_config.CopyFrom(pack(raw_buffer_pb2.RawBuffer()))


def _endpoint_sans(ctx: PushContext, host: Hostname) -> list[str]:
    sas = sorted({e.service_account for e in ctx.registry.endpoints_of(host) if e.service_account})
    svc = ctx.service(host)
    ns_of = {e.service_account: e.namespace or (svc.namespace if svc else "") for e in
             ctx.registry.endpoints_of(host)}
    return [f"spiffe://{ctx.mesh.trust_domain}/ns/{ns_of[sa]}/sa/{sa}" for sa in sas]


def _dns_endpoints(svc: Service, port: ServicePort, eps: tuple[Endpoint, ...],
                   labels: Mapping[str, str] | None) -> list[endpoint_components_pb2.LbEndpoint]:
    chosen = [e for e in eps if labels is None or labels_match(labels, e.labels)]
    if chosen:
        return [_lb_endpoint(e.address, e.port_for(port), e.weight) for e in chosen]
    if labels:
        return []
    return [_lb_endpoint(svc.hostname, port.target_port or port.number)]


def _discovery(c: cluster_pb2.Cluster, ctx: PushContext, svc: Service, port: ServicePort,
               lb: istio.LoadBalancerSettings | None, labels: Mapping[str, str] | None) -> None:
    """How the cluster finds its hosts: the original destination (no resolution, or lb PASSTHROUGH), DNS, or EDS."""
    if svc.resolution is Resolution.NONE or (lb is not None and lb.simple is istio.SimpleLB.PASSTHROUGH):
        c.type = cluster_pb2.Cluster.ORIGINAL_DST
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    elif svc.resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        logical = svc.resolution is Resolution.DNS_ROUND_ROBIN
        c.type = cluster_pb2.Cluster.LOGICAL_DNS if logical else cluster_pb2.Cluster.STRICT_DNS
        c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
        lbs = _dns_endpoints(svc, port, ctx.registry.endpoints_of(svc.hostname), labels)
        if logical:
            lbs = lbs[:1]
        c.load_assignment.cluster_name = c.name
        if lbs:
            c.load_assignment.endpoints.add().lb_endpoints.extend(lbs)
        _lb(c, lb)
    else:
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.service_name = c.name
        c.eds_cluster_config.eds_config.CopyFrom(ads_source())
        _lb(c, lb)


def _cluster_tls(c: cluster_pb2.Cluster, ctx: PushContext, svc: Service, port: ServicePort, subset: str,
                 tls: istio.ClientTLSSettings | None, h2: bool, auto_mtls: bool) -> None:
    """The DestinationRule's ``tls``; without one, auto mTLS for mesh-internal services (not for original-destination
    clusters nor TLS ports, whose clients speak TLS themselves)."""
    mesh = ctx.mesh
    # Only offer what the cluster's codec speaks: an h1 upstream offered h2 would pick it and fail.
    alpn = (["h2" if h2 else "http/1.1"]) if port.protocol.is_http else []
    sni = sni_name(port.number, subset, svc.hostname)
    if tls is not None:
        tctx = upstream_tls(tls, mesh=mesh, istio_sni=sni, alpn=alpn, endpoint_sans=_endpoint_sans(ctx, svc.hostname))
        if tctx is not None:
            c.transport_socket.CopyFrom(transport_socket(tctx))
    elif (auto_mtls and mesh.auto_mtls and svc.location is Location.MESH_INTERNAL
          and c.type != cluster_pb2.Cluster.ORIGINAL_DST and not port.protocol.is_tls):
        _auto_mtls(c, upstream_tls(_ISTIO_MUTUAL, mesh=mesh, istio_sni=sni, alpn=alpn,
                                   endpoint_sans=_endpoint_sans(ctx, svc.hostname)))


_ISTIO_MUTUAL = istio.ClientTLSSettings(mode=istio.ClientTLSMode.ISTIO_MUTUAL)


def outbound_cluster(ctx: PushContext, svc: Service, port: ServicePort, subset: str,
                     dr: DestinationRuleRec | None, *, auto_mtls: bool = True) -> cluster_pb2.Cluster:
    """``auto_mtls``: offer Istio's auto mTLS (the proxy has an SDS source for certificates)."""
    mesh = ctx.mesh
    name = cluster_name("outbound", port.number, subset, svc.hostname)
    policy = effective_policy(dr, port.number, subset)
    pool = policy.connection_pool or istio.ConnectionPoolSettings()
    lb = policy.load_balancer
    c = cluster_pb2.Cluster(name=name)
    c.alt_stat_name = name
    connect = pool.tcp.connect_timeout if pool.tcp is not None else None
    c.connect_timeout.CopyFrom(proto_duration(connect) if connect is not None else duration(mesh.connect_timeout_s))
    _discovery(c, ctx, svc, port, lb, subset_labels(dr, subset) if subset else None)
    _default_circuit_breakers(c, pool)
    _http_options(c, port, pool.http)
    if lb is not None and lb.locality_lb_setting is not None and lb.locality_lb_setting.distribute:
        c.common_lb_config.locality_weighted_lb_config.SetInParent()
    if policy.outlier_detection is not None:
        _outlier(c, policy.outlier_detection)
    elif c.type == cluster_pb2.Cluster.EDS:
        _failover_outlier(c, mesh)
    _cluster_tls(c, ctx, svc, port, subset, policy.tls, _speaks_h2(port, pool.http), auto_mtls)
    dyn = dynsubset.of(dr.spec) if dr is not None and not subset and c.type == cluster_pb2.Cluster.EDS else None
    if dyn is not None:
        c.lb_subset_config.CopyFrom(dynsubset.lb_subset_config(dyn))
    if pool.tcp is not None and pool.tcp.tcp_keepalive is not None:
        _tcp_keepalive(c, pool.tcp.tcp_keepalive)
    telemetry.cluster_metadata(c, svc)  # destination_service of the source-reported metrics
    return c


# Outbound clusters of one service port: (host, port, DestinationRule key, auto mTLS) -> clusters.
_OUTBOUND: Slot[tuple[str, int, str, bool], list[cluster_pb2.Cluster]] = Slot("outbound-clusters")
# A view's EDS cluster names and all its cluster names depend on config and services, never on endpoints.
_EDS_NAMES: Slot[tuple[object, ...], list[str]] = Slot("eds-names", endpoint_free=True)
_CDS_NAMES: Slot[tuple[object, ...], frozenset[str]] = Slot("cds-names", endpoint_free=True)


def outbound_clusters_for(ctx: PushContext, proxy: Proxy, svc: Service) -> list[cluster_pb2.Cluster]:
    dr = ctx.destination_rule(svc.hostname, proxy.namespace, proxy.labels)
    out: list[cluster_pb2.Cluster] = []
    for port in svc.ports:
        key = (svc.hostname, port.number, dr.key if dr else "", proxy.sds)
        hit = ctx.memo.get(_OUTBOUND, key)
        if hit is None:
            hit = [outbound_cluster(ctx, svc, port, "", dr, auto_mtls=proxy.sds)]
            for s in dr.spec.subsets if dr else ():
                if s.name and dynsubset.label_variable(s.name) is None:
                    hit.append(outbound_cluster(ctx, svc, port, s.name, dr, auto_mtls=proxy.sds))
            ctx.memo.put(_OUTBOUND, key, hit)
        out.extend(hit)
    return out


def inbound_cluster(proxy: Proxy, port: int, app_port: int, mesh: MeshSettings) -> cluster_pb2.Cluster:
    name = cluster_name("inbound", port)
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC, connect_timeout=duration(
        mesh.connect_timeout_s), lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)
    c.load_assignment.cluster_name = name
    c.load_assignment.endpoints.add().lb_endpoints.append(_lb_endpoint(proxy.app_address, app_port))
    _default_circuit_breakers(c)
    return c


def build_clusters(proxy: Proxy, ctx: PushContext) -> list[cluster_pb2.Cluster]:
    scope = ctx.scope(proxy)
    out: list[cluster_pb2.Cluster] = []
    for svc in scope.services:
        out.extend(outbound_clusters_for(ctx, proxy, svc))
    if is_sni_dnat(proxy, ctx):  # east-west gateway: plaintext clusters named by SNI (AUTO_PASSTHROUGH)
        out.extend(sni_dnat_clusters(out))
    out.extend(fallback_clusters(proxy, ctx, frozenset(c.name for c in out)))  # VirtualService ``fallback``
    if proxy.type is ProxyType.SIDECAR:
        for ip in proxy.inbound_ports:
            out.append(inbound_cluster(proxy, ip.port, ip.app_port, ctx.mesh))
    if proxy.type is ProxyType.ROUTER or proxy.inbound_ports:  # where security_http_filters are (httpsecurity)
        out.extend(ext_authz_clusters(proxy, ctx))
    out.extend(special_clusters(proxy, ctx.mesh))
    out.extend(tracing_clusters(ctx))  # Telemetry ``tracing`` providers reached by address
    seen: set[str] = set()
    unique = []
    for c in out:
        if c.name not in seen:
            seen.add(c.name)
            unique.append(c)
    return unique


def eds_cluster_names(proxy: Proxy, ctx: PushContext) -> list[str]:
    return ctx.memo.get_or_build(_EDS_NAMES, ctx.scope(proxy).key, lambda: [
        c.eds_cluster_config.service_name for c in build_clusters(proxy, ctx) if c.type == cluster_pb2.Cluster.EDS])


def known_cluster_names(proxy: Proxy, ctx: PushContext) -> frozenset[str]:
    return ctx.memo.get_or_build(_CDS_NAMES, (ctx.scope(proxy).key, proxy.inbound_ports),
                                 lambda: frozenset(c.name for c in build_clusters(proxy, ctx)))
