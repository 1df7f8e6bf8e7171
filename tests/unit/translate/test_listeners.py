"""Sidecar and gateway listeners: the explicit HTTP proxy, per-port outbound listeners, inbound forwarding,
outbound traffic policy, REDIRECT mode, gateway servers (HTTP, HTTPS via SDS, TLS passthrough, TCP)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _feature_corpus import dr, feature_objects, gw, sidecar_cr, vs
from _translate_helpers import (
    bookinfo_file,
    bookinfo_registry,
    clusters,
    context,
    fqdn,
    gateway,
    hcm_of,
    listeners,
    routes,
    service_entry,
    sidecar,
)
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from meshplane.translate import MeshSettings
from meshplane.translate.simulate import simulate


def _tcp(chain: listener_pb2.FilterChain | None) -> tcp_proxy_pb2.TcpProxy:
    assert chain is not None
    tp = tcp_proxy_pb2.TcpProxy()
    assert chain.filters[0].typed_config.Unpack(tp)
    return tp


def _every_hcm(lds: dict[str, listener_pb2.Listener]) -> list:
    out = []
    for lst in lds.values():
        for chain in [*lst.filter_chains, lst.default_filter_chain]:
            h = hcm_of(chain)
            if h is not None:
                out.append(h)
    return out


def test_sidecar_http_proxy_listener() -> None:
    lds = listeners(sidecar(), context(bookinfo_registry()))
    proxy = lds["127.0.1.1_15001"]
    assert proxy.address.socket_address.address == "127.0.1.1"
    h = hcm_of(proxy.filter_chains[0])
    assert h is not None and h.rds.route_config_name == "http_proxy"
    assert h.http_protocol_options.allow_absolute_url.value is True
    assert [f.name for f in h.http_filters][-1] == "envoy.filters.http.router"
    # No listener hands connections over by original destination in NONE mode: no per-port listeners.
    assert sorted(lds) == ["127.0.1.1_15001", "inbound_127.0.1.1_9080"]
    port = listeners(sidecar(INTERCEPTION_MODE="REDIRECT"), context(bookinfo_registry()))["0.0.0.0_9080"]
    assert port.bind_to_port.value is False


def test_every_hcm_ends_in_router_with_stat_prefix(cert_dir: Path) -> None:
    ctx = context(bookinfo_registry() + feature_objects(str(cert_dir)))
    for proxy in (sidecar(), gateway(), sidecar(INTERCEPTION_MODE="REDIRECT")):
        for h in _every_hcm(listeners(proxy, ctx)):
            assert h.http_filters[-1].name == "envoy.filters.http.router"
            assert h.stat_prefix


def test_inbound_forwards_to_app_port() -> None:
    p = sidecar(INBOUND_PORTS="http:9080=19080", APP_ADDRESS="127.0.0.1")
    ctx = context(bookinfo_registry())
    lds = listeners(p, ctx)
    inbound = lds["inbound_127.0.1.1_9080"]
    assert inbound.address.socket_address.port_value == 9080
    h = hcm_of(inbound.filter_chains[0])
    assert h is not None and h.route_config.virtual_hosts[0].routes[0].route.cluster == "inbound|9080||"
    ep = clusters(p, ctx)["inbound|9080||"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (ep.socket_address.address, ep.socket_address.port_value) == ("127.0.0.1", 19080)


def test_inbound_protocol_inferred_from_registry_else_tcp() -> None:
    ctx = context(bookinfo_registry())
    lds = listeners(sidecar(INBOUND_PORTS="9080,7000"), ctx)
    assert hcm_of(lds["inbound_127.0.1.1_9080"].filter_chains[0]) is not None  # productpage's service port is HTTP
    assert _tcp(lds["inbound_127.0.1.1_7000"].filter_chains[0]).cluster == "inbound|7000||"


def test_inbound_mtls_permissive_chains() -> None:
    lds = listeners(sidecar(), context(bookinfo_registry(), MeshSettings(inbound_mtls=True)))
    chains = lds["inbound_127.0.1.1_9080"].filter_chains
    assert [c.filter_chain_match.transport_protocol for c in chains] == ["tls", "raw_buffer"]
    t = tls_pb2.DownstreamTlsContext()
    chains[0].transport_socket.typed_config.Unpack(t)
    assert t.require_client_certificate.value
    assert t.common_tls_context.tls_certificate_sds_secret_configs[0].name == "default"


def test_tcp_and_tls_outbound_listeners(cert_dir: Path) -> None:
    lds = listeners(sidecar(INTERCEPTION_MODE="REDIRECT"),
                    context(bookinfo_registry() + feature_objects(str(cert_dir))))
    db = _tcp(lds["240.240.0.10_5432"].filter_chains[0])
    assert {c.name for c in db.weighted_clusters.clusters} == {"outbound|5432|a|db.internal",
                                                               "outbound|5432|b|db.internal"}
    tls = lds["0.0.0.0_443"]
    assert list(tls.filter_chains[0].filter_chain_match.server_names) == ["api.example.com"]
    assert _tcp(tls.filter_chains[0]).cluster == "outbound|443||api.example.com"
    assert _tcp(tls.default_filter_chain).cluster == "PassthroughCluster"
    assert _tcp(lds["0.0.0.0_9000"].filter_chains[0]).cluster == "outbound|9000||tcp-echo.internal"


def test_redirect_mode_virtual_listeners() -> None:
    ctx = context(bookinfo_registry(), MeshSettings(outbound_traffic_policy="REGISTRY_ONLY"))
    lds = listeners(sidecar(INTERCEPTION_MODE="REDIRECT"), ctx)
    vo = lds["virtualOutbound"]
    assert vo.use_original_dst.value and _tcp(vo.default_filter_chain).cluster == "BlackHoleCluster"
    vi = lds["virtualInbound"]
    assert vi.address.socket_address.port_value == 15006
    assert vi.filter_chains[0].filter_chain_match.destination_port.value == 9080
    assert clusters(sidecar(INTERCEPTION_MODE="REDIRECT"), ctx)["PassthroughCluster"].type == 4  # ORIGINAL_DST


def test_sidecar_resource_scopes_egress_and_policy() -> None:
    objs = [*bookinfo_registry(),sidecar_cr("default", {
        "egress": [{"hosts": ["./reviews.default.svc.cluster.local", "istio-system/*"]}],
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})]
    ctx = context(objs)
    cds = clusters(sidecar(), ctx)
    assert f"outbound|9080||{fqdn('reviews')}" in cds
    assert f"outbound|9080||{fqdn('ratings')}" not in cds
    d = simulate(routes(sidecar(), ctx), "http_proxy", "ratings:9080", "/")
    assert d is not None and d.cluster == "BlackHoleCluster"


def test_sidecar_with_workload_selector_wins_over_namespace_default() -> None:
    objs = [*bookinfo_registry(),
        sidecar_cr("default", {"egress": [{"hosts": ["./ratings.default.svc.cluster.local"]}]}),
        sidecar_cr("pp", {"workloadSelector": {"labels": {"app": "productpage"}},
                          "egress": [{"hosts": ["*/details.default.svc.cluster.local"]}]}),
    ]
    ctx = context(objs)
    assert f"outbound|9080||{fqdn('details')}" in clusters(sidecar(), ctx)
    assert f"outbound|9080||{fqdn('details')}" not in clusters(sidecar("reviews", "v1"), ctx)


# ---- gateways ---------------------------------------------------------------------------------------------


def test_bookinfo_gateway_listens_on_mapped_port() -> None:
    objs = bookinfo_registry() + bookinfo_file("destination-rule-all.yaml") + bookinfo_file("bookinfo-gateway.yaml")
    ctx = context(objs)
    g = gateway(ns="default")
    lds = listeners(g, ctx)
    assert list(lds) == ["127.0.2.1_8080"]
    h = hcm_of(lds["127.0.2.1_8080"].filter_chains[0])
    assert h is not None and h.rds.route_config_name == "http.80" and h.use_remote_address.value
    rs = routes(g, ctx)
    d = simulate(rs, "http.80", "localhost:8080", "/productpage")
    assert d is not None and d.cluster == f"outbound|9080||{fqdn('productpage')}"
    assert simulate(rs, "http.80", "localhost", "/other") is None


def test_gateway_ignores_unselected() -> None:
    objs = bookinfo_registry() + bookinfo_file("bookinfo-gateway.yaml")
    assert listeners(gateway({"istio": "egressgateway"}), context(objs)) == {}


def test_gateway_https_tls_passthrough_and_tcp(cert_dir: Path) -> None:
    ctx = context(bookinfo_registry() + feature_objects(str(cert_dir)))
    g = gateway()
    lds = listeners(g, ctx)
    https = lds["127.0.2.1_8443"]
    assert [f.name for f in https.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    first = https.filter_chains[0]
    assert list(first.filter_chain_match.server_names) == ["httpbin.example.com"]
    t = tls_pb2.DownstreamTlsContext()
    first.transport_socket.typed_config.Unpack(t)
    assert t.common_tls_context.tls_certificate_sds_secret_configs[0].name == "kubernetes://httpbin-credential"
    h = hcm_of(first)
    assert h is not None and h.rds.route_config_name == "https.443.https.main.istio-system"
    passthrough = lds["127.0.2.1_9443"]
    assert list(passthrough.filter_chains[0].filter_chain_match.server_names) == ["api.example.com"]
    assert _tcp(passthrough.filter_chains[0]).cluster == "outbound|443||api.example.com"
    tcp = _tcp(lds["127.0.2.1_31400"].filter_chains[0])
    assert {(c.name, c.weight) for c in tcp.weighted_clusters.clusters} == {
        ("outbound|9000|v1|tcp-echo.internal", 80), ("outbound|9000|v2|tcp-echo.internal", 20)}
    rs = routes(g, ctx)
    d = simulate(rs, "https.443.https.main.istio-system", "httpbin.example.com", "/")
    assert d is not None and d.cluster == f"outbound|8000||{fqdn('httpbin')}"
    d = simulate(rs, "http.80", "anything.local", "/httpbin/get")
    assert d is not None and d.route_proto is not None and d.route_proto.route.prefix_rewrite == "/"
    assert simulate(rs, "http.80", "anything.local", "/mesh-only") is None  # match.gateways: mesh only
    redirect = next(v for v in next(r for r in rs if r.name == "http.80").virtual_hosts
                    if v.name.startswith("secure.example.com"))
    assert redirect.require_tls == redirect.ALL


def test_gateway_short_name_binding_in_vs_namespace() -> None:
    objs = [*bookinfo_registry(),
        gw("local-gw", {"selector": {"app": "gw"}, "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["./*"]}]}, ns="default"),
        vs("bind", {"hosts": ["shop.example.com"], "gateways": ["local-gw"],
                    "http": [{"route": [{"destination": {"host": "details"}}]}]}),
        vs("other-ns", {"hosts": ["x.example.com"], "gateways": ["default/local-gw"],
                        "http": [{"route": [{"destination": {"host": "details.default.svc.cluster.local"}}]}]},
           ns="elsewhere"),
    ]
    rs = routes(gateway({"app": "gw"}, ns="default"), context(objs))
    d = simulate(rs, "http.80", "shop.example.com", "/")
    assert d is not None and d.cluster == f"outbound|9080||{fqdn('details')}"
    assert simulate(rs, "http.80", "x.example.com", "/") is None  # server hosts "./*": only the gateway's namespace


@pytest.mark.parametrize("port_map,expected", [("", 80), ("80=8080", 8080)])
def test_gateway_port_mapping(port_map: str, expected: int) -> None:
    objs = bookinfo_registry() + bookinfo_file("bookinfo-gateway.yaml")
    lds = listeners(gateway(ns="default", GATEWAY_PORTS=port_map), context(objs))
    assert [x.address.socket_address.port_value for x in lds.values()] == [expected]


def test_explicit_proxy_connect_routes_carry_tcp_virtual_service_weights(cert_dir: Path) -> None:
    """NONE mode reaches TCP services by CONNECT through the explicit proxy: the VirtualService ``tcp`` split that
    REDIRECT mode puts on the per-port TCP listener is on the CONNECT route instead."""
    ctx = context(bookinfo_registry() + feature_objects(str(cert_dir)))
    rds = {r.name: r for r in routes(sidecar(), ctx)}
    vh = next(v for v in rds["http_proxy"].virtual_hosts if v.name == "db.internal:5432")
    (connect,) = [r for r in vh.routes if r.match.HasField("connect_matcher")]
    assert {(c.name, c.weight.value) for c in connect.route.weighted_clusters.clusters} == {
        ("outbound|5432|a|db.internal", 50), ("outbound|5432|b|db.internal", 50)}
    # a TCP service without a VirtualService keeps its one cluster
    plain = next(v for v in rds["http_proxy"].virtual_hosts if v.name == "tcp-echo.internal:9000")
    assert plain.routes[0].route.cluster == "outbound|9000||tcp-echo.internal"


def test_explicit_proxy_connect_routes_follow_tls_routes_by_sni_host() -> None:
    """NONE mode: a CONNECT tunnel to a TLS port carries the SNI inside, so the ``tls`` route whose ``sniHosts``
    name the CONNECT host decides where it goes (REDIRECT mode matches the same names against the SNI)."""
    def objects(sni: list[str], weights: tuple[int, int]) -> list[dict]:
        return [
            service_entry("secure", hosts=["secure.internal"],
                          ports=[{"number": 443, "name": "tls", "protocol": "TLS"}],
                          endpoints=[{"address": "127.0.5.1", "labels": {"version": "a"}},
                                     {"address": "127.0.5.2", "labels": {"version": "b"}}]),
            dr("secure", {"host": "secure.internal", "subsets": [{"name": "a", "labels": {"version": "a"}},
                                                                  {"name": "b", "labels": {"version": "b"}}]}),
            vs("secure", {"hosts": ["secure.internal"], "tls": [
                {"match": [{"port": 443, "sniHosts": sni}], "route": [
                    {"destination": {"host": "secure.internal", "subset": "a"}, "weight": weights[0]},
                    {"destination": {"host": "secure.internal", "subset": "b"}, "weight": weights[1]}]}]}),
        ]

    def connect_route(objs: list[dict]) -> object:
        rds = {r.name: r for r in routes(sidecar(), context(objs))}
        vh = next(v for v in rds["http_proxy"].virtual_hosts if v.name == "secure.internal:443")
        (connect,) = [r for r in vh.routes if r.match.HasField("connect_matcher")]
        return connect.route

    split = connect_route(objects(["secure.internal"], (30, 70)))
    assert {(c.name, c.weight.value) for c in split.weighted_clusters.clusters} == {
        ("outbound|443|a|secure.internal", 30), ("outbound|443|b|secure.internal", 70)}
    only_b = connect_route(objects(["*.internal"], (0, 100)))  # a wildcard SNI covers the host
    assert only_b.cluster == "outbound|443|b|secure.internal"
    elsewhere = connect_route(objects(["other.internal"], (0, 100)))  # a route for another SNI does not apply
    assert elsewhere.cluster == "outbound|443||secure.internal"
