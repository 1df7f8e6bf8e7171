"""The registry aggregator tells the push pipeline what changed: the new snapshot and the hosts of an
endpoint-only change, or None when a new push context is needed. Counted work (merges, diffs), never time.

Config snapshots are derived from each other as the config controller derives them (an unchanged collection
keeps its tuple, an unchanged object its identity)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "translate"))

from _translate_helpers import fqdn, service_entry, snapshot, workload_entry

from meshplane.model.config import ConfigSnapshot
from meshplane.model.service import Endpoint, Service, ServicePort
from meshplane.model.spec import decode_resource
from meshplane.registry import aggregator as aggregator_mod
from meshplane.registry.aggregator import RegistryAggregator
from meshplane.registry.serviceentry import WORKLOAD_ENTRIES


def _move(snap: ConfigSnapshot, name: str, address: str) -> ConfigSnapshot:
    wes = tuple(decode_resource(WORKLOAD_ENTRIES, {**o.raw, "spec": {**o.raw["spec"], "address": address}})
                if o.meta.name == name else o for o in snap.of(WORKLOAD_ENTRIES))
    return ConfigSnapshot(snap.version + 1, {**snap.objects, WORKLOAD_ENTRIES: wes})


class _Remote:
    """A source that reports its changed hosts, like a member cluster."""

    def __init__(self) -> None:
        self.eps = {fqdn("r"): (Endpoint("10.2.0.1", cluster_id="remote"),)}
        self.pending: set[str] = set()
        self.services_changed = True

    @property
    def cluster_id(self) -> str:
        return "remote"

    @property
    def source(self) -> str:
        return "Fake"

    def services(self) -> tuple[Service, ...]:
        return (Service(fqdn("r"), "default", (ServicePort(9080, "http", "HTTP"),)),)

    def endpoints(self) -> dict[str, Any]:
        return dict(self.eps)

    def take_changes(self) -> frozenset[str] | None:
        out = None if self.services_changed else frozenset(self.pending)
        self.services_changed = False
        self.pending.clear()
        return out


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"aggregate": 0, "diff": 0}
    real_aggregate, real_diff = aggregator_mod.aggregate, aggregator_mod.diff_endpoints

    def aggregate(sources: Any) -> Any:
        counts["aggregate"] += 1
        return real_aggregate(sources)

    def diff(old: Any, new: Any) -> Any:
        counts["diff"] += 1
        return real_diff(old, new)

    monkeypatch.setattr(aggregator_mod, "aggregate", aggregate)
    monkeypatch.setattr(aggregator_mod, "diff_endpoints", diff)
    return counts


def test_an_endpoint_change_names_its_host_without_a_merge(counted: dict[str, int]) -> None:
    snap = snapshot([service_entry("a", selector={"app": "a"}), workload_entry("a-0", "10.0.0.1", {"app": "a"}),
                     service_entry("b", selector={"app": "b"}), workload_entry("b-0", "10.0.0.2", {"app": "b"})])
    agg = RegistryAggregator("c1")
    first = agg.update(snap)
    assert first.hosts is None and counted["aggregate"] == 1  # services are new: a new push context
    assert agg.snapshot is first.snapshot
    moved = _move(snap, "a-0", "10.0.0.9")
    update = agg.update(moved)
    assert update.hosts == {fqdn("a")} and counted == {"aggregate": 1, "diff": 0}
    assert [e.address for e in update.snapshot.endpoints_of(fqdn("a"))] == ["10.0.0.9"]
    assert update.snapshot.endpoints_of(fqdn("b")) == first.snapshot.endpoints_of(fqdn("b"))
    assert agg.incremental_updates == 1
    assert agg.update(moved).hosts == frozenset()  # nothing changed: nothing to push


def test_full_asks_for_nothing_to_be_compared(counted: dict[str, int]) -> None:
    snap = snapshot([service_entry("a", selector={"app": "a"}), workload_entry("a-0", "10.0.0.1", {"app": "a"})])
    agg = RegistryAggregator("c1")
    agg.update(snap)
    agg.add(_Remote())  # a new source: merged whole, then diffed, unless the caller builds anew anyway
    update = agg.update(snap, full=True)
    assert update.hosts is None and counted == {"aggregate": 2, "diff": 0}
    assert update.snapshot.service(fqdn("r")) is not None


def test_a_source_that_reports_its_hosts_is_applied_to_the_previous_snapshot(counted: dict[str, int]) -> None:
    snap = snapshot([service_entry("a", selector={"app": "a"}), workload_entry("a-0", "10.0.0.1", {"app": "a"})])
    remote = _Remote()
    agg = RegistryAggregator("c1")
    agg.add(remote)
    agg.update(snap)
    remote.eps[fqdn("r")] = (Endpoint("10.2.9.9", cluster_id="remote"),)
    remote.pending.add(fqdn("r"))
    update = agg.update(snap)
    assert update.hosts == {fqdn("r")} and counted == {"aggregate": 1, "diff": 0}
    assert [e.address for e in update.snapshot.endpoints_of(fqdn("r"))] == ["10.2.9.9"]
    agg.remove(remote)
    update = agg.update(snap)
    assert update.hosts is None and update.snapshot.service(fqdn("r")) is None  # services changed


def test_an_east_west_gateway_moving_needs_a_new_push_context() -> None:
    snap = snapshot([service_entry("ewgw", selector={"istio": "eastwestgateway"}),
                     workload_entry("ewgw-0", "10.1.0.1", {"istio": "eastwestgateway"}),
                     service_entry("plain", selector={"app": "plain"}),
                     workload_entry("plain-0", "10.0.0.1", {"app": "plain"})])
    agg = RegistryAggregator("c1")
    agg.update(snap)
    snap = _move(snap, "plain-0", "10.0.0.2")
    assert agg.update(snap).hosts == {fqdn("plain")}
    assert agg.update(_move(snap, "ewgw-0", "10.1.0.2")).hosts is None
