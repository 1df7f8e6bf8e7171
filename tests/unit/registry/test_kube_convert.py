"""Conversion of Kubernetes objects into mesh Services and Endpoints, and the incremental per-cluster index."""

from __future__ import annotations

from typing import Any

from meshplane.model.proxy import Locality
from meshplane.model.service import Protocol
from meshplane.model.spec import MemberClusterDiscoverySelectors, decode
from meshplane.registry.kube_convert import (
    ClusterDefaults,
    ClusterIndex,
    PodInfo,
    convert_service,
    endpoint_healthy,
    endpoints_from_slice,
    namespace_selected,
    node_info,
    selector_matches,
)
from tests.integration.test_multicluster_support import (
    endpoint_slice,
    namespace,
    node,
    pod,
    service,
    slice_endpoint,
)

HOST = "reviews.default.svc.cluster.local"
DEFAULTS = ClusterDefaults("east", "net-east", Locality("us-east", "us-east-1"))


def test_service_ports_protocols_and_cluster_ip() -> None:
    svc = service("default", "reviews", [("http-web", 9080), ("grpc", 7070), ("tcp-db", 5432), ("metrics", 15014)],
                  app_protocol={"metrics": "http", "tcp-db": "kubernetes.io/h2c"})
    out = convert_service(svc)
    assert out is not None
    assert out.hostname == HOST and out.namespace == "default" and out.addresses == ("10.96.0.10",)
    protocols = {p.name: p.protocol for p in out.ports}
    assert protocols == {"http-web": Protocol.HTTP, "grpc": Protocol.GRPC, "tcp-db": Protocol.HTTP2,
                         "metrics": Protocol.HTTP}
    assert out.port(9080) is not None and out.port(9080).target_port == 9080  # type: ignore[union-attr]


def test_external_name_headless_and_udp() -> None:
    ext = service("default", "ext")
    ext["spec"] = {"type": "ExternalName", "externalName": "example.com"}
    assert convert_service(ext) is None
    headless = service("default", "db", [("tcp", 5432), ("dns", 53)], cluster_ip="None")
    headless["spec"]["ports"][1]["protocol"] = "UDP"
    out = convert_service(headless)
    assert out is not None and out.addresses == () and [p.number for p in out.ports] == [5432]


def test_node_locality_and_network_labels() -> None:
    info = node_info(node("n1", "eu-west", "eu-west-2", subzone="rack-7", network="net-eu"))
    assert info.locality == Locality("eu-west", "eu-west-2", "rack-7") and info.network == "net-eu"
    assert node_info({"metadata": {"name": "bare"}}).locality == Locality()


def test_endpoint_health_from_conditions() -> None:
    assert endpoint_healthy({"ready": True, "serving": True, "terminating": False})
    assert endpoint_healthy(None)  # unset ready means ready
    assert not endpoint_healthy({"ready": False})
    assert not endpoint_healthy({"ready": False, "serving": True, "terminating": True})


def test_endpoints_carry_pod_node_and_cluster_facts() -> None:
    es = endpoint_slice("default", "reviews-1", "reviews", [
        slice_endpoint("10.1.0.1", "r1", node_name="n1"),
        slice_endpoint("10.1.0.2", "r2", ready=False),  # node from the pod
        {"addresses": ["10.1.0.3"], "zone": "us-east-1c", "conditions": {}},  # no pod, no node
        {"addresses": ["10.1.0.4"], "conditions": {}},  # nothing at all: the cluster's defaults
    ])
    pods = {("default", "r1"): PodInfo({"app": "reviews", "version": "v1"}, "bookinfo-reviews", "n1"),
            ("default", "r2"): PodInfo({"app": "reviews", "topology.istio.io/network": "net-pod"}, "sa2", "n2")}
    nodes = {"n1": node_info(node("n1", "us-east", "us-east-1a", "s1")),
             "n2": node_info(node("n2", "us-east", "us-east-1b", network="net-node"))}
    eps = {e.address: e for e in endpoints_from_slice(es, defaults=DEFAULTS, pods=pods, nodes=nodes)}
    e1, e2, e3, e4 = (eps[f"10.1.0.{i}"] for i in range(1, 5))
    assert e1.cluster_id == "east" and e1.labels["version"] == "v1" and e1.service_account == "bookinfo-reviews"
    assert e1.locality == Locality("us-east", "us-east-1a", "s1") and e1.network == "net-east" and e1.healthy
    assert e1.ports == {"http": 9080} and e1.workload_name == "r1" and e1.namespace == "default"
    assert e2.locality.zone == "us-east-1b" and e2.network == "net-pod" and not e2.healthy
    assert e3.locality == Locality("", "us-east-1c") and e3.labels == {}
    assert e4.locality == DEFAULTS.locality and e4.network == "net-east"


