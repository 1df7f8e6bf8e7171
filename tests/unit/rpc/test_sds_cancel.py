"""An SDS ACK wait (``SdsServer.wait_acked``) ends when cancelled, also when the ACK arrives in the same step.

Why: on Python 3.11 ``asyncio.wait_for`` returned the awaited result instead of raising when the cancel and the
result arrived in the same event-loop step (CPython gh-86296); ``wait_acked`` then returned as if nothing had
happened and its caller (the agent's certificate loop) ran on. The ACK and the cancel are delivered in one step on
purpose here, as tests/unit/kube/test_kube_cancel.py does for the Kubernetes reflector.
"""

from __future__ import annotations

import asyncio

from meshplane.rpc.sds import SdsServer
from tests.support.cancel import ended


async def test_a_cancel_arriving_with_the_ack_stops_wait_acked() -> None:
    sds = SdsServer()
    sds._stream_acks[1] = {"default": 0}
    waiting = asyncio.create_task(sds.wait_acked("default", 1, timeout=60.0))
    while not sds._changed._waiters:  # type: ignore[attr-defined]  # waiting for the ACK
        await asyncio.sleep(0)
    # The ACK (as the stream handler records it) and the cancel in one step.
    sds._stream_acks[1]["default"] = 1
    async with sds._changed:  # free: acquired without a loop step
        sds._changed.notify_all()
    waiting.cancel()
    assert await ended(waiting), "wait_acked did not end after being cancelled"
    assert waiting.cancelled()


async def test_wait_acked_still_times_out() -> None:
    sds = SdsServer()
    sds._stream_acks[1] = {"default": 0}
    try:
        await sds.wait_acked("default", 1, timeout=0.05)
    except TimeoutError:
        pass
    else:
        raise AssertionError("wait_acked returned without the ACK")
