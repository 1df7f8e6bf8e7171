"""Multi-network translation: sidecars reach other networks only through their east-west gateway (EDS rewrite,
SNI ``outbound_.PORT_.SUBSET_.HOST`` with ISTIO_MUTUAL), and the east-west gateway routes by SNI to its own
network's endpoints without terminating TLS (AUTO_PASSTHROUGH); both accepted by ``envoy --mode validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import (
    clusters,
    context,
    decode,
    envoy_validate,
    fqdn,
    gateway,
    listeners,
    service_entry,
    sidecar,
)

from meshplane.model import xdstypes
from meshplane.translate import MeshSettings
from meshplane.translate.eastwest import auto_passthrough_ports, parse_sni_name, sni_name

REVIEWS = f"outbound|9080||{fqdn('reviews')}"
SNI = f"outbound_.9080_._.{fqdn('reviews')}"
ISTIO = {"security.istio.io/tlsMode": "istio"}


def _we(name: str, address: str, labels: dict[str, str], network: str, ns: str = "default",
        locality: str = "region1/zone1", sa: str = "bookinfo-reviews") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"address": address, "labels": {**labels, **ISTIO}, "network": network, "locality": locality,
                     "serviceAccount": sa}}


def _mesh(*, gateway_net2: bool = True, dr: bool = False) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = [
        service_entry("reviews", selector={"app": "reviews"}),
        service_entry("productpage", selector={"app": "productpage"}),
        _we("reviews-1", "127.0.1.3", {"app": "reviews", "version": "v1"}, "network-1"),
        _we("reviews-2a", "127.0.2.3", {"app": "reviews", "version": "v2"}, "network-2", locality="region1/zone2"),
        _we("reviews-2b", "127.0.2.4", {"app": "reviews", "version": "v2"}, "network-2", locality="region1/zone2"),
        _we("productpage-1", "127.0.1.1", {"app": "productpage"}, "network-1", sa="bookinfo-productpage"),
        service_entry("istio-eastwestgateway", ns="istio-system", selector={"istio": "eastwestgateway"},
                      ports=[{"number": 15443, "name": "tls", "protocol": "TLS"}], export_to=["."]),
        _we("ewgw-1", "127.0.1.200", {"istio": "eastwestgateway"}, "network-1", ns="istio-system",
            sa="istio-eastwestgateway"),
    ]
    if gateway_net2:
        objs.append(_we("ewgw-2", "127.0.2.200", {"istio": "eastwestgateway"}, "network-2", ns="istio-system",
                        sa="istio-eastwestgateway"))
    if dr:
        objs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                     "metadata": {"name": "reviews", "namespace": "default"},
                     "spec": {"host": "reviews", "subsets": [{"name": "v2", "labels": {"version": "v2"}}]}})
    return objs


def _client(network: str = "network-1") -> Any:
    return sidecar("productpage", NETWORK=network, INBOUND_PORTS="")


def _ewgw(network: str = "network-2") -> Any:
    return gateway({"istio": "eastwestgateway", "topology.istio.io/network": network}, NETWORK=network,
                   INSTANCE_IPS="127.0.2.200", LISTEN_ADDRESS="127.0.2.200", GATEWAY_PORTS="")


def _addresses(cla: Any) -> list[tuple[str, int, int]]:
    return sorted((lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value,
                   lb.load_balancing_weight.value) for lle in cla.endpoints for lb in lle.lb_endpoints)


def _cla(proxy: Any, ctx: Any, name: str) -> Any:
    (cla,) = decode(xdstypes.ENDPOINT, proxy, ctx, [name])
    return cla


def test_sni_names_round_trip() -> None:
    assert sni_name(9080, "", fqdn("reviews")) == SNI
    assert parse_sni_name(SNI) == (9080, "", fqdn("reviews"))
    assert parse_sni_name(sni_name(9080, "v2", fqdn("reviews"))) == (9080, "v2", fqdn("reviews"))
    assert parse_sni_name(REVIEWS) is None


def test_remote_network_endpoints_become_its_gateway() -> None:
    ctx = context(_mesh())
    cla = _cla(_client(), ctx, REVIEWS)
    # Own network direct; network-2's two instances are one gateway endpoint of weight 2 on 15443.
    assert _addresses(cla) == [("127.0.1.3", 9080, 1), ("127.0.2.200", 15443, 2)]
    remote = next(lb for lle in cla.endpoints for lb in lle.lb_endpoints
              if lb.endpoint.address.socket_address.address == "127.0.2.200")
    assert remote.metadata.filter_metadata["envoy.transport_socket_match"]["tlsMode"] == "istio"
    zones = {lle.locality.zone for lle in cla.endpoints
             if lle.lb_endpoints[0].endpoint.address.socket_address.address == "127.0.2.200"}
    assert zones == {"zone2"}  # the remote endpoints' locality, so locality priorities still apply
    assert "127.0.2.3" not in str(cla) and "127.0.2.4" not in str(cla)


def test_client_on_the_other_network_sees_the_mirror_image() -> None:
    ctx = context(_mesh())
    assert _addresses(_cla(_client("network-2"), ctx, REVIEWS)) == [
        ("127.0.1.200", 15443, 1), ("127.0.2.3", 9080, 1), ("127.0.2.4", 9080, 1)]


def test_no_gateway_means_no_route_never_direct() -> None:
    ctx = context(_mesh(gateway_net2=False))
    assert _addresses(_cla(_client(), ctx, REVIEWS)) == [("127.0.1.3", 9080, 1)]


def test_subset_cluster_goes_through_gateway_with_subset_sni() -> None:
    ctx = context(_mesh(dr=True))
    name = f"outbound|9080|v2|{fqdn('reviews')}"
    assert _addresses(_cla(_client(), ctx, name)) == [("127.0.2.200", 15443, 2)]
    c = clusters(_client(), ctx)[name]
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
    tls = tls_pb2.UpstreamTlsContext()
    (match,) = [m for m in c.transport_socket_matches if m.name == "tlsMode-istio"]
    assert match.transport_socket.typed_config.Unpack(tls)
    assert tls.sni == f"outbound_.9080_.v2_.{fqdn('reviews')}"
    assert tls.common_tls_context.tls_certificate_sds_secret_configs  # ISTIO_MUTUAL


def test_single_network_is_unchanged() -> None:
    objs = [o for o in _mesh() if not o["metadata"]["name"].startswith("ewgw")]
    for o in objs:
        if o["kind"] == "WorkloadEntry":
            o["spec"]["network"] = "network-1"
    assert _addresses(_cla(_client(), context(objs), REVIEWS)) == [
        ("127.0.1.3", 9080, 1), ("127.0.2.3", 9080, 1), ("127.0.2.4", 9080, 1)]


def test_eastwest_gateway_routes_by_sni_to_its_own_network() -> None:
    ctx = context(_mesh(dr=True))
    gw = _ewgw()
    lst = listeners(gw, ctx)["127.0.2.200_15443"]
    assert [f.name for f in lst.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    by_sni = {tuple(c.filter_chain_match.server_names): c for c in lst.filter_chains}
    assert (SNI,) in by_sni and (f"outbound_.9080_.v2_.{fqdn('reviews')}",) in by_sni
    assert not any(c.HasField("transport_socket") for c in lst.filter_chains)  # never terminates TLS
    cs = clusters(gw, ctx)
    assert not cs[SNI].transport_socket_matches and not cs[SNI].HasField("transport_socket")
    # It shares the outbound cluster's assignment (endpoint pushes find it by host): network-2's endpoints only,
    # direct (never another gateway).
    assert cs[SNI].eds_cluster_config.service_name == REVIEWS
    assert _addresses(_cla(gw, ctx, REVIEWS)) == [("127.0.2.3", 9080, 1), ("127.0.2.4", 9080, 1)]


def test_gateway_resource_with_auto_passthrough() -> None:
    expose = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
              "metadata": {"name": "cross-network-gateway", "namespace": "istio-system"},
              "spec": {"selector": {"app": "ew"}, "servers": [{
                  "port": {"number": 15443, "name": "tls", "protocol": "TLS"}, "tls": {"mode": "AUTO_PASSTHROUGH"},
                  "hosts": ["*.local"]}]}}
    ctx = context([*_mesh(), expose])
    gw = gateway({"app": "ew"}, NETWORK="network-2", INSTANCE_IPS="127.0.2.201", LISTEN_ADDRESS="127.0.2.201")
    lst = listeners(gw, ctx)["127.0.2.201_15443"]
    assert SNI in {n for c in lst.filter_chains for n in c.filter_chain_match.server_names}
    # An ordinary ingress gateway gets none of it.
    assert not [n for n in listeners(gateway(), ctx) if n.endswith("_15443")]
    assert SNI not in clusters(gateway(), ctx)


def test_auto_passthrough_ports_from_typed_servers() -> None:
    """Only AUTO_PASSTHROUGH servers count; a server's targetPort is where the gateway listens."""
    servers = [{"port": {"number": 15443, "name": "tls", "protocol": "TLS", "targetPort": 16443},
                "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.local"]},
               {"port": {"number": 15444, "name": "tls2", "protocol": "TLS"}, "tls": {"mode": "PASSTHROUGH"},
                "hosts": ["*.local"]},
               {"port": {"number": 15445, "name": "tls3", "protocol": "TLS"}, "tls": {"mode": "AUTO_PASSTHROUGH"},
                "hosts": ["*.local"]}]
    gw_obj = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
              "metadata": {"name": "cross-network-gateway", "namespace": "istio-system"},
              "spec": {"selector": {"app": "ew"}, "servers": servers}}
    ctx = context([*_mesh(), gw_obj])
    gw = gateway({"app": "ew"}, NETWORK="network-2", INSTANCE_IPS="127.0.2.201", LISTEN_ADDRESS="127.0.2.201",
                 GATEWAY_PORTS="15445=25445")
    assert auto_passthrough_ports(gw, ctx) == [16443, 25445]
    assert auto_passthrough_ports(gateway(), ctx) == []


@pytest.mark.envoy
@pytest.mark.parametrize("dr", [False, True])
def test_envoy_accepts_sidecar_and_eastwest_gateway(dr: bool, tmp_path: Path) -> None:
    ctx = context(_mesh(dr=dr), MeshSettings(inbound_mtls=True))
    envoy_validate(_client(), ctx, tmp_path)
    envoy_validate(sidecar("reviews", "v2", ip="127.0.2.3", NETWORK="network-2", INBOUND_PORTS="http:9080"),
                   ctx, tmp_path)
    envoy_validate(_ewgw(), ctx, tmp_path)


def test_without_any_eastwest_gateway_the_mesh_is_flat() -> None:
    objs = [o for o in _mesh() if not o["metadata"]["name"].startswith("ewgw")]
    assert _addresses(_cla(_client(), context(objs), REVIEWS)) == [
        ("127.0.1.3", 9080, 1), ("127.0.2.3", 9080, 1), ("127.0.2.4", 9080, 1)]
