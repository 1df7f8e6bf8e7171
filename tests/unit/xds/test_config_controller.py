"""The config controller's snapshots: sorted by (namespace, name) whatever the order of events, an object that did
not change keeps its identity, and an update of an existing object is patched in at its position (no re-sort).
Events are applied directly (the store watch that feeds them is covered by the server tests)."""

from __future__ import annotations

from typing import Any

from meshplane.model.spec import ConfigObject
from meshplane.store import MemoryStore
from meshplane.store.types import EventType, GroupResource, WatchEvent
from meshplane.xds.controller import ConfigController

WE = GroupResource("networking.istio.io", "workloadentries")


def _we(name: str, address: str, ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": ns}, "spec": {"address": address}}


def _names(objs: tuple[ConfigObject[Any], ...]) -> list[tuple[str, str]]:
    return [(o.meta.namespace, o.meta.name) for o in objs]


def _controller() -> ConfigController:
    return ConfigController(MemoryStore(), lambda _r: None)


def _event(kind: EventType, obj: dict[str, Any], rv: int) -> WatchEvent:
    return WatchEvent(type=kind, gr=WE, obj=obj, rv=rv)


def test_updates_are_patched_in_place_and_adds_and_deletes_resort() -> None:
    ctl = _controller()
    for i, name in enumerate(["c", "a", "b", "d"]):
        ctl.apply(_event(EventType.ADDED, _we(name, f"10.0.0.{i}"), i + 1))
    first = ctl.snapshot().of(WE)
    assert _names(first) == [("default", n) for n in "abcd"]

    new_b, new_d = _we("b", "10.9.9.9"), _we("d", "10.8.8.8")
    ctl.apply(_event(EventType.MODIFIED, new_b, 10))
    ctl.apply(_event(EventType.MODIFIED, new_d, 11))
    ctl.apply(_event(EventType.MODIFIED, _we("b", "10.9.9.10"), 12))  # the later update of b wins
    second = ctl.snapshot().of(WE)
    assert _names(second) == _names(first)
    assert second[0] is first[0] and second[2] is first[2]  # unchanged objects keep their identity
    assert second[1].spec.address == "10.9.9.10" and second[3].raw is new_d
    assert ctl.snapshot().of(WE) is second  # nothing changed: the same tuple

    ctl.apply(_event(EventType.MODIFIED, _we("a", "10.1.1.1"), 13))
    ctl.apply(_event(EventType.DELETED, _we("a", "10.1.1.1"), 14))  # a patch then a delete of the same key
    ctl.apply(_event(EventType.ADDED, _we("aa", "10.2.2.2", ns="a-ns"), 15))
    third = ctl.snapshot().of(WE)
    assert _names(third) == [("a-ns", "aa"), ("default", "b"), ("default", "c"), ("default", "d")]
    assert third[1] is second[1] and third[3] is second[3]

    ctl.apply(_event(EventType.MODIFIED, _we("c", "10.3.3.3"), 16))  # positions rebuilt after the re-sort
    fourth = ctl.snapshot().of(WE)
    assert [o.spec.address for o in fourth] == ["10.2.2.2", "10.9.9.10", "10.3.3.3", "10.8.8.8"]
