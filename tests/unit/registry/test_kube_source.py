"""A member cluster's registry state, fed by hand as the Kubernetes adapter feeds it (no client, no network).

What is decided here and not in the watch loop: nothing is shown before every kind was listed once, what a
change reports to the push pipeline (``take_changes``: hosts, or None when services may differ), and the status
(connected, synced, the first error) with its callbacks.
"""

from __future__ import annotations

from meshplane.model.proxy import Locality
from meshplane.registry import KubeRegistry, SourceStatus
from meshplane.registry.aggregate import IncrementalRegistry
from meshplane.registry.kube_convert import (
    ENDPOINT_SLICES,
    KINDS,
    NAMESPACES,
    NODES,
    PODS,
    SERVICES,
    ClusterDefaults,
)
from tests.integration.test_multicluster_support import endpoint_slice, namespace, service, slice_endpoint

HOST = "reviews.default.svc.cluster.local"


def _registry() -> tuple[KubeRegistry, list[str], list[SourceStatus]]:
    changes: list[str] = []
    statuses: list[SourceStatus] = []
    reg = KubeRegistry(ClusterDefaults("east", "net-east", Locality("r", "z")), on_change=changes.append,
                       on_status=statuses.append)
    return reg, changes, statuses


def _sync(reg: KubeRegistry) -> None:
    objects = {NAMESPACES: [namespace("default")], NODES: [], PODS: [],
               SERVICES: [service("default", "reviews")],
               ENDPOINT_SLICES: [endpoint_slice("default", "reviews-1", "reviews", [slice_endpoint("10.0.0.1")])]}
    for kind in KINDS:
        reg.listed(kind, objects[kind])


def test_nothing_is_shown_until_every_kind_was_listed() -> None:
    reg, changes, statuses = _registry()
    assert isinstance(reg, IncrementalRegistry) and reg.source == "Kubernetes" and reg.cluster_id == "east"
    reg.listed(SERVICES, [service("default", "reviews")])
    assert reg.services() == () and reg.endpoints() == {} and changes == []
    assert statuses == [SourceStatus(connected=True)]
    _sync(reg)
    assert [s.hostname for s in reg.services()] == [HOST]
    assert [e.address for e in reg.endpoints()[HOST]] == ["10.0.0.1"]
    assert statuses[-1] == SourceStatus(connected=True, synced=True)
    assert "cluster east synced" in changes


def test_take_changes_reports_hosts_or_none_when_services_may_differ() -> None:
    reg, changes, _ = _registry()
    _sync(reg)
    assert reg.take_changes() is None  # first sync: services are new
    assert reg.take_changes() == frozenset()
    reg.event(ENDPOINT_SLICES, "MODIFIED", endpoint_slice("default", "reviews-1", "reviews",
                                                          [slice_endpoint("10.0.0.2")]))
    assert changes[-1] == f"east/{ENDPOINT_SLICES}"
    assert reg.take_changes() == frozenset({HOST}) and reg.take_changes() == frozenset()
    reg.event(SERVICES, "ADDED", service("default", "ratings", cluster_ip="10.96.0.11"))
    assert reg.take_changes() is None


def test_a_failure_is_reported_until_that_kind_is_reached_again_and_endpoints_stay() -> None:
    reg, _, statuses = _registry()
    _sync(reg)
    reg.failed(PODS, "timed out waiting for the API server")
    assert statuses[-1] == SourceStatus(connected=False, synced=True, error="timed out waiting for the API server")
    assert [e.address for e in reg.endpoints()[HOST]] == ["10.0.0.1"]  # the last known endpoints are kept
    count = len(statuses)
    reg.failed(PODS, "timed out waiting for the API server")
    assert len(statuses) == count  # the same error again: no new status
    reg.reached(PODS)
    assert statuses[-1] == SourceStatus(connected=True, synced=True)
