"""CDS: outbound clusters per (service, port, subset), inbound clusters to the local app, and the specials.

Names follow Istio: ``outbound|PORT|SUBSET|HOST`` and ``inbound|PORT||``; ``BlackHoleCluster`` (no endpoints)
and ``PassthroughCluster``. With a sidecar used as an explicit HTTP proxy there is no original destination to
pass through to, so there ``PassthroughCluster`` is a dynamic forward proxy cluster (Envoy resolves the Host
header); with traffic capture (``INTERCEPTION_MODE=REDIRECT``) and on gateways it is ORIGINAL_DST like Istio's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2
from envoy.extensions.common.dynamic_forward_proxy.v3 import dns_cache_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from meshplane.model.labels import labels_match
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.service import Endpoint, Location, Protocol, Resolution, Service, ServicePort
from meshplane.translate.authz import ext_authz_clusters
from meshplane.translate.common import (
    BLACKHOLE,
    PASSTHROUGH,
    ads_source,
    cluster_name,
    duration,
    duration_of,
    pack,
    sds_secret,
    seconds,
)
from meshplane.translate.context import DestinationRuleRec, PushContext
from meshplane.translate.eastwest import is_sni_dnat, sni_dnat_clusters
from meshplane.translate.fallback import fallback_clusters
from meshplane.translate.jwt import jwks_clusters
from meshplane.translate.memo import Slot
from meshplane.translate.mesh import MeshSettings
from meshplane.translate.policy import effective_policy, subset_labels

DFP_CACHE = "dynamic_forward_proxy_cache_config"
_MAX = 2**32 - 1
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def uses_dynamic_forward_proxy(proxy: Proxy) -> bool:
    return proxy.type is ProxyType.SIDECAR and proxy.interception_mode == "NONE"


def dns_cache_config() -> dns_cache_pb2.DnsCacheConfig:
    return dns_cache_pb2.DnsCacheConfig(name=DFP_CACHE, dns_lookup_family=cluster_pb2.Cluster.V4_ONLY)


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


def _default_circuit_breakers(c: cluster_pb2.Cluster, pool: Mapping[str, Any] | None = None) -> None:
    """Istio's defaults: effectively unlimited, so Envoy's small defaults (e.g. 3 retries) never surprise."""
    pool = pool or {}
    tcp = pool.get("tcp") or {}
    http = pool.get("http") or {}

    def val(raw: Any) -> wrappers_pb2.UInt32Value:
        return wrappers_pb2.UInt32Value(value=int(raw) if raw is not None else _MAX)

    c.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            max_connections=val(tcp.get("maxConnections")),
            max_pending_requests=val(http.get("http1MaxPendingRequests")),
            max_requests=val(http.get("http2MaxRequests")),
            max_retries=val(http.get("maxRetries")),
            track_remaining=True,
        )
    ]))


def _http_options(c: cluster_pb2.Cluster, port: ServicePort, pool: Mapping[str, Any]) -> None:
    http = pool.get("http") or {}
    h2 = port.protocol.is_http2 or (port.protocol is Protocol.HTTP and http.get("h2UpgradePolicy") == "UPGRADE")
    if not port.protocol.is_http:
        return
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    if h2:
        opts.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    elif not http:
        return
    else:
        opts.explicit_http_config.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    if http.get("maxRequestsPerConnection"):
        opts.common_http_protocol_options.max_requests_per_connection.value = int(http["maxRequestsPerConnection"])
    idle = duration_of(http.get("idleTimeout"))
    if idle is not None:
        opts.common_http_protocol_options.idle_timeout.CopyFrom(idle)
    c.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(pack(opts))


def _lb(c: cluster_pb2.Cluster, lb: Mapping[str, Any]) -> None:
    simple = str(lb.get("simple") or "")
    ch = lb.get("consistentHash")
    if isinstance(ch, Mapping):
        if ch.get("maglev") is not None:
            c.lb_policy = cluster_pb2.Cluster.MAGLEV
            size = (ch.get("maglev") or {}).get("tableSize")
            if size:
                c.maglev_lb_config.table_size.value = int(size)
        else:
            c.lb_policy = cluster_pb2.Cluster.RING_HASH
            ring = ch.get("ringHash") or {}
            size = ring.get("minimumRingSize") or ch.get("minimumRingSize") or 1024
            c.ring_hash_lb_config.minimum_ring_size.value = int(size)
        return
    c.lb_policy = {
        "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
        "RANDOM": cluster_pb2.Cluster.RANDOM,
        "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
        "LEAST_CONN": cluster_pb2.Cluster.LEAST_REQUEST,
        "UNSPECIFIED": cluster_pb2.Cluster.LEAST_REQUEST,
    }.get(simple, cluster_pb2.Cluster.LEAST_REQUEST)


def _outlier(c: cluster_pb2.Cluster, od: Mapping[str, Any]) -> None:
    out = outlier_detection_pb2.OutlierDetection()
    five = od.get("consecutive5xxErrors")
    if five is not None:
        out.consecutive_5xx.value = int(five)
        out.enforcing_consecutive_5xx.value = 100 if int(five) > 0 else 0
    else:
        out.enforcing_consecutive_5xx.value = 0
    gw = od.get("consecutiveGatewayErrors", od.get("consecutiveErrors"))
    if gw is not None:
        out.consecutive_gateway_failure.value = int(gw)
        out.enforcing_consecutive_gateway_failure.value = 100 if int(gw) > 0 else 0
    local = od.get("consecutiveLocalOriginFailures")
    if od.get("splitExternalLocalOriginErrors"):
        out.split_external_local_origin_errors = True
        if local is not None:
            out.consecutive_local_origin_failure.value = int(local)
    interval = duration_of(od.get("interval"))
    if interval is not None:
        out.interval.CopyFrom(interval)
    base = duration_of(od.get("baseEjectionTime"))
    if base is not None:
        out.base_ejection_time.CopyFrom(base)
    if od.get("maxEjectionPercent") is not None:
        out.max_ejection_percent.value = int(od["maxEjectionPercent"])
    out.enforcing_success_rate.value = 0
    c.outlier_detection.CopyFrom(out)
    if od.get("minHealthPercent") is not None:
        c.common_lb_config.healthy_panic_threshold.value = float(od["minHealthPercent"])


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


def _san_matchers(sans: list[str]) -> list[common_pb2.SubjectAltNameMatcher]:
    out = []
    for san in sans:
        kind = (common_pb2.SubjectAltNameMatcher.URI if san.startswith("spiffe://")
                else common_pb2.SubjectAltNameMatcher.DNS)
        out.append(common_pb2.SubjectAltNameMatcher(san_type=kind, matcher=string_pb2.StringMatcher(exact=san)))
    return out


def upstream_tls(tls: Mapping[str, Any], *, port: ServicePort, subset: str, host: str, mesh: MeshSettings,
                 endpoint_sans: list[str], h2: bool) -> tls_pb2.UpstreamTlsContext | None:
    """The client side of a DestinationRule's ``tls``: DISABLE, SIMPLE, MUTUAL (files or credentialName) or
    ISTIO_MUTUAL (the workload certificate ``default`` and the trust bundle ``ROOTCA`` over SDS)."""
    mode = str(tls.get("mode") or "DISABLE").upper()
    if mode == "DISABLE":
        return None
    ctx = tls_pb2.UpstreamTlsContext()
    common = ctx.common_tls_context
    if port.protocol.is_http:
        # Only offer what the cluster's codec speaks: an h1 upstream offered h2 would pick it and fail.
        common.alpn_protocols.append("h2" if h2 else "http/1.1")
    sans = [str(s) for s in tls.get("subjectAltNames") or []]
    if mode == "ISTIO_MUTUAL":
        ctx.sni = tls.get("sni") or f"outbound_.{port.number}_.{subset}_.{host}"
        common.tls_certificate_sds_secret_configs.append(sds_secret(mesh.workload_secret, mesh))
        combined = common.combined_validation_context
        combined.validation_context_sds_secret_config.CopyFrom(sds_secret(mesh.root_secret, mesh))
        combined.default_validation_context.match_typed_subject_alt_names.extend(
            _san_matchers(sans or endpoint_sans))
        return ctx
    if tls.get("sni"):
        ctx.sni = str(tls["sni"])
    cred = tls.get("credentialName")
    if mode == "MUTUAL":
        if cred:
            common.tls_certificate_sds_secret_configs.append(sds_secret(f"kubernetes://{cred}", mesh))
        elif tls.get("clientCertificate") and tls.get("privateKey"):
            cert = common.tls_certificates.add()
            cert.certificate_chain.filename = str(tls["clientCertificate"])
            cert.private_key.filename = str(tls["privateKey"])
    if tls.get("insecureSkipVerify"):
        return ctx
    if cred:
        combined = common.combined_validation_context
        combined.validation_context_sds_secret_config.CopyFrom(sds_secret(f"kubernetes://{cred}-cacert", mesh))
        combined.default_validation_context.match_typed_subject_alt_names.extend(_san_matchers(sans))
    elif tls.get("caCertificates"):
        common.validation_context.trusted_ca.filename = str(tls["caCertificates"])
        common.validation_context.match_typed_subject_alt_names.extend(_san_matchers(sans))
    return ctx


TLS_MODE_LABEL = "security.istio.io/tlsMode"
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"


def _auto_mtls(c: cluster_pb2.Cluster, tctx: tls_pb2.UpstreamTlsContext | None) -> None:
    """Istio's auto mTLS: endpoints whose metadata says ``tlsMode: istio`` (a sidecar runs there; see
    ``endpoints``) get ISTIO_MUTUAL, the others plaintext; one cluster serves both during a migration."""
    if tctx is None:
        return
    m = c.transport_socket_matches.add(name="tlsMode-istio")
    m.match.update({"tlsMode": "istio"})
    m.transport_socket.name = "envoy.transport_sockets.tls"
    m.transport_socket.typed_config.CopyFrom(pack(tctx))
    plain = c.transport_socket_matches.add(name="tlsMode-disabled")
    plain.transport_socket.name = "envoy.transport_sockets.raw_buffer"
    plain.transport_socket.typed_config.CopyFrom(pack(raw_buffer_pb2.RawBuffer()))


def _endpoint_sans(ctx: PushContext, host: str) -> list[str]:
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


def outbound_cluster(ctx: PushContext, svc: Service, port: ServicePort, subset: str,
                     dr: DestinationRuleRec | None, *, auto_mtls: bool = True) -> cluster_pb2.Cluster:
    """``auto_mtls``: offer Istio's auto mTLS (the proxy has an SDS source for certificates)."""
    mesh = ctx.mesh
    name = cluster_name("outbound", port.number, subset, svc.hostname)
    policy = effective_policy(dr, port.number, subset)
    pool = policy.get("connectionPool") or {}
    lb = policy.get("loadBalancer") or {}
    c = cluster_pb2.Cluster(name=name)
    c.alt_stat_name = name
    connect = seconds((pool.get("tcp") or {}).get("connectTimeout"))
    c.connect_timeout.CopyFrom(duration(connect if connect is not None else mesh.connect_timeout_s))
    passthrough = str(lb.get("simple") or "") == "PASSTHROUGH"
    labels = subset_labels(dr, subset) if subset else None
    if svc.resolution is Resolution.NONE or passthrough:
        c.type = cluster_pb2.Cluster.ORIGINAL_DST
        c.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    elif svc.resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        logical = svc.resolution is Resolution.DNS_ROUND_ROBIN
        c.type = cluster_pb2.Cluster.LOGICAL_DNS if logical else cluster_pb2.Cluster.STRICT_DNS
        c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
        lbs = _dns_endpoints(svc, port, ctx.registry.endpoints_of(svc.hostname), labels)
        if logical:
            lbs = lbs[:1]
        c.load_assignment.cluster_name = name
        if lbs:
            c.load_assignment.endpoints.add().lb_endpoints.extend(lbs)
        _lb(c, lb)
    else:
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.service_name = name
        c.eds_cluster_config.eds_config.CopyFrom(ads_source())
        _lb(c, lb)
    _default_circuit_breakers(c, pool)
    _http_options(c, port, pool)
    http = pool.get("http") or {}
    h2 = port.protocol.is_http2 or http.get("h2UpgradePolicy") == "UPGRADE"
    if isinstance(lb.get("localityLbSetting"), Mapping) and lb["localityLbSetting"].get("distribute"):
        c.common_lb_config.locality_weighted_lb_config.SetInParent()
    od = policy.get("outlierDetection")
    if isinstance(od, Mapping):
        _outlier(c, od)
    elif c.type == cluster_pb2.Cluster.EDS:
        _failover_outlier(c, mesh)
    tls = policy.get("tls")
    if isinstance(tls, Mapping):
        tctx = upstream_tls(tls, port=port, subset=subset, host=svc.hostname, mesh=mesh,
                            endpoint_sans=_endpoint_sans(ctx, svc.hostname), h2=h2)
        if tctx is not None:
            c.transport_socket.name = "envoy.transport_sockets.tls"
            c.transport_socket.typed_config.CopyFrom(pack(tctx))
    elif (auto_mtls and mesh.auto_mtls and svc.location is Location.MESH_INTERNAL
          and c.type != cluster_pb2.Cluster.ORIGINAL_DST and not port.protocol.is_tls):
        _auto_mtls(c, upstream_tls({"mode": "ISTIO_MUTUAL"}, port=port, subset=subset, host=svc.hostname, mesh=mesh,
                                   endpoint_sans=_endpoint_sans(ctx, svc.hostname), h2=h2))
    tcp = pool.get("tcp") or {}
    ka = tcp.get("tcpKeepalive")
    if isinstance(ka, Mapping):
        kc = c.upstream_connection_options.tcp_keepalive
        if ka.get("probes"):
            kc.keepalive_probes.value = int(ka["probes"])
        t = seconds(ka.get("time"))
        if t is not None:
            kc.keepalive_time.value = int(t)
        i = seconds(ka.get("interval"))
        if i is not None:
            kc.keepalive_interval.value = int(i)
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
            for s in (dr.raw_spec.get("subsets") or []) if dr else []:
                if isinstance(s, Mapping) and s.get("name"):
                    hit.append(outbound_cluster(ctx, svc, port, str(s["name"]), dr, auto_mtls=proxy.sds))
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
        if proxy.inbound_ports:
            out.extend(jwks_clusters(proxy, ctx))
            out.extend(ext_authz_clusters(proxy, ctx))
    out.extend(special_clusters(proxy, ctx.mesh))
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
