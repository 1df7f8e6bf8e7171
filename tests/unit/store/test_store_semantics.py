"""The Store contract's write/read semantics, against both backends (see conftest: ``store`` is parametrized)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from _store_helpers import DR, NS, VS, FakeClock, StoreFactory, core_only, gate_commits, vs

from meshplane.store import AlreadyExists, Conflict, EventType, MemoryStore, NotFound, StorageFailure
from meshplane.store._core import CoreStore


async def test_create_fills_the_bookkeeping(store: CoreStore, b: int) -> None:
    sent = vs("reviews")
    sent["metadata"].update(uid="forged", resourceVersion="99", generation=7, creationTimestamp="1999-01-01T00:00:00Z")
    created = await store.create(VS, sent, actor="alice")
    meta = created["metadata"]
    assert uuid.UUID(meta["uid"]).version == 4
    assert meta["resourceVersion"] == str(b + 1)
    assert meta["generation"] == 1
    assert meta["creationTimestamp"] == "2026-11-25T17:18:46Z"
    assert created["spec"] == {"hosts": ["a.example.com"]}
    assert store.get(VS, "default", "reviews") == created
    assert store.current_rv == b + 1


async def test_the_store_keeps_its_own_copy(store: CoreStore) -> None:
    sent = vs("reviews")
    await store.create(VS, sent, actor="a")
    sent["spec"]["hosts"].append("evil.example.com")
    sent["metadata"]["name"] = "other"
    stored = store.get(VS, "default", "reviews")
    assert stored is not None
    assert stored["spec"]["hosts"] == ["a.example.com"]


async def test_create_of_an_existing_name_is_already_exists(store: CoreStore, b: int) -> None:
    first = await store.create(VS, vs("reviews"), actor="a")
    with pytest.raises(AlreadyExists) as err:
        await store.create(VS, vs("reviews", hosts=["b"]), actor="a")
    assert (err.value.gr, err.value.namespace, err.value.name) == (VS, "default", "reviews")
    assert store.get(VS, "default", "reviews") == first
    assert store.current_rv == b + 1
    # The same name in another namespace or another collection is another object.
    await store.create(VS, vs("reviews", namespace="other"), actor="a")
    await store.create(DR, vs("reviews"), actor="a")


async def test_one_resource_version_counter_across_collections(store: CoreStore, b: int) -> None:
    rvs: list[int] = []
    for gr in (VS, DR, NS, VS):
        obj = await store.create(gr, vs(f"o{len(rvs)}"), actor="a")
        rvs.append(int(obj["metadata"]["resourceVersion"]))
    assert rvs == [b + 1, b + 2, b + 3, b + 4]
    assert store.current_rv == b + 4


async def test_list_is_sorted_filtered_and_carries_the_rv(store: CoreStore, b: int) -> None:
    for ns, name in [("b", "y"), ("a", "z"), ("b", "x"), ("a", "a"), ("c", "m")]:
        await store.create(VS, vs(name, namespace=ns), actor="a")
    await store.create(DR, vs("dr", namespace="a"), actor="a")
    items, rv = store.list(VS)
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items] == [
        ("a", "a"),
        ("a", "z"),
        ("b", "x"),
        ("b", "y"),
        ("c", "m"),
    ]
    assert rv == store.current_rv == b + 6
    assert [o["metadata"]["name"] for o in store.list(VS, "b")[0]] == ["x", "y"]
    assert store.list(VS, "nope") == ([], b + 6)
    assert store.list(NS) == ([], b + 6)
    assert store.get(VS, "a", "missing") is None
    assert store.get(NS, "", "missing") is None


async def test_cluster_scoped_objects_have_the_empty_namespace(store: CoreStore) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}
    created = await store.create(NS, ns, actor="a")
    assert "namespace" not in created["metadata"]
    assert store.get(NS, "", "prod") == created
    assert store.list(NS, "")[0] == [created]
    deleted = await store.delete(NS, "", "prod", actor="a")
    assert deleted["metadata"]["name"] == "prod"


async def test_update_of_the_spec_bumps_generation_and_keeps_identity(
    store: CoreStore, clock: FakeClock, b: int
) -> None:
    created = await store.create(VS, vs("reviews"), actor="a")
    clock.advance(60)
    sent = vs("reviews", hosts=["b.example.com"])
    sent["metadata"].update(uid="forged", creationTimestamp="1999-01-01T00:00:00Z", generation=40)
    updated = await store.update(VS, sent, actor="a")
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    assert updated["metadata"]["generation"] == 2
    assert updated["metadata"]["resourceVersion"] == str(b + 2)
    assert updated["spec"]["hosts"] == ["b.example.com"]
    assert store.get(VS, "default", "reviews") == updated


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda o: o["metadata"].update(labels={"app": "reviews"}), id="labels"),
        pytest.param(lambda o: o["metadata"].update(annotations={"note": "x"}), id="annotations"),
        pytest.param(lambda o: o.update(status={"conditions": [{"type": "Ready"}]}), id="status"),
    ],
)
async def test_metadata_and_status_changes_keep_the_generation(store: CoreStore, b: int, change) -> None:  # type: ignore[no-untyped-def]
    await store.create(VS, vs("reviews"), actor="a")
    sent = vs("reviews")
    change(sent)
    updated = await store.update(VS, sent, actor="a")
    assert updated["metadata"]["generation"] == 1
    assert updated["metadata"]["resourceVersion"] == str(b + 2)


async def test_a_noop_update_changes_nothing(store: CoreStore, clock: FakeClock, b: int) -> None:
    created = await store.create(VS, vs("reviews", status={"x": 1}), actor="a")
    watch = store.watch(VS, since_rv=store.current_rv)
    clock.advance(10)
    # Bookkeeping fields sent stale, forged or not at all make no difference.
    for sent in (vs("reviews", status={"x": 1}), {**created, "metadata": {**created["metadata"], "generation": 9}}):
        again = await store.update(VS, sent, actor="bob")
        assert again == created
    assert store.current_rv == b + 1
    assert [r.verb for r in store.audit()] == ["create"]
    await store.create(VS, vs("other"), actor="a")
    event = await asyncio.wait_for(watch.__anext__(), 1)
    assert event.rv == b + 2  # nothing was published for the no-ops
    watch.close()


async def test_expected_rv_is_a_precondition(store: CoreStore, b: int) -> None:
    await store.create(VS, vs("reviews"), actor="a")
    with pytest.raises(Conflict):
        await store.update(VS, vs("reviews", hosts=["b"]), actor="a", expected_rv=b + 7)
    updated = await store.update(VS, vs("reviews", hosts=["b"]), actor="a", expected_rv=b + 1)
    assert updated["metadata"]["resourceVersion"] == str(b + 2)
    with pytest.raises(Conflict):
        await store.update(VS, vs("reviews", hosts=["c"]), actor="a", expected_rv=b + 1)
    with pytest.raises(Conflict):
        await store.delete(VS, "default", "reviews", actor="a", expected_rv=b + 1)
    assert store.get(VS, "default", "reviews") == updated
    await store.delete(VS, "default", "reviews", actor="a", expected_rv=b + 2)
    assert store.get(VS, "default", "reviews") is None


async def test_update_and_delete_of_a_missing_object_are_not_found(store: CoreStore, b: int) -> None:
    with pytest.raises(NotFound):
        await store.update(VS, vs("ghost"), actor="a")
    with pytest.raises(NotFound):
        await store.delete(VS, "default", "ghost", actor="a")
    await store.create(VS, vs("ghost", namespace="elsewhere"), actor="a")
    with pytest.raises(NotFound):
        await store.delete(VS, "default", "ghost", actor="a")
    assert store.current_rv == b + 1


async def test_delete_returns_the_last_state_with_the_deletes_rv(store: CoreStore, b: int) -> None:
    created = await store.create(VS, vs("reviews"), actor="a")
    await store.create(VS, vs("other"), actor="a")
    deleted = await store.delete(VS, "default", "reviews", actor="a")
    assert deleted["metadata"]["resourceVersion"] == str(b + 3)
    assert {**deleted, "metadata": {**deleted["metadata"], "resourceVersion": str(b + 1)}} == created
    assert store.get(VS, "default", "reviews") is None
    assert [o["metadata"]["name"] for o in store.list(VS)[0]] == ["other"]
    again = await store.create(VS, vs("reviews"), actor="a")
    assert again["metadata"]["uid"] != created["metadata"]["uid"]
    assert again["metadata"]["generation"] == 1
    assert again["metadata"]["resourceVersion"] == str(b + 4)


async def test_audit_records_every_accepted_change(store: CoreStore, clock: FakeClock, b: int) -> None:
    await store.create(VS, vs("reviews"), actor="alice")
    clock.advance(1.5)
    await store.update(VS, vs("reviews", hosts=["b"]), actor="bob")
    await store.update(VS, {**vs("reviews", hosts=["b"]), "status": {"ok": True}}, actor="bob")
    await store.update(VS, {**vs("reviews", hosts=["b"]), "status": {"ok": True}}, actor="bob")  # no-op
    deleted = await store.delete(VS, "default", "reviews", actor="carol")
    with pytest.raises(NotFound):
        await store.delete(VS, "default", "reviews", actor="carol")
    records = store.audit()
    assert [(r.rv, r.actor, r.verb, r.old_generation, r.new_generation) for r in records] == [
        (b + 1, "alice", "create", None, 1),
        (b + 2, "bob", "update", 1, 2),
        (b + 3, "bob", "update", 2, 2),
        (b + 4, "carol", "delete", 2, None),
    ]
    assert {(r.group, r.resource, r.namespace, r.name, r.uid) for r in records} == {
        ("networking.istio.io", "virtualservices", "default", "reviews", deleted["metadata"]["uid"])
    }
    assert records[0].timestamp == "2026-11-25T17:18:46.000000Z"
    assert records[1].timestamp == "2026-11-25T17:18:47.500000Z"
    assert [r.rv for r in store.audit(since_rv=b + 1, limit=2)] == [b + 2, b + 3]
    assert store.audit(since_rv=b + 4) == []


async def test_invalid_objects_are_refused_before_anything_happens(store: CoreStore, b: int) -> None:
    with pytest.raises(ValueError, match=r"metadata\.name"):
        await store.create(VS, {"metadata": {"namespace": "x"}}, actor="a")
    with pytest.raises(ValueError, match="metadata"):
        await store.create(VS, {"spec": {}}, actor="a")
    with pytest.raises(TypeError):
        await store.create(VS, {"metadata": {"name": "x"}, "spec": {"when": object()}}, actor="a")
    with pytest.raises(ValueError):
        await store.create(VS, {"metadata": {"name": "x"}, "spec": {"weight": float("nan")}}, actor="a")
    assert store.current_rv == b


async def test_concurrent_creates_of_one_name_admit_exactly_one(store: CoreStore) -> None:
    results = await asyncio.gather(
        *(store.create(VS, vs("reviews", hosts=[f"h{i}"]), actor="a") for i in range(20)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, dict)]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, dict))
    assert store.get(VS, "default", "reviews") == winners[0]


async def test_concurrent_updates_with_one_precondition_admit_exactly_one(store: CoreStore, b: int) -> None:
    await store.create(VS, vs("reviews"), actor="a")
    results = await asyncio.gather(
        *(store.update(VS, vs("reviews", hosts=[f"h{i}"]), actor="a", expected_rv=b + 1) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, dict) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 9


async def test_writes_are_invisible_until_committed(store: CoreStore) -> None:
    core_only(store)
    gate = gate_commits(store)
    create = asyncio.create_task(store.create(VS, vs("reviews"), actor="a"))
    await asyncio.sleep(0.01)
    assert not create.done()
    assert store.get(VS, "default", "reviews") is None
    assert store.list(VS) == ([], 0)
    assert store.current_rv == 0
    assert store.audit() == []
    watch = store.watch(VS)  # its snapshot must not contain the pending object
    # Writes validated against the pending state: an update is accepted (and waits for its basis to commit) ...
    update = asyncio.create_task(store.update(VS, vs("reviews", hosts=["b"]), actor="a"))
    # ... while verdicts that would reveal the pending state wait for it to commit before they are given.
    duplicate = asyncio.create_task(store.create(VS, vs("reviews"), actor="a"))
    await asyncio.sleep(0.01)
    assert not update.done()
    assert not duplicate.done()
    gate.set()
    created, updated = await create, await update
    with pytest.raises(AlreadyExists):
        await duplicate
    assert updated["metadata"]["generation"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    events = [await asyncio.wait_for(watch.__anext__(), 1) for _ in range(2)]
    assert [(e.type, e.rv) for e in events] == [(EventType.ADDED, 1), (EventType.MODIFIED, 2)]
    watch.close()


async def test_a_noop_against_a_pending_write_waits_for_its_commit(store: CoreStore) -> None:
    core_only(store)
    gate = gate_commits(store)
    create = asyncio.create_task(store.create(VS, vs("reviews"), actor="a"))
    await asyncio.sleep(0)
    noop = asyncio.create_task(store.update(VS, vs("reviews"), actor="a"))
    await asyncio.sleep(0.01)
    assert not noop.done()
    gate.set()
    assert await noop == await create
    assert store.current_rv == 1


async def test_a_cancelled_writer_does_not_withdraw_its_write(store: CoreStore) -> None:
    core_only(store)
    gate = gate_commits(store)
    create = asyncio.create_task(store.create(VS, vs("reviews"), actor="a"))
    await asyncio.sleep(0.01)
    create.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await create
    await store.update(VS, vs("reviews", hosts=["b"]), actor="a")  # the create did commit
    assert store.current_rv == 2


async def test_close_flushes_accepted_writes_then_refuses_new_ones(store: CoreStore, b: int) -> None:
    writes = [asyncio.create_task(store.create(VS, vs(f"o{i}"), actor="a")) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    assert all(w.done() and not w.cancelled() and w.exception() is None for w in writes)
    assert store.current_rv == b + 50
    with pytest.raises(StorageFailure):
        await store.create(VS, vs("late"), actor="a")
    await store.close()  # idempotent


async def test_a_store_must_be_started() -> None:
    store = MemoryStore()
    with pytest.raises(RuntimeError):
        await store.create(VS, vs("x"), actor="a")
    with pytest.raises(RuntimeError):
        store.watch()


def test_constructor_limits() -> None:
    assert MemoryStore(watch_queue_size=10)._max_batch == 10  # a batch never overflows a watch that keeps up
    with pytest.raises(ValueError, match="watch_queue_size"):
        MemoryStore(watch_queue_size=10, max_batch=20)
    with pytest.raises(ValueError):
        MemoryStore(history_limit=-1)


async def test_the_audit_trail_keeps_the_newest_records_up_to_its_limit(make_store: StoreFactory) -> None:
    store = await make_store(audit_limit=10)
    written = [await store.create(VS, vs("reviews"), actor="alice")]
    for i in range(24):
        written.append(await store.update(VS, vs("reviews", hosts=[f"h{i}"]), actor="bob"))
    # trimmed back to 10 whenever it went a tenth (at least one record) past the limit: 11 now, the newest (on
    # etcd the deletions take revisions of their own, so the changes' rvs are not consecutive there)
    records = store.audit(limit=1000)
    assert [r.rv for r in records] == [int(o["metadata"]["resourceVersion"]) for o in written[-11:]]
    assert records[0].verb == "update"
    with pytest.raises(ValueError, match="audit_limit"):
        await make_store(audit_limit=-1)


async def test_an_audit_limit_of_zero_keeps_every_record(make_store: StoreFactory) -> None:
    store = await make_store(audit_limit=0)
    await store.create(VS, vs("reviews"), actor="alice")
    for i in range(30):
        await store.update(VS, vs("reviews", hosts=[f"h{i}"]), actor="bob")
    assert len(store.audit(limit=1000)) == 31
