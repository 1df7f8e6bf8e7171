"""The ServiceEntry source indexes selection and updates incrementally: counted work (ServiceEntries recomputed,
hosts reported), never time, and always the same result as a full recompute.

Snapshots are derived from each other the way the config controller derives them: a collection that did not
change keeps its tuple, an object that did not change keeps its identity."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "translate"))

from _translate_helpers import fqdn, service_entry, snapshot, workload_entry

from meshplane.model.config import ConfigSnapshot
from meshplane.model.service import ShardKey
from meshplane.model.spec import decode_resource
from meshplane.registry import ServiceEntrySource, aggregate
from meshplane.registry.aggregate import update_shard
from meshplane.registry.serviceentry import WORKLOAD_ENTRIES


def _mesh(services: int = 50, endpoints: int = 4) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for i in range(services):
        objs.append(service_entry(f"s{i}", selector={"app": f"s{i}"}))
        for j in range(endpoints):
            objs.append(workload_entry(f"s{i}-{j}", f"10.0.{i}.{j + 1}", {"app": f"s{i}", "v": f"v{j % 2}"}))
    return objs


def _with_wes(snap: ConfigSnapshot, wes: Iterable[dict[str, Any]]) -> ConfigSnapshot:
    return ConfigSnapshot(snap.version + 1, {**snap.objects, WORKLOAD_ENTRIES: tuple(
        decode_resource(WORKLOAD_ENTRIES, w) if isinstance(w, dict) else w for w in wes)})


def _replace(snap: ConfigSnapshot, name: str, **spec: Any) -> ConfigSnapshot:
    return _with_wes(snap, ({**o.raw, "spec": {**o.raw["spec"], **spec}} if o.meta.name == name else o
                            for o in snap.of(WORKLOAD_ENTRIES)))


def _same_as_full(src: ServiceEntrySource, snap: ConfigSnapshot) -> None:
    full = ServiceEntrySource(snap, "c1")
    assert {h: tuple(e) for h, e in src.endpoints().items()} == {h: tuple(e) for h, e in full.endpoints().items()}
    assert src.services() == full.services()


def test_full_build_selects_by_index_like_the_label_scan() -> None:
    objs = [service_entry("a", selector={"app": "a", "v": "v1"}), service_entry("all", selector={}),
            workload_entry("a1", "10.0.0.1", {"app": "a", "v": "v1"}),
            workload_entry("a2", "10.0.0.2", {"app": "a", "v": "v2"}),
            workload_entry("other-ns", "10.0.0.3", {"app": "a", "v": "v1"}, ns="other")]
    src = ServiceEntrySource(snapshot(objs), "c1")
    assert [e.address for e in src.endpoints_of(fqdn("a"))] == ["10.0.0.1"]
    assert [e.address for e in src.endpoints_of(fqdn("all"))] == ["10.0.0.1", "10.0.0.2"]  # oldest first
    assert src.recomputed == 2


def test_one_endpoint_change_recomputes_only_the_services_that_select_it() -> None:
    snap = snapshot(_mesh())
    src = ServiceEntrySource(snap, "c1")
    assert src.recomputed == 50
    changed = _replace(snap, "s7-2", address="10.9.9.9")
    hosts = src.update(changed)
    assert hosts == {fqdn("s7")}
    assert src.recomputed == 1
    _same_as_full(src, changed)


def test_relabelled_entry_moves_between_services_old_and_new_labels_both_count() -> None:
    snap = snapshot(_mesh())
    src = ServiceEntrySource(snap, "c1")
    moved = _replace(snap, "s3-0", labels={"app": "s4", "v": "v0"})
    assert src.update(moved) == {fqdn("s3"), fqdn("s4")}
    assert src.recomputed == 2
    _same_as_full(src, moved)
    removed = _with_wes(moved, (o for o in moved.of(WORKLOAD_ENTRIES) if o.meta.name != "s4-1"))
    assert src.update(removed) == {fqdn("s4")}
    _same_as_full(src, removed)
    new = snapshot([workload_entry("s9-new", "10.1.1.1", {"app": "s9"})]).of(WORKLOAD_ENTRIES)
    added = _with_wes(removed, (*removed.of(WORKLOAD_ENTRIES), *new))
    assert src.update(added) == {fqdn("s9")}
    _same_as_full(src, added)


def test_unchanged_entries_and_service_entry_changes() -> None:
    objs = _mesh(5, 2)
    snap = snapshot(objs)
    src = ServiceEntrySource(snap, "c1")
    assert src.update(snap) == frozenset() and src.recomputed == 0
    assert src.update(snapshot([*objs, service_entry("new", selector={"app": "s1"})])) is None  # full recompute
    assert src.recomputed == 6


def test_update_shard_matches_a_full_aggregate_and_keeps_services() -> None:
    snap = snapshot(_mesh(20, 3))
    src = ServiceEntrySource(snap, "c1")
    before = aggregate([src])
    changed = _replace(snap, "s2-1", address="10.8.8.8")
    hosts = src.update(changed)
    assert hosts == {fqdn("s2")}
    after = update_shard(before, ShardKey("c1", "ServiceEntry"), {h: src.endpoints_of(h) for h in hosts})
    full = aggregate([ServiceEntrySource(changed, "c1")])
    assert dict(after.endpoints) == dict(full.endpoints)
    assert after.services is before.services
    assert after.version != before.version
    assert after.endpoints[fqdn("s3")] is before.endpoints[fqdn("s3")]  # untouched hosts are shared


def test_same_length_updates_with_shifted_positions_match_a_full_recompute() -> None:
    """One entry deleted and another added in the same flush keeps the collection's length while every entry
    after them moves: the position-by-position comparison must still give the full recompute's result."""
    snap = snapshot(_mesh(10, 3))
    src = ServiceEntrySource(snap, "c1")
    wes = list(snap.of(WORKLOAD_ENTRIES))
    removed = wes.pop(2)
    moved = [*wes[:5], workload_entry("s0-new", "10.9.9.9", {"app": "s0", "v": "v0"}), *wes[5:]]
    assert len(moved) == len(snap.of(WORKLOAD_ENTRIES))
    nxt = _with_wes(snap, moved)
    hosts = src.update(nxt)
    assert hosts is not None and fqdn("s0") in hosts
    assert removed.raw["spec"]["address"] not in {e.address for e in src.endpoints_of(fqdn("s0"))}
    _same_as_full(src, nxt)
    # and a plain in-place update right after: only that service reported
    upd = _replace(nxt, "s7-1", address="10.7.7.7")
    assert src.update(upd) == frozenset({fqdn("s7")})
    _same_as_full(src, upd)
