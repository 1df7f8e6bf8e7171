"""Debounce: merge bursts of changes into one push, with a quiet period and a maximum delay.

Why: a ``kubectl apply`` of fifty objects, or a member cluster scaling a deployment, would otherwise rebuild the
push context and push every proxy fifty times. Like Istio's ``debounce``, a push happens when no change arrived
for ``quiet`` seconds, or ``max_delay`` seconds after the first change of the burst, whichever comes first.
Only one flush runs at a time: changes that arrive during a flush are merged into the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from meshplane.model.push import PushRequest

log = logging.getLogger(__name__)


class Debouncer:
    """Collects PushRequests (``add``) and calls ``flush`` with their merge once the burst is over."""

    def __init__(self, flush: Callable[[PushRequest], Awaitable[None]], *, quiet: float, max_delay: float) -> None:
        if quiet < 0 or max_delay < quiet:
            raise ValueError("debounce: need 0 <= quiet <= max_delay")
        self._flush = flush
        self._quiet = quiet
        self._max_delay = max_delay
        self._pending: PushRequest | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.flushes = 0
        self.merged = 0
        # The loop time of the first change of the burst being flushed (read by the flush, for metrics).
        self.burst_started: float | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="xds-debounce")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def add(self, request: PushRequest) -> None:
        self._pending = request if self._pending is None else self._pending.merge(request)
        self.merged += 1
        self._idle.clear()
        self._changed.set()

    async def wait_idle(self) -> None:
        """Return once every request added so far has been flushed."""
        await self._idle.wait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # A cancellation that some await below (a flush) swallowed: honour it here rather than run on.
                raise asyncio.CancelledError()
            await self._changed.wait()
            start = last = loop.time()
            self._changed.clear()
            while True:
                deadline = min(last + self._quiet, start + self._max_delay)
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    async with asyncio.timeout(timeout):
                        await self._changed.wait()
                except TimeoutError:
                    break
                self._changed.clear()
                last = loop.time()
            request, self._pending = self._pending, None
            self.burst_started = start
            if request is not None:
                self.flushes += 1
                try:
                    await self._flush(request)
                except Exception:
                    log.exception("push flush failed")
            if self._pending is None:
                self._idle.set()
