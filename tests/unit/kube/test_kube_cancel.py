"""A Kubernetes source's reflector stops when cancelled, whatever step of its request the cancel meets.

Why: on Python 3.11 ``asyncio.wait_for`` returned the response instead of raising when the cancel and the response
arrived in the same event-loop step; the reflector then read its watch stream forever and the member cluster's
stop never finished. These tests make that coincidence happen on purpose: the request's response and the cancel
are delivered in one step, and the watch stream after it never ends on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from meshplane.kube import KubeClusterSource
from meshplane.model.proxy import Locality
from meshplane.registry.kube_convert import NODES, ClusterDefaults


class _Endless:
    """A watch body that never sends a line (a quiet cluster)."""

    async def readline(self) -> bytes:
        await asyncio.Event().wait()
        return b""


class _Response:
    status = 200

    def __init__(self) -> None:
        self.content = _Endless()
        self.released = False

    def release(self) -> None:
        self.released = True


def _source() -> KubeClusterSource:
    return KubeClusterSource(ClusterDefaults("c", "", Locality()), "")


@pytest.mark.parametrize("resume", [True, False], ids=["watch", "list"])
async def test_a_cancel_arriving_with_the_response_stops_the_reflector(resume: bool) -> None:
    src = _source()
    if resume:
        src.resource_versions[NODES] = "5"  # straight to the watch request
    called = asyncio.Event()
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def request(api: Any, kind: str, query: Any, timeout: Any) -> Any:
        called.set()
        return await answer

    src._request = request  # type: ignore[method-assign]
    task = asyncio.create_task(src._reflect(None, NODES))  # type: ignore[arg-type]
    await asyncio.wait_for(called.wait(), 5)
    # The response and the cancel in one step.
    resp = _Response()
    answer.set_result(resp)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert done, "the reflector did not stop after being cancelled"
    assert task.cancelled()


async def test_a_cancellation_swallowed_below_is_honoured_at_the_next_turn() -> None:
    src = _source()
    src.resource_versions[NODES] = "5"
    turns = 0

    async def swallowing_watch(api: Any, kind: str) -> None:
        nonlocal turns
        turns += 1
        if turns > 1:
            await asyncio.Event().wait()  # a second watch: streams until cancelled (again)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # a library that loses the cancel; the stream then ends
            await asyncio.sleep(0)

    src._watch = swallowing_watch  # type: ignore[method-assign]
    task = asyncio.create_task(src._reflect(None, NODES))  # type: ignore[arg-type]
    done, _ = await asyncio.wait([task], timeout=5)
    assert done and task.cancelled() and turns == 1
