"""proxy_from_node: the Node an Envoy sends -> Proxy; errors name the bad key."""

from __future__ import annotations

import pytest

from meshplane.model.proxy import InboundPort, Locality, ProxyMetadataError, ProxyType, proxy_from_node

ID = "sidecar~127.0.1.3~reviews-v1-0.bookinfo~bookinfo.svc.cluster.local"


def test_full_metadata() -> None:
    p = proxy_from_node(ID, {
        "NAMESPACE": "bookinfo", "WORKLOAD_NAME": "reviews-v1", "LABELS": {"app": "reviews", "version": "v1"},
        "SERVICE_ACCOUNT": "bookinfo-reviews", "CLUSTER_ID": "c1", "NETWORK": "net1", "MESH_ID": "m",
        "INSTANCE_IPS": "127.0.1.3,::1", "INBOUND_PORTS": "http:9080=19080,9090/grpc", "APP_ADDRESS": "127.0.0.1",
        "INTERCEPTION_MODE": "none", "OUTBOUND_PORT": "15001",
    }, Locality("r", "z"))
    assert p.type is ProxyType.SIDECAR and p.namespace == "bookinfo" and p.workload_name == "reviews-v1"
    assert p.ip_addresses == ("127.0.1.3", "::1") and p.listen_address == "127.0.1.3"
    assert p.inbound_ports == (InboundPort(9080, 19080, "", "http"), InboundPort(9090, 9090, "GRPC"))
    assert p.network == "net1" and p.cluster_id == "c1" and p.mesh_id == "m" and p.locality.zone == "z"


def test_defaults_from_node_id() -> None:
    p = proxy_from_node(ID, {}, Locality())
    assert p.namespace == "bookinfo" and p.ip_addresses == ("127.0.1.3",) and p.workload_name == "reviews-v1-0"
    assert p.service_account == "default" and p.interception_mode == "NONE"


def test_router_ports_and_listen_address() -> None:
    p = proxy_from_node("router~127.0.2.1~gw-0.istio-system~istio-system.svc.cluster.local",
                        {"GATEWAY_PORTS": {"80": 8080, "443": "8443"}}, Locality())
    assert p.is_gateway and p.listen_address == "0.0.0.0"
    assert p.gateway_listen_port(80) == 8080 and p.gateway_listen_port(15021) == 15021


@pytest.mark.parametrize("node_id,md,key", [
    ("nonsense", {}, "node id"),
    ("proxy~1.2.3.4~a.b~b.svc", {}, "node id"),
    (ID, {"LABELS": ["a"]}, "LABELS"),
    (ID, {"INSTANCE_IPS": "not-an-ip"}, "INSTANCE_IPS"),
    (ID, {"INBOUND_PORTS": "http:abc"}, "INBOUND_PORTS"),
    (ID, {"INBOUND_PORTS": "70000"}, "INBOUND_PORTS"),
    (ID, {"GATEWAY_PORTS": "80"}, "GATEWAY_PORTS"),
    (ID, {"APP_ADDRESS": "localhost"}, "APP_ADDRESS"),
    (ID, {"NAMESPACE": 3}, "NAMESPACE"),
    (ID, {"INTERCEPTION_MODE": "TPROXY"}, "INTERCEPTION_MODE"),
    (ID, {"SDS": "maybe"}, "SDS"),
])
def test_errors_name_the_key(node_id: str, md: dict, key: str) -> None:
    with pytest.raises(ProxyMetadataError, match=key):
        proxy_from_node(node_id, md, Locality())


@pytest.mark.parametrize(("raw", "expected"), [(None, True), ("true", True), ("FALSE", False), (False, False),
                                               (True, True)])
def test_sds_flag(raw: object, expected: bool) -> None:
    md = {} if raw is None else {"SDS": raw}
    assert proxy_from_node(ID, md, Locality()).sds is expected
