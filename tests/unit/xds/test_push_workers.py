"""The push workers and their watchdog: a push that outlives ``send_timeout`` closes its stream without taking
the worker down, other proxies keep being pushed, and ``stop`` ends a worker stuck in a push.

The connections are registered directly with the server (no gRPC stream); ``push`` is replaced to model a proxy
that stops reading (a write that never completes)."""

from __future__ import annotations

import asyncio

from meshplane.model.push import PushRequest
from meshplane.store import MemoryStore
from meshplane.xds import XdsServer, XdsSettings
from meshplane.xds.connection import Connection, PushState
from meshplane.xds.translator import Translator


async def _nothing(_data: bytes) -> None:
    return None


class _Stuck(Connection):
    """A proxy whose push never completes (it stopped reading its stream)."""

    async def push(self, request: PushRequest, state: PushState) -> None:
        await asyncio.Event().wait()


class _Recording(Connection):
    def __init__(self, translator: Translator) -> None:
        super().__init__(delta=False, peer="test", translator=translator, send=_nothing)
        self.pushed: list[PushRequest] = []

    async def push(self, request: PushRequest, state: PushState) -> None:
        self.pushed.append(request)


async def _server(*, send_timeout: float, max_concurrent_pushes: int = 100) -> tuple[XdsServer, MemoryStore]:
    store = MemoryStore()
    await store.start()
    server = XdsServer(store, XdsSettings(debounce_quiet=0.01, debounce_max=0.05, send_timeout=send_timeout,
                                          max_concurrent_pushes=max_concurrent_pushes))
    await server.start("127.0.0.1:0")
    return server, store


async def _until_pushing(server: XdsServer) -> None:
    for _ in range(100):
        if server._busy:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no push started")


async def test_a_push_past_the_send_timeout_closes_its_stream_and_the_worker_goes_on() -> None:
    server, store = await _server(send_timeout=0.2, max_concurrent_pushes=1)  # one worker: it must survive
    try:
        stuck = _Stuck(delta=False, peer="stuck", translator=server.translator, send=_nothing)
        ok = _Recording(server.translator)
        server.register(stuck)
        server.register(ok)
        server._queue.enqueue(stuck, PushRequest(full=True))
        server._queue.enqueue(ok, PushRequest(full=True))
        await asyncio.wait_for(stuck.closed.wait(), 5)  # the watchdog ended the push and closed the stream
        for _ in range(500):
            if ok.pushed:
                break
            await asyncio.sleep(0.01)
        assert len(ok.pushed) == 1 and not ok.closed.is_set()  # the same worker then pushed the next proxy
        assert not server._busy and not server._expired
        server._queue.enqueue(ok, PushRequest(full=False))
        await server.wait_idle()
        assert len(ok.pushed) == 2
        assert all(not w.done() for w in server._workers)
    finally:
        await server.stop(0)
        await store.close()


async def test_stop_ends_a_worker_stuck_in_a_push() -> None:
    server, store = await _server(send_timeout=3600)
    stuck = _Stuck(delta=False, peer="stuck", translator=server.translator, send=_nothing)
    server.register(stuck)
    server._queue.enqueue(stuck, PushRequest(full=True))
    await _until_pushing(server)
    workers = list(server._workers)
    await asyncio.wait_for(server.stop(0), 10)
    assert all(w.done() for w in workers)
    await store.close()


async def test_a_timeout_and_a_stop_together_still_stop() -> None:
    """The watchdog's cancel and stop's cancel reach the worker in the same step: the worker must end, not take
    the stop for a timeout and go on."""
    server, store = await _server(send_timeout=3600, max_concurrent_pushes=1)
    stuck = _Stuck(delta=False, peer="stuck", translator=server.translator, send=_nothing)
    server.register(stuck)
    server._queue.enqueue(stuck, PushRequest(full=True))
    await _until_pushing(server)
    (worker,) = server._busy
    server._expired.add(worker)  # what the watchdog does at the deadline ...
    worker.cancel()
    worker.cancel()  # ... and stop, in the same step
    await asyncio.sleep(0.05)
    assert worker.done() and worker.cancelled()
    await asyncio.wait_for(server.stop(0), 10)
    await store.close()
