"""The push queue merges per connection; the debouncer merges bursts (generous waits, no timing asserts)."""

from __future__ import annotations

import asyncio

from meshplane.model.push import PushRequest
from meshplane.xds.debounce import Debouncer
from meshplane.xds.pushqueue import PushQueue


async def test_queue_merges_pending_and_requeues_changes_during_processing() -> None:
    q: PushQueue[str] = PushQueue()
    q.enqueue("a", PushRequest(full=False, endpoints_updated=frozenset({"h1"})))
    q.enqueue("b", PushRequest(full=False))
    q.enqueue("a", PushRequest(full=False, endpoints_updated=frozenset({"h2"})))
    assert len(q) == 2
    key, req = await q.dequeue()
    assert key == "a" and req.endpoints_updated == {"h1", "h2"}
    q.enqueue("a", PushRequest(full=True))  # arrives while "a" is being pushed
    assert len(q) == 1
    q.mark_done("a")
    assert len(q) == 2
    key, req = await q.dequeue()
    assert key == "b"
    key, req = await q.dequeue()
    assert key == "a" and req.full


async def test_one_entry_wakes_one_worker_and_every_entry_is_taken_once() -> None:
    q: PushQueue[str] = PushQueue()
    wakeups = 0
    taken: list[str] = []

    async def worker() -> None:
        nonlocal wakeups
        while True:
            key, _ = await q.dequeue()
            wakeups += 1
            taken.append(key)
            q.mark_done(key)

    workers = [asyncio.create_task(worker()) for _ in range(50)]
    await asyncio.sleep(0)
    q.enqueue("a", PushRequest(full=True))
    for _ in range(5):
        await asyncio.sleep(0)
    assert taken == ["a"] and wakeups == 1 and len(q._waiters) == 50  # the others were not woken at all
    for i in range(200):
        q.enqueue(f"p{i}", PushRequest(full=False))
    for _ in range(50):
        await asyncio.sleep(0)
    assert sorted(taken[1:]) == sorted(f"p{i}" for i in range(200)) and len(q) == 0
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


async def test_a_worker_woken_then_cancelled_hands_its_wake_up_on() -> None:
    q: PushQueue[str] = PushQueue()
    taken: list[str] = []

    async def worker() -> None:
        key, _ = await q.dequeue()
        taken.append(key)

    first = asyncio.create_task(worker())
    await asyncio.sleep(0)
    second = asyncio.create_task(worker())
    await asyncio.sleep(0)
    q.enqueue("x", PushRequest(full=True))  # wakes the first waiter ...
    first.cancel()  # ... which is cancelled in the same step, before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert first.cancelled() and taken == ["x"] and len(q) == 0


async def test_debouncer_merges_a_burst_into_one_flush() -> None:
    flushed: list[PushRequest] = []

    async def flush(req: PushRequest) -> None:
        flushed.append(req)

    d = Debouncer(flush, quiet=0.05, max_delay=5.0)
    d.start()
    try:
        for i in range(20):
            d.add(PushRequest(full=False, endpoints_updated=frozenset({f"h{i}"})))
        await asyncio.wait_for(d.wait_idle(), 10)
        assert len(flushed) == 1 and len(flushed[0].endpoints_updated) == 20
        d.add(PushRequest(full=True))
        await asyncio.wait_for(d.wait_idle(), 10)
        assert len(flushed) == 2 and flushed[1].full
    finally:
        await d.stop()


async def test_debouncer_flushes_at_max_delay_under_constant_changes() -> None:
    flushed: list[PushRequest] = []

    async def flush(req: PushRequest) -> None:
        flushed.append(req)

    d = Debouncer(flush, quiet=0.2, max_delay=0.3)
    d.start()
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while not flushed and loop.time() < end:  # changes every 10 ms never leave a quiet period
            d.add(PushRequest(full=False))
            await asyncio.sleep(0.01)
        assert flushed, "max_delay forces a flush during a continuous stream of changes"
    finally:
        await d.stop()
