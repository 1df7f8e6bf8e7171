"""Failover without outlierDetection (meshplane's answer to istio/istio#48084, #39477): with locality load balancing
on, EDS clusters get a default passive health check, retries move on to the next priority, and endpoints are
prioritised by locality or by ``failoverPriority`` labels (cluster, network) with no outlierDetection anywhere.
The end-to-end counterpart with real Envoys is tests/e2e/test_locality_runtime.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import (
    clusters,
    context,
    envoy_validate,
    fqdn,
    routes,
    service_entry,
    sidecar,
    workload_entry,
)
from envoy.config.endpoint.v3 import endpoint_pb2

from meshplane.translate import MeshSettings
from meshplane.translate.endpoints import build_load_assignment

RATINGS = fqdn("ratings")
CLUSTER = f"outbound|9080||{RATINGS}"

# (name, address, locality, member cluster, network): the proxy (sidecar()) is in region1/zone1/sub1.
PLACES = (
    ("ratings-a", "127.0.2.1", "region1/zone1/sub1", "cluster-1", "network-1"),
    ("ratings-b", "127.0.2.2", "region1/zone2", "cluster-2", "network-1"),
    ("ratings-c", "127.0.2.3", "region2/zone3", "cluster-3", "network-2"),
)


def _mesh_objects(policy: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    objs = [service_entry("ratings", selector={"app": "ratings"}), service_entry("productpage",
                                                                                selector={"app": "productpage"})]
    for name, ip, loc, cluster, network in PLACES:
        we = workload_entry(name, ip, {"app": "ratings", "topology.istio.io/cluster": cluster}, locality=loc)
        we["spec"]["network"] = network
        objs.append(we)
    objs.append(workload_entry("productpage-v1", "127.0.1.1", {"app": "productpage", "version": "v1"},
                               locality="region1/zone1/sub1"))
    if policy is not None:
        objs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                     "metadata": {"name": "ratings", "namespace": "default"},
                     "spec": {"host": RATINGS, "trafficPolicy": policy}})
    return objs


def _priorities(policy: dict[str, Any] | None = None, mesh: MeshSettings | None = None) -> dict[str, int]:
    proxy = sidecar(CLUSTER_ID="cluster-1", NETWORK="network-1")
    cla = build_load_assignment(CLUSTER, proxy, context(_mesh_objects(policy), mesh))
    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
    return {lb.endpoint.address.socket_address.address: lle.priority for lle in cla.endpoints
            for lb in lle.lb_endpoints}


def test_locality_priorities_without_outlier_detection() -> None:
    assert _priorities() == {"127.0.2.1": 0, "127.0.2.2": 1, "127.0.2.3": 2}


def test_locality_off_mesh_wide_puts_everything_in_one_priority() -> None:
    assert set(_priorities(mesh=MeshSettings(locality_lb_enabled=False)).values()) == {0}


def test_failover_priority_on_network_and_cluster_labels() -> None:
    def prio(keys: list[str]) -> dict[str, int]:
        return _priorities({"loadBalancer": {"localityLbSetting": {"failoverPriority": keys}}})

    assert prio(["topology.istio.io/network"]) == {"127.0.2.1": 0, "127.0.2.2": 0, "127.0.2.3": 1}
    assert prio(["topology.istio.io/network", "topology.istio.io/cluster"]) == {
        "127.0.2.1": 0, "127.0.2.2": 1, "127.0.2.3": 2}
    assert prio(["topology.istio.io/cluster=cluster-3"]) == {"127.0.2.1": 1, "127.0.2.2": 1, "127.0.2.3": 0}


def test_default_passive_health_when_the_rule_has_no_outlier_detection() -> None:
    od = clusters(sidecar(), context(_mesh_objects()))[CLUSTER].outlier_detection
    mesh = MeshSettings()
    assert od.consecutive_gateway_failure.value == mesh.failover_consecutive_gateway_errors
    assert od.enforcing_consecutive_gateway_failure.value == 100
    assert od.enforcing_consecutive_5xx.value == 0  # an application's own 500s eject nothing
    assert od.max_ejection_percent.value == 100  # a whole zone can leave
    assert od.base_ejection_time.ToMilliseconds() == int(mesh.failover_base_ejection_s * 1000)


def test_user_outlier_detection_wins_and_locality_off_adds_none() -> None:
    od = clusters(sidecar(), context(_mesh_objects({"outlierDetection": {"consecutive5xxErrors": 7}})))[
        CLUSTER].outlier_detection
    assert od.consecutive_5xx.value == 7 and od.enforcing_consecutive_gateway_failure.value == 0
    for mesh in (MeshSettings(locality_lb_enabled=False), MeshSettings(failover_consecutive_gateway_errors=0)):
        assert not clusters(sidecar(), context(_mesh_objects(), mesh))[CLUSTER].HasField("outlier_detection")


def _ratings_retry(mesh: MeshSettings | None = None) -> Any:
    for rc in routes(sidecar(), context(_mesh_objects(), mesh)):
        for vh in rc.virtual_hosts:
            if RATINGS in vh.domains:
                return vh.routes[0].route.retry_policy
    raise AssertionError("no route to ratings")


def test_default_retries_move_to_the_next_priority() -> None:
    pol = _ratings_retry()
    assert pol.num_retries.value == 2
    assert pol.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    assert "connect-failure" in pol.retry_on and list(pol.retriable_status_codes) == [503]
    assert not _ratings_retry(MeshSettings(locality_lb_enabled=False)).HasField("retry_priority")


@pytest.mark.envoy
def test_failover_defaults_validate_in_envoy(tmp_path: Path) -> None:
    envoy_validate(sidecar(), context(_mesh_objects()), tmp_path)
