"""The lanes controller against a real (in-memory) store: generated objects appear, follow changes, are not
rewritten when nothing changed, and disappear with their owner; what admission would refuse is never stored,
the group keeps what it had and says why in its status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lane_objects import group, lane, permissive_lanes

from meshplane.lanes import GENERATED_BY, LanesController
from meshplane.lanes import controller as lanes_controller
from meshplane.lanes.compile import DESTINATION_RULES, GENERATED_KINDS, LANE_GROUPS, LANES, VIRTUAL_SERVICES
from meshplane.store import MemoryStore


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.start()
    yield s
    await s.close()


def names(store: MemoryStore, gr: object) -> set[str]:
    items, _ = store.list(gr)  # type: ignore[arg-type]
    return {o["metadata"]["name"] for o in items}


async def until(check: object, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never happened")


def reconciled(store: MemoryStore, name: str = "mock") -> dict[str, Any] | None:
    """The group's Reconciled condition (status and reason), None before the controller wrote one."""
    obj = store.get(LANE_GROUPS, "istio-system", name)
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Reconciled":
            return {k: cond[k] for k in ("status", "reason")}
    return None


def message(store: MemoryStore) -> str:
    obj = store.get(LANE_GROUPS, "istio-system", "mock")
    assert obj is not None
    return str(next(c for c in obj["status"]["conditions"] if c["type"] == "Reconciled")["message"])


