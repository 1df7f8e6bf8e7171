"""Gateway servers read from the typed Gateway: TLS modes (ISTIO_MUTUAL, MUTUAL/OPTIONAL_MUTUAL with a
credential), TLS terminated before TCP routing, ``targetPort``, and a route configuration with no VirtualService."""

from __future__ import annotations

from typing import Any

from _feature_corpus import gw, vs
from _translate_helpers import bookinfo_registry, context, fqdn, gateway, listeners, routes
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from meshplane.translate import MeshSettings

SELECTOR = {"istio": "ingressgateway"}


def _server(number: int, name: str, protocol: str, hosts: list[str], tls: dict[str, Any] | None = None,
            **port: Any) -> dict[str, Any]:
    server: dict[str, Any] = {"port": {"number": number, "name": name, "protocol": protocol, **port}, "hosts": hosts}
    if tls is not None:
        server["tls"] = tls
    return server


def _downstream(chain: listener_pb2.FilterChain) -> tls_pb2.DownstreamTlsContext:
    t = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(t)
    return t


def _objects(*servers: dict[str, Any]) -> list[dict[str, Any]]:
    bound = vs("gw-bound", {"hosts": ["*.example.com"], "gateways": ["istio-system/edge"],
                            "http": [{"route": [{"destination": {"host": "reviews"}}]}],
                            "tcp": [{"route": [{"destination": {"host": "ratings"}}]}]})
    return [*bookinfo_registry(), gw("edge", {"selector": SELECTOR, "servers": list(servers)}), bound]


def test_istio_mutual_server_uses_the_workload_certificate_and_requires_a_client_certificate() -> None:
    mesh = MeshSettings()
    lds = listeners(gateway(), context(_objects(
        _server(443, "mtls", "HTTPS", ["m.example.com"], {"mode": "ISTIO_MUTUAL"})), mesh))
    t = _downstream(lds["127.0.2.1_8443"].filter_chains[0])
    common = t.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == [mesh.workload_secret]
    assert common.validation_context_sds_secret_config.name == mesh.root_secret
    assert t.require_client_certificate.value is True


def test_mutual_modes_take_the_ca_from_the_credential() -> None:
    lds = listeners(gateway(), context(_objects(
        _server(443, "opt", "HTTPS", ["o.example.com"], {"mode": "OPTIONAL_MUTUAL", "credentialName": "ocred"}),
        _server(443, "mut", "HTTPS", ["p.example.com"], {"mode": "MUTUAL", "credentialName": "pcred"}))))
    by_sni = {tuple(c.filter_chain_match.server_names): _downstream(c) for c in lds["127.0.2.1_8443"].filter_chains}
    optional, mutual = by_sni[("o.example.com",)], by_sni[("p.example.com",)]
    assert optional.common_tls_context.tls_certificate_sds_secret_configs[0].name == "kubernetes://ocred"
    assert optional.common_tls_context.validation_context_sds_secret_config.name == "kubernetes://ocred-cacert"
    assert optional.require_client_certificate.value is False
    assert mutual.common_tls_context.validation_context_sds_secret_config.name == "kubernetes://pcred-cacert"
    assert mutual.require_client_certificate.value is True


def test_tls_terminated_then_routed_by_the_tcp_route_on_the_target_port() -> None:
    lds = listeners(gateway(), context(_objects(
        _server(8445, "tls", "TLS", ["t.example.com"], {"mode": "SIMPLE", "credentialName": "tcred"},
                targetPort=18445))))
    lst = lds["127.0.2.1_18445"]
    assert [f.name for f in lst.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    chain = lst.filter_chains[0]
    assert list(chain.filter_chain_match.server_names) == ["t.example.com"]
    assert _downstream(chain).common_tls_context.tls_certificate_sds_secret_configs[0].name == "kubernetes://tcred"
    tp = tcp_proxy_pb2.TcpProxy()
    assert chain.filters[0].typed_config.Unpack(tp)
    assert tp.cluster == f"outbound|9080||{fqdn('ratings')}"


def test_a_server_no_virtual_service_binds_answers_404() -> None:
    objs = [*bookinfo_registry(), gw("lonely", {"selector": SELECTOR, "servers": [
        _server(80, "http", "http", ["*"])]})]  # the protocol is case-insensitive
    rds = {r.name: r for r in routes(gateway(), context(objs))}
    vh = rds["http.80"].virtual_hosts[0]
    assert (vh.name, list(vh.domains)) == ("blackhole:80", ["*"])
    assert vh.routes[0].direct_response.status == 404
