"""DestinationRule and ServiceEntry -> clusters and endpoints: lb policy, pools, outlier detection, TLS modes,
subsets, port-level settings, resolution types, locality priorities."""

from __future__ import annotations

from pathlib import Path

import pytest
from _feature_corpus import dr, feature_objects
from _translate_helpers import (
    bookinfo_file,
    bookinfo_registry,
    clusters,
    context,
    decode,
    envoy_validate,
    fqdn,
    routes,
    sidecar,
)
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from meshplane.model import xdstypes
from meshplane.translate import MeshSettings

HB = fqdn("httpbin")
C = cluster_pb2.Cluster


@pytest.fixture
def cds(cert_dir: Path) -> dict[str, cluster_pb2.Cluster]:
    return clusters(sidecar(), context(bookinfo_registry() + feature_objects(str(cert_dir))))


def _tls(c: cluster_pb2.Cluster) -> tls_pb2.UpstreamTlsContext:
    t = tls_pb2.UpstreamTlsContext()
    assert c.transport_socket.typed_config.Unpack(t)
    return t


def test_bookinfo_subsets_become_clusters() -> None:
    cds = clusters(sidecar(), context(bookinfo_registry() + bookinfo_file("destination-rule-all.yaml")))
    for subset in ("", "v1", "v2", "v3"):
        c = cds[f"outbound|9080|{subset}|{fqdn('reviews')}"]
        assert c.type == C.EDS and c.eds_cluster_config.service_name == c.name
    assert cds["inbound|9080||"].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address \
        == "127.0.0.1"
    assert {"BlackHoleCluster", "PassthroughCluster"} <= set(cds)


def test_lb_policy_pool_and_outlier(cds: dict[str, cluster_pb2.Cluster]) -> None:
    c = cds[f"outbound|8000||{HB}"]
    assert c.lb_policy == C.ROUND_ROBIN
    assert c.connect_timeout.seconds == 3
    t = c.circuit_breakers.thresholds[0]
    assert (t.max_connections.value, t.max_pending_requests.value, t.max_requests.value, t.max_retries.value) == (
        100, 10, 1000, 4)
    od = c.outlier_detection
    assert od.consecutive_5xx.value == 5 and od.enforcing_consecutive_5xx.value == 100
    assert od.consecutive_gateway_failure.value == 3
    assert od.interval.seconds == 10 and od.base_ejection_time.seconds == 30 and od.max_ejection_percent.value == 50
    assert c.common_lb_config.healthy_panic_threshold.value == 20
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(opts)
    assert opts.common_http_protocol_options.max_requests_per_connection.value == 5
    assert opts.common_http_protocol_options.idle_timeout.seconds == 30
    assert c.upstream_connection_options.tcp_keepalive.keepalive_probes.value == 9


def test_port_level_settings_override(cds: dict[str, cluster_pb2.Cluster]) -> None:
    assert cds[f"outbound|8443||{HB}"].lb_policy == C.RANDOM
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    cds[f"outbound|8443||{HB}"].typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(opts)
    assert opts.explicit_http_config.HasField("http2_protocol_options")  # GRPC port


def test_subset_policies_consistent_hash(cds: dict[str, cluster_pb2.Cluster]) -> None:
    assert cds[f"outbound|8000|v1|{HB}"].lb_policy == C.RING_HASH
    assert cds[f"outbound|8000|v1|{HB}"].ring_hash_lb_config.minimum_ring_size.value == 1024
    assert cds[f"outbound|8000|v2|{HB}"].lb_policy == C.MAGLEV
    assert cds[f"outbound|8000|v2|{HB}"].maglev_lb_config.table_size.value == 65537
    assert cds[f"outbound|8000|v4|{HB}"].ring_hash_lb_config.minimum_ring_size.value == 2048
    # The subset keeps the top-level outlier detection it does not override.
    assert cds[f"outbound|8000|v1|{HB}"].outlier_detection.consecutive_5xx.value == 5


def test_istio_mutual_uses_sds_default_and_rootca(cds: dict[str, cluster_pb2.Cluster]) -> None:
    t = _tls(cds[f"outbound|8000|v1|{HB}"])
    assert t.sni == f"outbound_.8000_.v1_.{HB}"
    assert t.common_tls_context.tls_certificate_sds_secret_configs[0].name == "default"
    cv = t.common_tls_context.combined_validation_context
    assert cv.validation_context_sds_secret_config.name == "ROOTCA"
    sans = [m.matcher.exact for m in cv.default_validation_context.match_typed_subject_alt_names]
    assert sans == ["spiffe://cluster.local/ns/default/sa/httpbin"]
    assert list(t.common_tls_context.alpn_protocols) == ["http/1.1"]  # only what the h1 codec speaks
    assert list(_tls(cds[f"outbound|8443||{HB}"]).common_tls_context.alpn_protocols) == ["h2"]