def generated(store: MemoryStore) -> dict[tuple[str, str, str], Any]:
    out = {}
    for gr in GENERATED_KINDS:
        items, _ = store.list(gr)
        out.update({(gr.resource, o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"] for o in items})
    return out


async def put_lanes(store: MemoryStore, lanes: list[dict[str, Any]]) -> None:
    for obj in lanes:
        md = obj["metadata"]
        live = store.get(LANES, md["namespace"], md["name"])
        if live is None:
            await store.create(LANES, obj, actor="t")
        else:
            await store.update(LANES, {**obj, "metadata": live["metadata"]}, actor="t")


async def test_lifecycle(store: MemoryStore) -> None:
    ctl = LanesController(store, settle_s=0.01, phase_delay_s=0.0)
    await ctl.start()
    try:
        await store.create(LANE_GROUPS, group(permissive=True), actor="t")
        for obj in permissive_lanes():
            await store.create(LANES, obj, actor="t")
        await until(lambda: "lanes-mock-ingress" in names(store, VIRTUAL_SERVICES)
                    and reconciled(store) is not None)
        assert reconciled(store) == {"status": "True", "reason": "Reconciled"}
        assert names(store, DESTINATION_RULES) == {"lanes-mock-mocka", "lanes-mock-mockb", "lanes-mock-mockc"}
        vs = store.get(VIRTUAL_SERVICES, "default", "lanes-mock-mockb")
        assert vs is not None and vs["metadata"]["labels"][GENERATED_BY] == "lanes"
        rv = store.current_rv
        assert await ctl.reconcile() == 0 and store.current_rv == rv  # nothing changed: nothing written

        # A lane loses mockb's... gains: lane v2 now has mockb too.
        await store.update(LANES, {**lane("v2"), "metadata": {**lane("v2")["metadata"]}}, actor="t")
        await until(lambda: [s["name"] for s in (store.get(DESTINATION_RULES, "default", "lanes-mock-mockb")
                                                  or {"spec": {}})["spec"].get("subsets", [])] == ["v1", "v2", "v3"])
        # Somebody deletes a generated object: it comes back.
        await store.delete(VIRTUAL_SERVICES, "default", "lanes-mock-mocka", actor="t")
        await until(lambda: "lanes-mock-mocka" in names(store, VIRTUAL_SERVICES))
        # The owner goes: everything generated goes.
        await store.delete(LANE_GROUPS, "istio-system", "mock", actor="t")
        await until(lambda: not names(store, VIRTUAL_SERVICES) and not names(store, DESTINATION_RULES))
    finally:
        await ctl.stop()


async def test_foreign_objects_are_left_alone(store: MemoryStore) -> None:
    mine = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "lanes-mock-mocka", "namespace": "default"}, "spec": {"hosts": ["x"]}}
    await store.create(VIRTUAL_SERVICES, mine, actor="user")
    await store.create(LANE_GROUPS, group(permissive=True), actor="t")
    for obj in permissive_lanes():
        await store.create(LANES, obj, actor="t")
    ctl = LanesController(store, phase_delay_s=0.0)
    await ctl.reconcile()
    kept = store.get(VIRTUAL_SERVICES, "default", "lanes-mock-mocka")
    assert kept is not None and kept["spec"] == {"hosts": ["x"]}


async def test_invalid_generated_object_is_never_stored(store: MemoryStore, caplog: pytest.LogCaptureFixture) -> None:
    """Lane weights that do not add up to 100 pass the lane schema, but the ingress split they make is a
    VirtualService admission refuses: nothing of the group is stored, its status names the object and field."""
    await store.create(LANE_GROUPS, group(permissive=True), actor="t")
    await put_lanes(store, permissive_lanes((30, 30, 30)))
    ctl = LanesController(store, phase_delay_s=0.0)
    with caplog.at_level(logging.WARNING, logger="meshplane.lanes"):
        assert await ctl.reconcile() == 1  # the status only
        assert await ctl.reconcile() == 0
    assert generated(store) == {}
    assert reconciled(store) == {"status": "False", "reason": "InvalidGenerated"}
    text = message(store)
    assert "VirtualService istio-system/lanes-mock-ingress" in text and "spec.http[3].route" in text, text
    assert "total destination weight 90 != 100" in text
    assert len([r for r in caplog.records if "lanes-mock-ingress" in r.getMessage()]) == 1


async def test_invalid_change_keeps_what_was_stored_then_recovers(store: MemoryStore) -> None:
    await store.create(LANE_GROUPS, group(permissive=True), actor="t")
    await put_lanes(store, permissive_lanes((80, 10, 10)))
    ctl = LanesController(store, phase_delay_s=0.0)
    await ctl.reconcile()
    before = generated(store)
    assert ("virtualservices", "istio-system", "lanes-mock-ingress") in before
    assert reconciled(store) == {"status": "True", "reason": "Reconciled"}
    ok_since = store.get(LANE_GROUPS, "istio-system", "mock")["status"]["conditions"][0]["lastTransitionTime"]

    # Lane v2 gains mockb (would add a subset and change routes) and the weights break: nothing moves.
    broken = permissive_lanes((30, 30, 30))
    broken[1] = lane("v2", weight=30)
    await put_lanes(store, broken)
    assert await ctl.reconcile() == 1
    assert generated(store) == before
    assert reconciled(store) == {"status": "False", "reason": "InvalidGenerated"}

    # Fixed: the group's objects follow, the condition turns True again.
    fixed = permissive_lanes((80, 10, 10))
    fixed[1] = lane("v2", weight=10)
    await put_lanes(store, fixed)
    assert await ctl.reconcile() > 1
    after = generated(store)
    assert [s["name"] for s in after[("destinationrules", "default", "lanes-mock-mockb")]["subsets"]] == [
        "v1", "v2", "v3"]
    assert reconciled(store) == {"status": "True", "reason": "Reconciled"}
    status = store.get(LANE_GROUPS, "istio-system", "mock")["status"]
    assert status["observedGeneration"] == 1 and status["conditions"][0]["lastTransitionTime"] >= ok_since
    assert await ctl.reconcile() == 0


async def test_a_refused_group_does_not_hold_the_others(store: MemoryStore) -> None:
    bad = group(permissive=True, name="bad")
    bad["spec"]["ingress"]["gateway"]["name"] = "Ingress_GW"  # the lane schema takes it; a gateway name cannot be
    await store.create(LANE_GROUPS, bad, actor="t")
    await store.create(LANE_GROUPS, group(permissive=True), actor="t")
    await put_lanes(store, permissive_lanes())
    await put_lanes(store, [lane("b1", group_name="bad"), lane("b2", group_name="bad")])
    await LanesController(store, phase_delay_s=0.0).reconcile()
    assert reconciled(store, "bad") == {"status": "False", "reason": "InvalidGenerated"}
    assert reconciled(store) == {"status": "True", "reason": "Reconciled"}
    assert {n for n in names(store, VIRTUAL_SERVICES) if n.startswith("lanes-bad")} == set()
    assert "lanes-mock-ingress" in names(store, VIRTUAL_SERVICES)


async def test_guard_checks_every_generated_object(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the compiler makes passes admission first: an injected DestinationRule with an invalid subset
    name is refused with the group, and the group's stored objects stay."""
    await store.create(LANE_GROUPS, group(permissive=True), actor="t")
    await put_lanes(store, permissive_lanes())
    ctl = LanesController(store, phase_delay_s=0.0)
    await ctl.reconcile()
    before = generated(store)
    real = lanes_controller.compile_groups

    def broken(groups: Any, lanes: Any) -> Any:
        out = real(groups, lanes)
        for _, objs in out:
            for g in objs:
                if g.gr == DESTINATION_RULES:
                    g.obj["spec"]["subsets"][0]["name"] = "Not A Name"
        return out

    monkeypatch.setattr(lanes_controller, "compile_groups", broken)
    assert await ctl.reconcile() == 1
    assert generated(store) == before
    assert "DestinationRule default/lanes-mock-mocka is invalid: spec.subsets[0].name" in message(store)


async def test_a_stored_lane_that_does_not_decode_holds_its_group(store: MemoryStore) -> None:
    await store.create(LANE_GROUPS, group(permissive=True), actor="t")
    await put_lanes(store, permissive_lanes())
    ctl = LanesController(store, phase_delay_s=0.0)
    await ctl.reconcile()
    before = generated(store)
    bad = lane("v3")
    bad["spec"]["ingressWeight"] = "ten"  # written past admission (the store itself does not validate)
    await put_lanes(store, [bad])
    assert await ctl.reconcile() == 1
    assert generated(store) == before
    assert reconciled(store) == {"status": "False", "reason": "Undecodable"}
    assert "ASMSwimLane istio-system/v3 does not decode: spec.ingressWeight" in message(store)


class Recording:
    """The store, recording each write the controller makes: (verb, resource, name, route names)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.writes: list[tuple[str, str, str, tuple[str, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _note(self, verb: str, gr: Any, obj: dict[str, Any]) -> None:
        routes = tuple(str(r.get("name")) for r in (obj.get("spec") or {}).get("http") or [])
        self.writes.append((verb, gr.resource, obj["metadata"]["name"], routes))

    async def create(self, gr: Any, obj: dict[str, Any], *, actor: str) -> Any:
        self._note("create", gr, obj)
        return await self.store.create(gr, obj, actor=actor)

    async def update(self, gr: Any, obj: dict[str, Any], *, actor: str, expected_rv: int | None = None) -> Any:
        self._note("update", gr, obj)
        return await self.store.update(gr, obj, actor=actor, expected_rv=expected_rv)

    async def delete(self, gr: Any, namespace: str, name: str, *, actor: str) -> Any:
        self.writes.append(("delete", gr.resource, name, ()))
        return await self.store.delete(gr, namespace, name, actor=actor)


def _index(writes: list[tuple[str, str, str, tuple[str, ...]]], pred: Any) -> list[int]:
    return [i for i, w in enumerate(writes) if pred(w)]


async def test_the_entry_changes_after_what_it_routes_to_and_before_it_is_removed(store: MemoryStore) -> None:
    """No request crosses lanes while a change arrives: the gateway routes into a lane only after every service
    route of the lane is written (and has had ``phase_delay_s`` to reach the proxies), and stops before any
    service route of a removed lane goes."""
    rec = Recording(store)
    ctl = LanesController(rec, phase_delay_s=0.0)  # type: ignore[arg-type]
    await store.create(LANE_GROUPS, group(permissive=True), actor="t")
    await put_lanes(store, [lane("v1"), lane("v2", ("mocka", "mockc"))])
    await ctl.reconcile()
    ingress = _index(rec.writes, lambda w: w[2] == "lanes-mock-ingress")
    services = _index(rec.writes, lambda w: w[1] in ("virtualservices", "destinationrules")
                      and w[2] != "lanes-mock-ingress")
    assert ingress and services and max(services) < min(ingress)

    rec.writes.clear()
    await put_lanes(store, [lane("v3")])
    await ctl.reconcile()
    entry = _index(rec.writes, lambda w: w[2] == "lanes-mock-ingress")
    gains = _index(rec.writes, lambda w: w[1] == "virtualservices" and w[2] != "lanes-mock-ingress"
                   and "lane-v3" in w[3])
    assert len(gains) == 3 and len(entry) == 1 and max(gains) < entry[0]

    rec.writes.clear()
    await store.delete(LANES, "istio-system", "v3", actor="t")
    await ctl.reconcile()
    entry = _index(rec.writes, lambda w: w[2] == "lanes-mock-ingress")
    # (Before the entry, service routes may be rewritten, for their owners, but keep lane v3's routes.)
    losses = _index(rec.writes, lambda w: w[1] == "virtualservices" and w[2] != "lanes-mock-ingress"
                    and "lane-v3" not in w[3])
    assert len(entry) == 1 and len(losses) == 3 and entry[0] < min(losses)
    subsets = _index(rec.writes, lambda w: w[1] == "destinationrules")
    assert max(losses) < max(subsets)  # subsets go last
    for name in ("lanes-mock-mocka", "lanes-mock-mockb", "lanes-mock-mockc"):
        vs = store.get(VIRTUAL_SERVICES, "default", name)
        assert vs is not None and "lane-v3" not in [r["name"] for r in vs["spec"]["http"]]
    assert await ctl.reconcile() == 0


def conditions(store: MemoryStore, name: str = "mock") -> dict[str, tuple[str, str]]:
    obj = store.get(LANE_GROUPS, "istio-system", name) or {}
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions") or []}


GATEWAY = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
           "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
           "spec": {"selector": {"istio": "ingressgateway"},
                    "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}


async def test_status_says_what_was_generated_and_what_routes_nothing(store: MemoryStore) -> None:
    from meshplane.model.resources import GATEWAYS

    ctl = LanesController(store, settle_s=0.01, phase_delay_s=0.0)
    bad = group(permissive=True)
    bad["spec"]["permissiveModeConfiguration"]["fallbackTarget"] = "v9"
    await store.create(LANE_GROUPS, bad, actor="t")
    await put_lanes(store, permissive_lanes())
    await ctl.start()
    try:
        await until(lambda: "IngressRouted" in conditions(store))
        assert conditions(store)["IngressRouted"] == ("False", "GatewayNotFound")
        assert conditions(store)["FallbackTargetFound"] == ("False", "FallbackTargetNotALane")
        obj = store.get(LANE_GROUPS, "istio-system", "mock")
        assert obj is not None
        msgs = {c["type"]: c["message"] for c in obj["status"]["conditions"]}
        assert "istio-system/istio-ingressgateway does not exist" in msgs["IngressRouted"]
        assert "'v9' is not a lane of the group (lanes: v1, v2, v3)" in msgs["FallbackTargetFound"]
        assert "VirtualService istio-system/lanes-mock-ingress" in obj["status"]["generated"]
        assert "DestinationRule default/lanes-mock-mockb" in obj["status"]["generated"]
        # The Gateway appears: the condition follows (the controller watches Gateways).
        await store.create(GATEWAYS, GATEWAY, actor="t")
        await until(lambda: conditions(store)["IngressRouted"] == ("True", "GatewayFound"))
        live = store.get(LANE_GROUPS, "istio-system", "mock")
        assert live is not None
        fixed = {**live, "spec": {**live["spec"], "permissiveModeConfiguration": {
            "routeHeader": "x-asm-prefer-tag", "fallbackTarget": "v1"}}}
        await store.update(LANE_GROUPS, fixed, actor="t")
        await until(lambda: conditions(store).get("FallbackTargetFound") == ("True", "LaneFound"))
        assert conditions(store)["Reconciled"] == ("True", "Reconciled")
    finally:
        await ctl.stop()


async def test_each_phase_waits_until_the_proxies_were_pushed(store: MemoryStore) -> None:
    calls: list[int] = []

    async def settled() -> None:
        calls.append(len(generated(store)))

    ctl = LanesController(store, phase_delay_s=0.001, settled=settled)
    await store.create(LANE_GROUPS, group(permissive=True), actor="t")
    await put_lanes(store, permissive_lanes())
    await ctl.reconcile()
    # Subsets, service routes, the entry; the later phases wrote nothing on a first apply.
    assert calls == [3, 6, 7]
