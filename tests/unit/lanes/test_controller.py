"""The lanes controller against a real (in-memory) store: generated objects appear, follow changes, are not
rewritten when nothing changed, and disappear with their owner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from lane_objects import group, lane, permissive_lanes

from meshplane.lanes import GENERATED_BY, LanesController
from meshplane.lanes.compile import DESTINATION_RULES, LANE_GROUPS, LANES, VIRTUAL_SERVICES
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


async def test_lifecycle(store: MemoryStore) -> None:
    ctl = LanesController(store, settle_s=0.01, phase_delay_s=0.0)
    await ctl.start()
    try:
        await store.create(LANE_GROUPS, group(permissive=True), actor="t")
        for obj in permissive_lanes():
            await store.create(LANES, obj, actor="t")
        await until(lambda: "lanes-mock-ingress" in names(store, VIRTUAL_SERVICES))
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