def test_simple_and_mutual_tls(cds: dict[str, cluster_pb2.Cluster], cert_dir: Path) -> None:
    simple = _tls(cds["outbound|443||api.example.com"])
    assert simple.sni == "api.example.com"
    assert simple.common_tls_context.validation_context.trusted_ca.filename == f"{cert_dir}/ca.pem"
    assert not simple.common_tls_context.alpn_protocols  # TLS port: no HTTP ALPN
    mutual = _tls(cds["outbound|80||api.example.com"])
    assert mutual.common_tls_context.tls_certificates[0].certificate_chain.filename == f"{cert_dir}/cert.pem"
    cred = _tls(cds["outbound|80||lrr.example.com"])
    assert cred.common_tls_context.tls_certificate_sds_secret_configs[0].name == "kubernetes://lrr-cred"


def test_resolution_types(cds: dict[str, cluster_pb2.Cluster]) -> None:
    dns = cds["outbound|80||api.example.com"]
    assert dns.type == C.STRICT_DNS
    addr = dns.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (addr.address, addr.port_value) == ("api.example.com", 80)
    assert dns.lb_policy == C.LEAST_REQUEST
    assert cds["outbound|80||lrr.example.com"].type == C.LOGICAL_DNS
    none = cds["outbound|80||*.wild.example.com"]
    assert none.type == C.ORIGINAL_DST and none.lb_policy == C.CLUSTER_PROVIDED
    assert cds["outbound|5432||db.internal"].type == C.ORIGINAL_DST  # lb PASSTHROUGH


def test_disable_tls_and_default_lb() -> None:
    objs = [*bookinfo_registry(),dr("r", {"host": "ratings", "trafficPolicy": {"tls": {"mode": "DISABLE"}}})]
    c = clusters(sidecar(), context(objs))[f"outbound|9080||{fqdn('ratings')}"]
    assert not c.HasField("transport_socket")
    assert c.lb_policy == C.LEAST_REQUEST  # Istio's default


def test_subset_endpoints_and_ports(cert_dir: Path) -> None:
    ctx = context(bookinfo_registry() + feature_objects(str(cert_dir)))
    cla = {c.cluster_name: c for c in decode(xdstypes.ENDPOINT, sidecar(), ctx)}
    v2 = cla[f"outbound|8000|v2|{HB}"]
    eps = [e.endpoint.address.socket_address for g in v2.endpoints for e in g.lb_endpoints]
    assert [(a.address, a.port_value) for a in eps] == [("127.0.3.2", 18000)]
    allv = cla[f"outbound|8000||{HB}"]
    assert sum(len(g.lb_endpoints) for g in allv.endpoints) == 2


def test_locality_priorities(cert_dir: Path) -> None:
    ctx = context(bookinfo_registry() + feature_objects(str(cert_dir)))
    cla = decode(xdstypes.ENDPOINT, sidecar(), ctx, [f"outbound|8000||{HB}"])[0]
    prio = {g.locality.zone: g.priority for g in cla.endpoints}
    assert prio == {"zone1": 0, "zone2": 1}
    ctx2 = context(bookinfo_registry() + feature_objects(str(cert_dir)), MeshSettings(locality_lb_enabled=False))
    cla2 = decode(xdstypes.ENDPOINT, sidecar(), ctx2, [f"outbound|8000||{HB}"])[0]
    assert {g.priority for g in cla2.endpoints} == {0}


def test_eds_for_unknown_cluster_is_empty() -> None:
    ctx = context(bookinfo_registry())
    res = decode(xdstypes.ENDPOINT, sidecar(), ctx, ["outbound|9080|v9|nosuch.default.svc.cluster.local"])
    assert len(res) == 1 and not res[0].endpoints


def _locality_mesh(setting: dict) -> list:
    from _translate_helpers import service_entry, workload_entry

    objs = [service_entry("lb", selector={"app": "lb"})]
    for i, loc in enumerate(["region1/zone1/sub1", "region1/zone2/sub1", "region2/z/s", "region3/z/s"]):
        objs.append(workload_entry(f"lb{i}", f"10.0.0.{i + 1}", {"app": "lb"}, locality=loc))
    objs.append(dr("lb", {"host": "lb", "trafficPolicy": {"loadBalancer": {"localityLbSetting": setting},
                                                          "outlierDetection": {"consecutive5xxErrors": 1}}}))
    ctx = context(objs)
    return list(decode(xdstypes.ENDPOINT, sidecar(), ctx, [f"outbound|9080||{fqdn('lb')}"])[0].endpoints)


def test_locality_failover_and_failover_priority() -> None:
    prio = {g.locality.region + "/" + g.locality.zone: g.priority for g in _locality_mesh(
        {"failover": [{"from": "region1", "to": "region3"}]})}
    assert prio == {"region1/zone1": 0, "region1/zone2": 1, "region3/z": 2, "region2/z": 3}
    prio = {g.locality.region + "/" + g.locality.zone: g.priority for g in _locality_mesh(
        {"failoverPriority": ["topology.kubernetes.io/region", "topology.kubernetes.io/zone"]})}
    assert prio == {"region1/zone1": 0, "region1/zone2": 1, "region2/z": 2, "region3/z": 2}


