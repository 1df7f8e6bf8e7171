"""Network and HTTP filter chains shared by sidecar and gateway listeners.

Every HTTP connection manager gets the same chain: fault and CORS (so per-route VirtualService faults and CORS
policies take effect), the dynamic forward proxy where ``PassthroughCluster`` is one, and the router last
(a listener without the router answers nothing). Every stat_prefix is set: Envoy rejects empty ones.

What a request pays for (measured with bench/dataplane_overhead.py and instruction counts of a sidecar's request
path, bench/README.md): fault and CORS are in every chain but disabled by default, and a route's own
``typed_per_filter_config`` (a VirtualService ``fault`` or ``corsPolicy``) turns them on for that route only, so a
request without either never instantiates them (~5 % of a sidecar's instructions per request) and a policy appearing
or going away changes routes, never listeners (no drain). The router does not emit Envoy's dynamic stats (per
response code ``upstream_rq_<code>``/``_<N>xx``/``_completed``, ``upstream_rq_time`` and the per-zone and canary
variants of them, whose names are built per request: ~8 %). Istio's default stats inclusion list leaves those
out as well; the HTTP connection manager's ``downstream_rq_<N>xx``/``downstream_rq_time``, the cluster's traffic
counters (``upstream_rq_total``, ``upstream_cx_*``, retries, timeouts), RBAC, fault and outlier detection stats
all remain.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import dynamic_forward_proxy_pb2 as dfp_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from meshplane.translate.common import ads_source, pack
from meshplane.translate.dfp import dns_cache_config
from meshplane.translate.dynsubset import header_to_metadata_filter
from meshplane.translate.tls import forward_client_cert
from meshplane.translate.trafficlabel import lua_filter

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def http_filters(dynamic_forward_proxy: bool = False,
                 security: list[hcm_pb2.HttpFilter] | None = None) -> list[hcm_pb2.HttpFilter]:
    """``security`` (jwt_authn, ext_authz, RBAC; see ``authz``) comes first: nothing runs for a refused request."""
    out = [*(security or []),
        # Enabled per route by the route's own fault / CORS config (httproute), see the module docstring.
        hcm_pb2.HttpFilter(name="envoy.filters.http.fault", typed_config=pack(fault_pb2.HTTPFault()), disabled=True),
        hcm_pb2.HttpFilter(name="envoy.filters.http.cors", typed_config=pack(cors_pb2.Cors()), disabled=True),
    ]
    out.append(lua_filter())  # runs the per-virtual-host scripts of ``trafficlabel`` (none: a no-op)
    out.append(header_to_metadata_filter())  # dynamic subsets (``dynsubset``): enabled per route
    if dynamic_forward_proxy:
        out.append(hcm_pb2.HttpFilter(name="envoy.filters.http.dynamic_forward_proxy", typed_config=pack(
            dfp_pb2.FilterConfig(dns_cache_config=dns_cache_config()))))
    router = router_pb2.Router()
    router.dynamic_stats.value = False  # no per-request stat names; see the module docstring
    out.append(hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router)))
    return out


def http_connection_manager(
    stat_prefix: str,
    *,
    rds: str | None = None,
    route_config: route_pb2.RouteConfiguration | None = None,
    gateway: bool = False,
    sidecar_inbound: bool = False,
    explicit_proxy: bool = False,
    dynamic_forward_proxy: bool = False,
    security_filters: list[hcm_pb2.HttpFilter] | None = None,
    access_logs: list[accesslog_pb2.AccessLog] | None = None,
    peer_filters: list[hcm_pb2.HttpFilter] | None = None,
    tracing: hcm_pb2.HttpConnectionManager.Tracing | None = None,
) -> listener_components_pb2.Filter:
    """``tracing``: the Telemetry API's tracing of this side (``translate.tracing``);
    ``gateway``: a gateway's (the edge: the client's address is the remote address, XFCC sanitized and set);
    ``sidecar_inbound``: a sidecar's inbound chain (XFCC appended, see ``tls.forward_client_cert``);
    ``peer_filters`` (the identity exchange of ``telemetry``) run first, before any filter can answer."""
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix, codec_type=hcm_pb2.HttpConnectionManager.AUTO)
    hcm.access_log.extend(access_logs or [])
    if tracing is not None:
        hcm.tracing.CopyFrom(tracing)
    if rds is not None:
        hcm.rds.route_config_name = rds
        hcm.rds.config_source.CopyFrom(ads_source())
    elif route_config is not None:
        hcm.route_config.CopyFrom(route_config)
    hcm.http_filters.extend([*(peer_filters or []), *http_filters(dynamic_forward_proxy, security_filters)])
    hcm.use_remote_address.value = gateway
    forward_client_cert(hcm, sidecar_inbound=sidecar_inbound, gateway=gateway)
    hcm.normalize_path.value = True
    hcm.merge_slashes = gateway
    hcm.path_with_escaped_slashes_action = hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED
    if explicit_proxy:
        # Clients that use us as their http_proxy send absolute URLs (GET http://reviews:9080/ HTTP/1.1).
        opts = protocol_pb2.Http1ProtocolOptions()
        opts.allow_absolute_url.value = True
        hcm.http_protocol_options.CopyFrom(opts)
        # https_proxy clients tunnel with CONNECT; routes with connect_matcher decide where the tunnel goes.
        hcm.upgrade_configs.add(upgrade_type="CONNECT")
    return listener_components_pb2.Filter(name=HCM, typed_config=pack(hcm))


# TcpProxy.upstream_connect_mode (field 21, varint) = ON_DOWNSTREAM_TLS_HANDSHAKE (2), which Envoy accepts only
# with max_early_data_bytes (field 22, a UInt32Value): what the peer sends before the upstream connection is up
# is buffered up to that size (64 KiB), then read no further until it is. Both fields are newer than the
# protobuf classes this package is built with, hence appended to the encoded message by hand.
_CONNECT_AFTER_TLS = (bytes([0xA8, 0x01, 0x02])  # key 21 << 3 | 0 (168) as a varint, value 2
                      + bytes([0xB2, 0x01, 0x04, 0x08, 0x80, 0x80, 0x04]))  # key 22 << 3 | 2, 4 bytes: value 65536


def tcp_proxy(stat_prefix: str, cluster: str | None = None,
              weighted: list[tuple[str, int]] | None = None,
              access_logs: list[accesslog_pb2.AccessLog] | None = None,
              connect_after_tls: bool = False) -> listener_components_pb2.Filter:
    """``connect_after_tls``: open the upstream connection only once the downstream TLS handshake is done (an
    mTLS inbound chain): nothing reaches the application from a peer that did not authenticate, and the
    connection-opened metric knows the peer's certificate."""
    tp = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if access_logs:
        tp.access_log.extend(access_logs)
        # The connection metrics count the upstream connect too (``telemetry``), not only the close.
        tp.access_log_options.flush_access_log_on_connected = True
    if weighted and len(weighted) > 1:
        for name, weight in weighted:
            tp.weighted_clusters.clusters.add(name=name, weight=max(weight, 0))
    else:
        tp.cluster = weighted[0][0] if weighted else (cluster or "BlackHoleCluster")
    packed = pack(tp)
    if connect_after_tls:
        packed.value = packed.value + _CONNECT_AFTER_TLS
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=packed)


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    return listener_components_pb2.ListenerFilter(name=TLS_INSPECTOR,
                                                  typed_config=pack(tls_inspector_pb2.TlsInspector()))
