"""The status writer over a real MemoryStore: what it writes, that a second pass writes nothing, that generation
never moves, that other writers' conditions stay, and that the xDS config controller pushes nothing for it."""

from __future__ import annotations

import asyncio
from typing import Any

from meshplane.model.config import ConfigSnapshot
from meshplane.model.push import PushRequest
from meshplane.model.resources import LANE_GROUPS, SERVICE_ENTRIES, VIRTUAL_SERVICES, WORKLOAD_ENTRIES
from meshplane.model.service import RegistrySnapshot
from meshplane.model.spec import decode_resource
from meshplane.statuswriter import StatusWriter, WriterSettings, render_status
from meshplane.store import MemoryStore
from meshplane.xds.controller import ConfigController

SE = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
      "metadata": {"name": "reviews", "namespace": "default"},
      "spec": {"hosts": ["reviews.default.svc.cluster.local"], "ports": [{"number": 9080, "name": "http"}]}}


def vs(subset: str) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews",
                                                                                "subset": subset}}]}]}}


def store_view(store: MemoryStore) -> Any:
    async def view() -> tuple[ConfigSnapshot, RegistrySnapshot]:
        objs = {gr: tuple(decode_resource(gr, o) for o in store.list(gr)[0])
                for gr in (SERVICE_ENTRIES, VIRTUAL_SERVICES, LANE_GROUPS, WORKLOAD_ENTRIES)}
        return ConfigSnapshot(store.current_rv, objs), RegistrySnapshot()

    return view


async def test_messages_and_condition_written_once_generation_unchanged() -> None:
    store = MemoryStore()
    await store.start()
    await store.create(SERVICE_ENTRIES, SE, actor="t")
    await store.create(VIRTUAL_SERVICES, vs("v3"), actor="t")
    writer = StatusWriter(store, store_view(store))
    assert await writer.run_once() == 2  # the VirtualService and the ServiceEntry
    stored = store.get(VIRTUAL_SERVICES, "default", "reviews")
    assert stored is not None
    assert stored["metadata"]["generation"] == 1
    status = stored["status"]
    assert status["validationMessages"] == [{
        "type": {"code": "IST0101", "name": "ReferencedResourceNotFound"}, "level": "ERROR",
        "description": 'Referenced host+subset in destinationrule not found: "reviews+v3"'}]
    (cond,) = status["conditions"]
    assert (cond["type"], cond["status"], cond["observedGeneration"], cond["reason"]) == (
        "Reconciled", "False", 1, "ReferencedResourceNotFound")
    se = store.get(SERVICE_ENTRIES, "default", "reviews")
    assert se is not None and se["status"]["conditions"][0]["status"] == "True"
    assert "validationMessages" not in se["status"]
    assert await writer.run_once() == 0  # nothing changed: nothing written

    # A fix: generation 2, condition True for generation 2, the message gone.
    fixed = {**vs("v1"), "metadata": {**stored["metadata"]}, "status": stored["status"]}
    dr = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
          "metadata": {"name": "reviews", "namespace": "default"},
          "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}
    from meshplane.model.resources import DESTINATION_RULES

    await store.create(DESTINATION_RULES, dr, actor="t")
    await store.update(VIRTUAL_SERVICES, fixed, actor="t")

    async def view2() -> tuple[ConfigSnapshot, RegistrySnapshot]:
        config, registry = await store_view(store)()
        objs = dict(config.objects)
        objs[DESTINATION_RULES] = tuple(decode_resource(DESTINATION_RULES, o)
                                        for o in store.list(DESTINATION_RULES)[0])
        return ConfigSnapshot(config.version, objs), registry

    writer2 = StatusWriter(store, view2)
    await writer2.run_once()
    stored = store.get(VIRTUAL_SERVICES, "default", "reviews")
    assert stored is not None and stored["metadata"]["generation"] == 2
    assert "validationMessages" not in stored["status"]
    (cond,) = stored["status"]["conditions"]
    assert (cond["status"], cond["observedGeneration"], cond["reason"]) == ("True", 2, "Reconciled")
    await store.close()


def test_render_keeps_other_conditions_and_fields() -> None:
    old = {"conditions": [{"type": "JwksResolved", "status": "True"}], "other": 1}
    new = render_status(old, 4, [])
    assert new["other"] == 1
    assert [c["type"] for c in new["conditions"]] == ["JwksResolved", "Reconciled"]
    again = render_status(new, 4, [])
    assert again == new  # lastTransitionTime kept: no write
    lane_group = render_status({"conditions": [{"type": "Reconciled", "status": "False", "reason": "Lanes"}]}, 1, [],
                               condition=False)
    assert lane_group == {"conditions": [{"type": "Reconciled", "status": "False", "reason": "Lanes"}]}


async def test_lane_group_keeps_the_lanes_controllers_condition() -> None:
    store = MemoryStore()
    await store.start()
    group = {"apiVersion": "istio.alibabacloud.com/v1", "kind": "ASMSwimLaneGroup",
             "metadata": {"name": "g", "namespace": "istio-system"},
             "spec": {"ingress": {"gateway": {"name": "missing", "namespace": "istio-system"}}},
             "status": {"conditions": [{"type": "Reconciled", "status": "True", "reason": "Reconciled"}]}}
    await store.create(LANE_GROUPS, group, actor="t")
    await StatusWriter(store, store_view(store)).run_once()
    stored = store.get(LANE_GROUPS, "istio-system", "g")
    assert stored is not None
    assert stored["status"]["conditions"] == group["status"]["conditions"]
    assert [m["type"]["code"] for m in stored["status"]["validationMessages"]] == ["MPL0001"]
    await store.close()


async def test_status_only_updates_ask_for_no_push_but_workload_health_does() -> None:
    store = MemoryStore()
    await store.start()
    requests: list[PushRequest] = []
    ctl = ConfigController(store, requests.append)
    ctl.load()
    ctl.start()
    writer = StatusWriter(store, store_view(store), WriterSettings(settle_s=0.0))
    try:
        await store.create(VIRTUAL_SERVICES, vs("v3"), actor="t")
        we = {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
              "metadata": {"name": "r-0", "namespace": "default"}, "spec": {"address": "127.0.0.9"}}
        await store.create(WORKLOAD_ENTRIES, we, actor="t")
        await _settle(ctl, store)
        before = len(requests)
        assert await writer.run_once() == 1  # the VirtualService (WorkloadEntries get no status from it)
        await _settle(ctl, store)
        assert len(requests) == before, [r.reasons for r in requests[before:]]
        assert ctl.snapshot().of(VIRTUAL_SERVICES)[0].raw.get("status")  # the table has the new object
        stored_we = store.get(WORKLOAD_ENTRIES, "default", "r-0")
        assert stored_we is not None
        await store.update(WORKLOAD_ENTRIES, {**stored_we, "status": {"conditions": [
            {"type": "Healthy", "status": "False"}]}}, actor="agent")
        await _settle(ctl, store)
        assert len(requests) == before + 1
    finally:
        await ctl.stop()
        await store.close()


async def _settle(ctl: ConfigController, store: MemoryStore) -> None:
    for _ in range(200):
        if ctl.rv >= store.current_rv:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the controller did not catch up")