def test_locality_distribute_weights() -> None:
    groups = _locality_mesh({"distribute": [{"from": "region1/zone1/*",
                                             "to": {"region1/zone1/*": 80, "region2/*": 20}}]})
    assert {g.locality.region: g.load_balancing_weight.value for g in groups} == {"region1": 80, "region2": 20}
    assert {g.priority for g in groups} == {0}


_DURATIONS = dr("ratings", {"host": "ratings", "trafficPolicy": {
    "connectionPool": {"tcp": {"connectTimeout": ".25s",
                               "tcpKeepalive": {"time": "1m30s", "interval": "1.9s", "probes": 3}},
                       "http": {"idleTimeout": "1.5s"}},
    "outlierDetection": {"consecutive5xxErrors": 2, "interval": ".5s", "baseEjectionTime": "1m0.25s"},
    "loadBalancer": {"consistentHash": {"httpCookie": {"name": "s", "ttl": ".5s"}}}}})
RATINGS = f"outbound|9080||{fqdn('ratings')}"


def test_durations_reach_envoy_exactly() -> None:
    """Every DestinationRule duration in Go's forms (``.5s`` too, once dropped) becomes the same Envoy Duration."""
    ctx = context([*bookinfo_registry(), _DURATIONS])
    c = clusters(sidecar(), ctx)[RATINGS]
    assert c.outlier_detection.interval.ToNanoseconds() == 500_000_000
    assert c.outlier_detection.base_ejection_time.ToNanoseconds() == 60_250_000_000
    assert c.connect_timeout.ToNanoseconds() == 250_000_000
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(opts)
    assert opts.common_http_protocol_options.idle_timeout.ToNanoseconds() == 1_500_000_000
    ka = c.upstream_connection_options.tcp_keepalive  # whole seconds in Envoy
    assert (ka.keepalive_time.value, ka.keepalive_interval.value, ka.keepalive_probes.value) == (90, 1, 3)
    (vh,) = [vh for rc in routes(sidecar(), ctx) for vh in rc.virtual_hosts if vh.name == f"{fqdn('ratings')}:9080"]
    cookie = vh.routes[0].route.hash_policy[0].cookie
    assert (cookie.name, cookie.ttl.ToNanoseconds()) == ("s", 500_000_000)


@pytest.mark.envoy
def test_sub_second_durations_validate(tmp_path: Path) -> None:
    envoy_validate(sidecar(), context([*bookinfo_registry(), _DURATIONS]), tmp_path)


def test_locality_setting_disabled_and_failover_without_target() -> None:
    assert {g.priority for g in _locality_mesh({"enabled": False})} == {0}
    prio = {g.locality.region + "/" + g.locality.zone: g.priority for g in _locality_mesh(
        {"failover": [{"from": "region1"}]})}  # names no target region: every other region is last
    assert prio == {"region1/zone1": 0, "region1/zone2": 1, "region2/z": 2, "region3/z": 2}


def test_istio_locality_needs_outlier_detection() -> None:
    from _translate_helpers import service_entry, workload_entry

    objs = [service_entry("lb", selector={"app": "lb"}), dr("lb", {"host": "lb"}),
            workload_entry("a", "10.0.0.1", {"app": "lb"}, locality="region1/zone1/sub1"),
            workload_entry("b", "10.0.0.2", {"app": "lb"}, locality="region2/z/s")]
    ctx = context(objs, MeshSettings(locality_lb_requires_outlier_detection=True))
    cla = decode(xdstypes.ENDPOINT, sidecar(), ctx, [f"outbound|9080||{fqdn('lb')}"])[0]
    assert {g.priority for g in cla.endpoints} == {0}


@pytest.mark.parametrize(("protocol", "h2"), [("HTTP", True), ("GRPC-WEB", False)])
def test_h2_upgrade_sets_codec_and_alpn_alike(protocol: str, h2: bool) -> None:
    """``h2UpgradePolicy: UPGRADE`` upgrades plain HTTP only; TLS offers exactly the codec's protocol."""
    from _translate_helpers import service_entry

    objs = [service_entry("up", ports=[{"number": 80, "name": "web", "protocol": protocol}],
                          endpoints=[{"address": "127.0.6.1"}]),
            dr("up", {"host": "up", "trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}},
                                                      "tls": {"mode": "ISTIO_MUTUAL"}}})]
    c = clusters(sidecar(), context(objs))[f"outbound|80||{fqdn('up')}"]
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Unpack(opts)
    assert opts.explicit_http_config.HasField("http2_protocol_options") is h2
    assert list(_tls(c).common_tls_context.alpn_protocols) == (["h2"] if h2 else ["http/1.1"])