def _sel(raw: dict[str, Any]) -> MemberClusterDiscoverySelectors:
    """A discovery selector as the controller hands it over: decoded from the MemberCluster's JSON."""
    return decode(MemberClusterDiscoverySelectors, raw, "spec.discoverySelectors[0]")


def test_discovery_selectors() -> None:
    sel = _sel({"matchLabels": {"mesh": "on"},
                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["x"]}]})
    assert selector_matches(sel, {"mesh": "on", "env": "prod"})
    assert not selector_matches(sel, {"mesh": "on", "env": "x"})
    assert selector_matches(_sel({"matchExpressions": [{"key": "a", "operator": "Exists"}]}), {"a": ""})
    assert not selector_matches(_sel({"matchExpressions": [{"key": "a"}]}), {"a": ""})
    assert namespace_selected([], {}) and not namespace_selected([sel], {})
    assert namespace_selected([_sel({"matchLabels": {"x": "1"}}), sel], {"mesh": "on"})


def _index(selectors: list[dict[str, Any]] | None = None) -> ClusterIndex:
    idx = ClusterIndex(DEFAULTS, [_sel(s) for s in selectors or []])
    idx.replace("namespaces", [namespace("default"), namespace("other", {"mesh": "on"})])
    idx.replace("nodes", [node("n1", "us-east", "us-east-1a")])
    idx.replace("pods", [pod("default", "r1", "n1", {"app": "reviews"}), pod("other", "o1", "n1")])
    idx.replace("services", [service("default", "reviews"), service("other", "ratings")])
    idx.replace("endpointslices", [
        endpoint_slice("default", "reviews-1", "reviews", [slice_endpoint("10.1.0.1", "r1")]),
        endpoint_slice("other", "ratings-1", "ratings", [slice_endpoint("10.2.0.1", "o1", ns="other")]),
    ])
    return idx


def test_index_changes_touch_only_the_affected_host() -> None:
    idx = _index()
    assert {s.hostname for s in idx.services()} == {HOST, "ratings.other.svc.cluster.local"}
    assert [e.locality.zone for e in idx.endpoints()[HOST]] == ["us-east-1a"]
    # One slice changes: one host, no service change (an EDS-only push).
    change = idx.apply("endpointslices", "MODIFIED", endpoint_slice(
        "default", "reviews-1", "reviews", [slice_endpoint("10.1.0.1", "r1"), slice_endpoint("10.1.0.9")]))
    assert change.hosts == {HOST} and not change.services
    assert len(idx.endpoints()[HOST]) == 2
    # A pod update that changes nothing an endpoint carries is not a change.
    p = pod("default", "r1", "n1", {"app": "reviews"})
    p["status"] = {"phase": "Running"}
    assert not idx.apply("pods", "MODIFIED", p)
    # A pod relabel changes its hosts' endpoints.
    assert idx.apply("pods", "MODIFIED", pod("default", "r1", "n1", {"app": "reviews", "v": "2"})).hosts == {HOST}
    # A node's zone moves every endpoint on it.
    change = idx.apply("nodes", "MODIFIED", node("n1", "us-east", "us-east-1z"))
    assert change.hosts == {HOST, "ratings.other.svc.cluster.local"}
    zones = {e.address: e.locality.zone for e in idx.endpoints()[HOST]}
    assert zones == {"10.1.0.1": "us-east-1z", "10.1.0.9": "us-east-1"}  # no pod, no node: the cluster's zone
    # Deleting the slice withdraws the host's endpoints; deleting the service withdraws the service.
    assert idx.apply("endpointslices", "DELETED", endpoint_slice("default", "reviews-1", "reviews", [])).hosts == {
        HOST}
    assert HOST not in idx.endpoints()
    assert idx.apply("services", "DELETED", service("default", "reviews")).services


def test_index_discovery_selectors_follow_namespace_labels() -> None:
    idx = _index([{"matchLabels": {"mesh": "on"}}])
    assert [s.hostname for s in idx.services()] == ["ratings.other.svc.cluster.local"]
    assert HOST not in idx.endpoints()
    change = idx.apply("namespaces", "MODIFIED", namespace("default", {"mesh": "on"}))
    assert change.services and HOST in change.hosts and len(idx.endpoints()[HOST]) == 1
    assert idx.apply("namespaces", "MODIFIED", namespace("default")).services
    assert HOST not in idx.endpoints()


def test_relist_replaces_and_reports_only_differences() -> None:
    idx = _index()
    same = [endpoint_slice("default", "reviews-1", "reviews", [slice_endpoint("10.1.0.1", "r1")]),
            endpoint_slice("other", "ratings-1", "ratings", [slice_endpoint("10.2.0.1", "o1", ns="other")])]
    assert not idx.replace("endpointslices", same)
    change = idx.replace("endpointslices", same[1:])
    assert change.hosts == {HOST} and HOST not in idx.endpoints()
