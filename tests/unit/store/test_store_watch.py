"""Watch semantics against both backends: snapshot, replay, live, filters, compaction, slow watchers, closing."""

from __future__ import annotations

import asyncio
import random

import pytest
from _store_helpers import DR, VS, StoreFactory, vs

from meshplane.store import EventType, Expired, GroupResource, WatchEvent
from meshplane.store._core import CoreStore
from meshplane.store._watch import StoreWatch


async def take(watch: StoreWatch, n: int, timeout: float = 2.0) -> list[WatchEvent]:
    return [await asyncio.wait_for(watch.__anext__(), timeout) for _ in range(n)]


async def nothing_more(watch: StoreWatch) -> bool:
    try:
        await asyncio.wait_for(watch.__anext__(), 0.05)
    except TimeoutError:
        return True
    return False


def summary(events: list[WatchEvent]) -> list[tuple[str, str, int]]:
    return [(e.type.value, e.obj["metadata"]["name"], e.rv) for e in events]


@pytest.mark.parametrize("since", [None, 0])
async def test_no_rv_gives_a_synthetic_added_per_object_then_live_changes(
    store: CoreStore, b: int, since: int | None
) -> None:
    await store.create(VS, vs("b"), actor="a")
    await store.create(VS, vs("a"), actor="a")
    await store.update(VS, vs("b", hosts=["x"]), actor="a")
    await store.create(DR, vs("dr"), actor="a")
    watch = store.watch(VS, since_rv=since)
    assert summary(await take(watch, 2)) == [("ADDED", "a", b + 2), ("ADDED", "b", b + 3)]
    assert await nothing_more(watch)
    await store.update(VS, vs("a", hosts=["y"]), actor="a")
    await store.create(DR, vs("dr2"), actor="a")  # another collection: not this watch's
    await store.delete(VS, "default", "b", actor="a")
    await store.create(VS, vs("c"), actor="a")
    events = await take(watch, 3)
    assert summary(events) == [("MODIFIED", "a", b + 5), ("DELETED", "b", b + 7), ("ADDED", "c", b + 8)]
    assert events[1].obj["metadata"]["resourceVersion"] == str(b + 7)
    assert events[1].obj["spec"]["hosts"] == ["x"]  # the last state
    assert all(e.gr == VS for e in events)
    watch.close()


async def test_an_rv_replays_history_after_it_then_goes_live(store: CoreStore, b: int) -> None:
    await store.create(VS, vs("a"), actor="a")
    await store.create(VS, vs("b"), actor="a")
    await store.update(VS, vs("a", hosts=["x"]), actor="a")
    await store.delete(VS, "default", "b", actor="a")
    watch = store.watch(VS, since_rv=b + 2)
    assert summary(await take(watch, 2)) == [("MODIFIED", "a", b + 3), ("DELETED", "b", b + 4)]
    await store.create(VS, vs("c"), actor="a")
    assert summary(await take(watch, 1)) == [("ADDED", "c", b + 5)]
    assert await nothing_more(watch)
    watch.close()


async def test_watching_from_the_current_rv_works_with_no_history(make_store: StoreFactory, backend: str) -> None:
    if backend == "etcd":
        pytest.skip("etcd always keeps its latest revision: history_limit >= 1 (refused below 1)")
    store = await make_store(history_limit=0)
    b = store.current_rv
    for i in range(3):
        await store.create(VS, vs(f"o{i}"), actor="a")
    watch = store.watch(VS, since_rv=store.current_rv)
    await store.create(VS, vs("new"), actor="a")
    assert summary(await take(watch, 1)) == [("ADDED", "new", b + 4)]
    with pytest.raises(Expired):
        await store.watch(VS, since_rv=b + 2).__anext__()
    watch.close()


async def test_an_rv_older_than_the_kept_history_is_expired(make_store: StoreFactory) -> None:
    store = await make_store(history_limit=3)
    b = store.current_rv
    for i in range(6):
        await store.create(VS, vs(f"o{i}"), actor="a")
    assert store.compacted_rv == b + 3
    expired = store.watch(VS, since_rv=b + 1)
    with pytest.raises(Expired) as err:
        await expired.__anext__()
    assert (err.value.requested, err.value.oldest) == (b + 1, b + 3)
    with pytest.raises(StopAsyncIteration):
        await expired.__anext__()
    watch = store.watch(VS, since_rv=b + 3)
    assert [e.rv for e in await take(watch, 3)] == [b + 4, b + 5, b + 6]
    watch.close()
    assert len(store._hub) == 0


async def test_a_future_rv_waits_for_changes_after_it(store: CoreStore, b: int) -> None:
    await store.create(VS, vs("a"), actor="a")
    watch = store.watch(VS, since_rv=b + 3)
    for name in "bcd":
        await store.create(VS, vs(name), actor="a")
    assert [e.rv for e in await take(watch, 1)] == [b + 4]
    watch.close()


async def test_watches_filter_by_collection_and_namespace(store: CoreStore, b: int) -> None:
    await store.create(VS, vs("old", namespace="one"), actor="a")
    await store.create(VS, vs("old", namespace="two"), actor="a")
    one = store.watch(VS, "one")
    one_history = store.watch(VS, "one", since_rv=b + 1)
    everything = store.watch()
    everything_history = store.watch(since_rv=0)
    await store.create(DR, vs("dr", namespace="one"), actor="a")
    await store.create(VS, vs("new", namespace="two"), actor="a")
    await store.create(VS, vs("new", namespace="one"), actor="a")
    assert summary(await take(one, 2)) == [("ADDED", "old", b + 1), ("ADDED", "new", b + 5)]
    assert summary(await take(one_history, 1)) == [("ADDED", "new", b + 5)]
    expected = [(VS, b + 1), (VS, b + 2), (DR, b + 3), (VS, b + 4), (VS, b + 5)]
    assert [(e.gr, e.rv) for e in await take(everything, 5)] == expected
    assert [(e.gr, e.rv) for e in await take(everything_history, 5)] == expected
    for w in (one, one_history, everything, everything_history):
        assert await nothing_more(w)
        w.close()


