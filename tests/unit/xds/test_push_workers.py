"""The push workers and their watchdog: a write the proxy does not take within ``send_timeout`` closes its stream
without taking the worker down, other proxies keep being pushed, a push slow before its write (budget, a busy
event loop) is not closed, and ``stop`` ends a worker stuck in a push.

The connections are registered directly with the server (no gRPC stream); ``push`` is replaced to model a proxy
that stops reading (a write that never completes) or a push that waits before it writes."""

from __future__ import annotations

import asyncio

from meshplane.model.push import PushRequest
from meshplane.store import MemoryStore
from meshplane.xds import XdsServer, XdsSettings
from meshplane.xds.connection import Connection, PushState
from meshplane.xds.translator import Translator


async def _nothing(_data: bytes) -> None:
    return None


async def _never(_data: bytes) -> None:
    await asyncio.Event().wait()


class _Stuck(Connection):
    """A proxy whose write never completes (it stopped reading its stream)."""

    def __init__(self, translator: Translator) -> None:
        super().__init__(delta=False, peer="stuck", translator=translator, send=_never)

    async def push(self, request: PushRequest, state: PushState) -> None:
        await self._write(1, lambda: b"x")


class _LateWriter(Connection):
    """A push that waits (for budget, for the event loop) longer than the send timeout, then writes quickly."""

    def __init__(self, translator: Translator, wait: float) -> None:
        super().__init__(delta=False, peer="late", translator=translator, send=_nothing)
        self.wait = wait
        self.written = 0

    async def push(self, request: PushRequest, state: PushState) -> None:
        await asyncio.sleep(self.wait)
        await self._write(1, lambda: b"x")
        self.written += 1


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
        stuck = _Stuck(server.translator)
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


async def test_a_push_slow_before_its_write_is_not_closed() -> None:
    server, store = await _server(send_timeout=0.1)
    try:
        late = _LateWriter(server.translator, wait=0.5)  # five send timeouts before the write starts
        server.register(late)
        server._queue.enqueue(late, PushRequest(full=True))
        await _until_pushing(server)
        await server.wait_idle()
        assert late.written == 1 and not late.closed.is_set()
    finally:
        await server.stop(0)
        await store.close()


async def test_stop_ends_a_worker_stuck_in_a_push() -> None:
    server, store = await _server(send_timeout=3600)
    stuck = _Stuck(server.translator)
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
    stuck = _Stuck(server.translator)
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
