"""The per-proxy push queue: at most one pending PushRequest per connection, merged while it waits.

Why: pushes are slower than changes arrive. A proxy that is already queued must not be pushed twice, and a
proxy being pushed right now must get the changes that arrived meanwhile afterwards (Istio's ``PushQueue``).
Connections leave the queue in FIFO order; the server's push workers (as many as may push at once) take them.
Each new entry wakes one waiting worker, not all of them: with a thousand workers, a push to one proxy must not
wake a thousand tasks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from meshplane.model.push import PushRequest

K = TypeVar("K")


class PushQueue(Generic[K]):
    def __init__(self) -> None:
        self._pending: dict[K, PushRequest] = {}  # insertion-ordered: FIFO
        self._processing: dict[K, PushRequest | None] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()

    def enqueue(self, key: K, request: PushRequest) -> None:
        if key in self._processing:
            current = self._processing[key]
            self._processing[key] = request if current is None else current.merge(request)
            return
        current_pending = self._pending.get(key)
        if current_pending is not None:
            self._pending[key] = current_pending.merge(request)
            return
        self._pending[key] = request
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def dequeue(self) -> tuple[K, PushRequest]:
        while not self._pending:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Woken, then cancelled before taking the entry: hand the wake-up to another worker.
                if waiter.done() and not waiter.cancelled() and self._pending:
                    self._wake_one()
                raise
        key = next(iter(self._pending))
        request = self._pending.pop(key)
        self._processing[key] = None
        if self._pending:  # more entries than wake-ups so far (e.g. a worker came back while others waited)
            self._wake_one()
        return key, request

    def mark_done(self, key: K) -> None:
        """The push of ``key`` finished: requeue whatever arrived for it meanwhile."""
        later = self._processing.pop(key, None)
        if later is not None:
            self.enqueue(key, later)

    def remove(self, key: K) -> None:
        self._pending.pop(key, None)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def busy(self) -> int:
        return len(self._processing)
