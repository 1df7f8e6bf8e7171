"""What only the etcd backend does: several replicas on one store, watches moving between them, etcd compaction,
etcd going away and coming back, and leader election on a lease. Real etcd on loopback (see conftest)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from _store_helpers import VS, vs

from meshplane.runtime.etcd import EtcdProcess, start_etcd
from meshplane.store import AlreadyExists, Conflict, EventType, Expired, StorageFailure, WatchEvent
from meshplane.store.etcd import EtcdSettings, EtcdStore, parse_etcd_url
from meshplane.store.etcd.election import LeaderElection

Replicas = Callable[..., Awaitable[EtcdStore]]


@pytest.fixture
async def replica(etcd_server: EtcdProcess) -> AsyncIterator[Replicas]:
    """``await replica()``: one more replica on this test's prefix of the module's etcd."""
    prefix = f"/replicas-{uuid.uuid4().hex[:8]}/"
    started: list[EtcdStore] = []

    async def make(**kwargs: object) -> EtcdStore:
        store = EtcdStore(parse_etcd_url(f"{etcd_server.url}{prefix}"), **kwargs)  # type: ignore[arg-type]
        await store.start()
        started.append(store)
        return store

    yield make
    for store in started:
        await store.close()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_a_write_on_one_replica_reaches_the_others(replica: Replicas) -> None:
    a, b = await replica(), await replica()
    watch = b.watch(VS, since_rv=b.current_rv)
    created = await a.create(VS, vs("reviews"), actor="alice")
    event = await asyncio.wait_for(watch.__anext__(), 5)
    assert (event.type, event.obj) == (EventType.ADDED, created)
    await until(lambda: b.get(VS, "default", "reviews") == created)
    # b's update is checked by etcd against the revision b saw: no lost update between replicas.
    updated = await b.update(VS, vs("reviews", hosts=["b.example.com"]), actor="bob")
    assert updated["metadata"]["generation"] == 2
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    await until(lambda: a.get(VS, "default", "reviews") == updated)
    assert [(r.verb, r.actor) for r in a.audit()] == [("create", "alice"), ("update", "bob")]
    watch.close()


async def test_a_replica_that_has_not_seen_the_latest_write_still_writes_correctly(replica: Replicas) -> None:
    a, b = await replica(), await replica()
    created = await a.create(VS, vs("reviews"), actor="a")
    await until(lambda: b.get(VS, "default", "reviews") is not None)
    assert b._follower is not None
    b._follower.cancel()  # b stops following etcd: its index is now stale
    resume_at = b.current_rv + 1
    v2 = await a.update(VS, vs("reviews", hosts=["two"]), actor="a")
    stale = b.get(VS, "default", "reviews")
    assert stale is not None and stale == created
    with pytest.raises(Conflict):  # the precondition is etcd's revision, not b's stale view
        await b.update(VS, vs("reviews", hosts=["x"]), actor="b", expected_rv=int(stale["metadata"]["resourceVersion"]))
    with pytest.raises(AlreadyExists):
        await b.create(VS, vs("reviews"), actor="b")
    b._follower = asyncio.get_running_loop().create_task(b._follow(resume_at))
    # Without a precondition b's write is validated again on the current state (etcd's, not b's).
    v3 = await asyncio.wait_for(b.update(VS, vs("reviews", hosts=["three"]), actor="b"), 5)
    assert v3["metadata"]["generation"] == v2["metadata"]["generation"] + 1 == 3
    assert int(v3["metadata"]["resourceVersion"]) > int(v2["metadata"]["resourceVersion"])
    await until(lambda: a.get(VS, "default", "reviews") == v3)


async def test_concurrent_creates_on_two_replicas_admit_exactly_one(replica: Replicas) -> None:
    a, b = await replica(), await replica()
    results = await asyncio.gather(
        *(store.create(VS, vs("reviews", hosts=[f"h{i}"]), actor="w") for i, store in enumerate([a, b] * 5)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, dict)]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, dict))
    await until(lambda: a.get(VS, "default", "reviews") == b.get(VS, "default", "reviews") == winners[0])


async def test_a_watch_moves_to_a_replica_started_later_without_a_gap(replica: Replicas) -> None:
    a = await replica()
    for i in range(5):
        await a.create(VS, vs(f"o{i}"), actor="a")
    first = a.watch(VS, since_rv=a.current_rv - 5)
    seen = [await asyncio.wait_for(first.__anext__(), 5) for _ in range(2)]
    first.close()  # the client's replica goes away after two events; it resumes elsewhere from the last rv
    b = await replica()  # started after those writes: its local history does not have them, etcd does
    resumed = b.watch(VS, since_rv=seen[-1].rv)
    await a.delete(VS, "default", "o0", actor="a")
    rest: list[WatchEvent] = [await asyncio.wait_for(resumed.__anext__(), 5) for _ in range(4)]
    assert [e.obj["metadata"]["name"] for e in seen + rest] == ["o0", "o1", "o2", "o3", "o4", "o0"]
    assert [e.type for e in rest] == [EventType.ADDED] * 3 + [EventType.DELETED]
    rvs = [e.rv for e in seen + rest]
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)
    resumed.close()


async def test_a_compacted_revision_is_expired_on_every_replica(replica: Replicas) -> None:
    a = await replica(history_limit=2)
    start = a.current_rv
    for i in range(6):
        await a.create(VS, vs(f"o{i}"), actor="a")
    await until(lambda: a._compactor is not None and a._compactor.done())
    b = await replica()
    watch = b.watch(VS, since_rv=start + 1)  # older than b's history: etcd answers, and it has compacted it
    with pytest.raises(Expired):
        await asyncio.wait_for(watch.__anext__(), 5)
    with pytest.raises(StopAsyncIteration):
        await watch.__anext__()


async def test_etcd_going_away_fails_writes_and_the_replica_catches_up_after(tmp_path: Path) -> None:
    etcd = start_etcd(tmp_path / "member")
    try:
        store = EtcdStore(EtcdSettings(endpoints=(etcd.endpoint,), timeout=1.0))
        await store.start()
        other = EtcdStore(parse_etcd_url(etcd.url))
        await other.start()
        try:
            await store.create(VS, vs("before"), actor="a")
            etcd.stop(signal.SIGKILL)
            with pytest.raises(StorageFailure):
                await store.create(VS, vs("during"), actor="a")
            etcd.restart()
            await asyncio.wait_for(other.create(VS, vs("after"), actor="b"), 10)
            await until(lambda: store.get(VS, "default", "after") is not None, timeout=10)
            assert store.get(VS, "default", "before") is not None
        finally:
            await other.close()
            await store.close()
    finally:
        etcd.stop()


async def test_one_leader_at_a_time_and_a_successor_when_it_stops(replica: Replicas) -> None:
    a, b = await replica(), await replica()
    log: list[str] = []

    def callbacks(name: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
        async def elected() -> None:
            log.append(f"{name} elected")

        async def lost() -> None:
            log.append(f"{name} lost")

        return elected, lost

    first = LeaderElection(a.client, "controllers", "a", ttl=2)
    second = LeaderElection(b.client, "controllers", "b", ttl=2)
    first.start(*callbacks("a"))
    await until(lambda: first.is_leader)
    second.start(*callbacks("b"))
    await asyncio.sleep(0.5)
    assert not second.is_leader
    assert await second.holder() == "a"
    await first.stop()  # revokes its lease: the successor does not wait for the ttl
    await until(lambda: second.is_leader, timeout=3)
    assert log == ["a elected", "a lost", "b elected"]
    await second.stop()
    assert log[-1] == "b lost"


async def test_trimmed_audit_records_are_deleted_from_etcd_for_every_replica(replica: Replicas) -> None:
    writer = await replica(audit_limit=10)
    for i in range(30):
        await writer.create(VS, vs(f"r{i}"), actor="alice")
    newest = [r.rv for r in writer.audit(limit=1000)]
    assert len(newest) in (10, 11)

    async def deleted() -> bool:  # the deletions are sent in the background
        later = await replica(audit_limit=0)  # keeps whatever etcd still has
        return [r.rv for r in later.audit(limit=1000)] == newest

    for _ in range(50):
        if await deleted():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the trimmed audit records stayed in etcd")
