"""The per-proxy push queue: at most one pending PushRequest per connection, merged while it waits.

Why: pushes are slower than changes arrive. A proxy that is already queued must not be pushed twice, and a
proxy being pushed right now must get the changes that arrived meanwhile afterwards (Istio's ``PushQueue``).
Connections leave the queue in FIFO order; the sender bounds how many are pushed concurrently.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from meshplane.model.push import PushRequest

K = TypeVar("K")


class PushQueue(Generic[K]):
    def __init__(self) -> None:
        self._pending: dict[K, PushRequest] = {}  # insertion-ordered: FIFO
        self._processing: dict[K, PushRequest | None] = {}
        self._ready = asyncio.Event()

    def enqueue(self, key: K, request: PushRequest) -> None:
        if key in self._processing:
            current = self._processing[key]
            self._processing[key] = request if current is None else current.merge(request)
            return
        current_pending = self._pending.get(key)
        self._pending[key] = request if current_pending is None else current_pending.merge(request)
        self._ready.set()

    async def dequeue(self) -> tuple[K, PushRequest]:
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        key = next(iter(self._pending))
        request = self._pending.pop(key)
        self._processing[key] = None
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
