"""The agent loops' pause: ends on stop (True), after the period (False), and passes a cancel on."""

from __future__ import annotations

import asyncio

import pytest

from meshplane.agent.waits import pause


async def test_ends_when_stopped() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await pause(stop, 30) is True


async def test_ends_after_the_period() -> None:
    assert await pause(asyncio.Event(), 0.01) is False


async def test_already_stopped_returns_at_once() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await asyncio.wait_for(pause(stop, 30), 5) is True


async def test_a_cancel_is_not_swallowed() -> None:
    task = asyncio.create_task(pause(asyncio.Event(), 30))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
