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