async def test_snapshot_of_every_collection(store: CoreStore, b: int) -> None:
    await store.create(VS, vs("v"), actor="a")
    await store.create(DR, vs("d"), actor="a")
    watch = store.watch()
    added = {(e.gr, e.type, e.rv) for e in await take(watch, 2)}
    assert added == {(VS, EventType.ADDED, b + 1), (DR, EventType.ADDED, b + 2)}
    watch.close()


async def test_replay_then_live_has_no_gaps_or_duplicates_under_concurrent_writes(store: CoreStore) -> None:
    """Watches opened at random moments while many writers run each see every change after their start exactly once,
    in rv order, and a snapshot watch rebuilds exactly the final state."""
    rng = random.Random(7)
    names = [f"o{i}" for i in range(8)]
    attempts = 0

    async def writer(seed: int) -> None:
        nonlocal attempts
        r = random.Random(seed)
        while attempts < 600:
            attempts += 1
            name = r.choice(names)
            try:
                if store.get(VS, "default", name) is None:
                    await store.create(VS, vs(name), actor="w")
                elif r.random() < 0.2:
                    await store.delete(VS, "default", name, actor="w")
                else:
                    await store.update(VS, vs(name, hosts=[str(r.random())]), actor="w")
            except Exception:  # races between writers: AlreadyExists / NotFound are expected
                pass
            await asyncio.sleep(0)

    async def consume(watch: StoreWatch, into: list[WatchEvent]) -> None:
        async for event in watch:
            into.append(event)

    writers = [asyncio.create_task(writer(i)) for i in range(6)]
    watches: list[tuple[int | None, int, StoreWatch, list[WatchEvent]]] = []
    consumers = []
    for i in range(8):
        while attempts < 50 * i + rng.randrange(50):  # open the watches at random points of the write stream
            await asyncio.sleep(0.001)
        since = rng.choice([None, max(store.current_rv - rng.randrange(5), 1)])
        watch = store.watch(VS, since_rv=since)
        received: list[WatchEvent] = []
        watches.append((since, store.current_rv, watch, received))
        consumers.append(asyncio.create_task(consume(watch, received)))
    await asyncio.gather(*writers)
    async with asyncio.timeout(5):
        while any(not received or received[-1].rv < store.current_rv for *_, received in watches):
            await asyncio.sleep(0.001)
    for _, _, watch, _ in watches:
        watch.close()
    await asyncio.gather(*consumers)

    all_rvs = [r.rv for r in store.audit(limit=1_000_000)]
    assert len(all_rvs) > 300
    final = {o["metadata"]["name"]: o for o in store.list(VS)[0]}
    for since, rv_at_start, _, received in watches:
        if since is None:
            synthetic = [e for e in received if e.rv <= rv_at_start and e.type == EventType.ADDED]
            live = received[len(synthetic) :]
            assert all(e.rv <= rv_at_start for e in synthetic)
            assert [e.rv for e in live] == [r for r in all_rvs if r > rv_at_start]
            state: dict[str, object] = {}
            for e in received:
                name = e.obj["metadata"]["name"]
                if e.type == EventType.DELETED:
                    del state[name]
                else:
                    state[name] = e.obj
            assert state == final
        else:
            assert [e.rv for e in received] == [r for r in all_rvs if r > since]


async def test_a_slow_watcher_is_expired_without_holding_anyone_up(make_store: StoreFactory) -> None:
    store = await make_store(watch_queue_size=5, max_batch=5)
    b = store.current_rv
    slow = store.watch(VS)
    fast = store.watch(VS)
    received: list[WatchEvent] = []

    async def consume() -> None:
        async for event in fast:
            received.append(event)

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(asyncio.gather(*(store.create(VS, vs(f"o{i}"), actor="a") for i in range(50))), 5)
    await asyncio.sleep(0.01)
    assert [e.rv for e in received] == list(range(b + 1, b + 51))
    with pytest.raises(Expired):
        await slow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await slow.__anext__()
    assert len(store._hub) == 1  # the slow watch was dropped from the fan-out
    fast.close()
    await consumer


async def test_close_ends_iteration(store: CoreStore) -> None:
    watch = store.watch(VS)
    waiting = asyncio.create_task(watch.__anext__())
    await asyncio.sleep(0.01)
    watch.close()
    with pytest.raises(StopAsyncIteration):
        await waiting
    await store.create(VS, vs("after"), actor="a")
    with pytest.raises(StopAsyncIteration):
        await watch.__anext__()
    assert len(store._hub) == 0


async def test_closing_the_store_ends_every_watch(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.create(VS, vs("a"), actor="a")
    watches = [store.watch(VS), store.watch(), store.watch(GroupResource("x", "y"), since_rv=store.current_rv)]
    ends = [asyncio.create_task(_drain(w)) for w in watches]
    await asyncio.sleep(0.01)
    await store.close()
    counts = await asyncio.wait_for(asyncio.gather(*ends), 2)
    assert counts == [1, 1, 0]
    late = store.watch(VS)
    with pytest.raises(StopAsyncIteration):
        await late.__anext__()


async def _drain(watch: StoreWatch) -> int:
    return len([e async for e in watch])
