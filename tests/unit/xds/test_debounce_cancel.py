"""The debouncer stops when cancelled, whatever its wait the cancel meets.

Why: on Python 3.11 ``asyncio.wait_for`` returned the awaited result instead of raising when the cancel and the
result arrived in the same event-loop step (CPython gh-86296). The debouncer waited for the next change of a burst
that way, so a change and ``stop()``'s cancel in one step lost the cancel: the debouncer ran on and ``stop()`` (the
xDS server's shutdown) never returned. These tests make that coincidence happen on purpose (as
tests/unit/kube/test_kube_cancel.py does for the Kubernetes reflector).
"""

from __future__ import annotations

import asyncio
import contextlib

from meshplane.model.push import PushRequest
from meshplane.xds.debounce import Debouncer
from tests.support.cancel import ended


async def test_a_cancel_arriving_with_a_change_stops_the_debouncer() -> None:
    flushed: list[PushRequest] = []

    async def flush(req: PushRequest) -> None:
        flushed.append(req)

    d = Debouncer(flush, quiet=60.0, max_delay=120.0)  # no flush can come from the clock during the test
    d.start()
    task = d._task
    assert task is not None
    d.add(PushRequest(full=False))
    while d._changed.is_set():  # the burst has begun: the debouncer now waits for the next change or quiet
        await asyncio.sleep(0)
    # The next change and the cancel in one step.
    d.add(PushRequest(full=True))
    task.cancel()
    assert await ended(task), "the debouncer did not stop after being cancelled"
    assert task.cancelled()
    assert flushed == []


async def test_stop_returns_when_a_change_arrives_in_the_same_step() -> None:
    async def flush(req: PushRequest) -> None:
        pass

    d = Debouncer(flush, quiet=60.0, max_delay=120.0)
    d.start()
    d.add(PushRequest(full=False))
    while d._changed.is_set():
        await asyncio.sleep(0)
    d.add(PushRequest(full=False))
    stopping = asyncio.create_task(d.stop())
    done, _ = await asyncio.wait([stopping], timeout=5)
    if not done:
        assert d._task is not None
        d._task.cancel()
    assert done, "Debouncer.stop() did not return"


async def test_a_cancellation_swallowed_by_a_flush_is_honoured_at_the_next_turn() -> None:
    flushes = 0

    async def swallowing_flush(req: PushRequest) -> None:
        nonlocal flushes
        flushes += 1
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # code below that loses the cancel
            await asyncio.sleep(0)

    d = Debouncer(swallowing_flush, quiet=0.0, max_delay=0.0)
    d.start()
    task = d._task
    assert task is not None
    d.add(PushRequest(full=False))
    assert await ended(task), "the debouncer ran on after a cancellation was swallowed below it"
    assert task.cancelled() and flushes == 1
