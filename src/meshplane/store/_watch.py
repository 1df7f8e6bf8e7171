"""Watch fan-out shared by every backend: one hub, one bounded queue per watch.

Why a bounded queue that ends the watch instead of back-pressure: the committer publishes each batch from the event
loop, and a watcher that does not read (a stalled HTTP client) must never slow writers or the other watchers down.
So publishing never waits: each watch buffers at most ``queue_size`` live events, and when one more arrives the watch
is ended with ``Expired``, exactly like a watch whose resourceVersion was compacted away. The client's reaction is the
one every Kubernetes client already has for 410 Gone: list again and watch from the list's resourceVersion. This is
what kube-apiserver's watch cache does with a watcher whose channel stays full, in spirit (it closes the watch).

Ordering: a watch subscribes to the hub *before* the store takes the snapshot or copies the history it starts with,
then drops any live event whose rv is not above the last rv it delivered, so the hand-over from history to live events
has neither a gap nor a duplicate, whatever the interleaving.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from meshplane.store.errors import Expired, StoreError
from meshplane.store.types import GroupResource, WatchEvent

DEFAULT_WATCH_QUEUE_SIZE = 10_000


def event_namespace(event: WatchEvent) -> str:
    namespace = event.obj.get("metadata", {}).get("namespace") or ""
    assert isinstance(namespace, str)
    return namespace


class StoreWatch:
    """One subscription: first its initial events (a snapshot or replayed history), then live events.

    Iteration ends (``StopAsyncIteration``) after ``close()`` or after the store closes. A watch that asked for
    compacted history, or whose live queue overflowed, raises ``Expired`` once from ``__anext__`` and then ends.
    Events share their ``obj`` with the store and every other watch: never mutate them.
    """

    def __init__(
        self,
        hub: WatchHub,
        gr: GroupResource | None,
        namespace: str | None,
        queue_size: int,
    ) -> None:
        self._hub = hub
        self.gr = gr
        self.namespace = namespace
        self._queue_size = queue_size
        self._initial: deque[WatchEvent] = deque()
        self._live: deque[WatchEvent] = deque()
        self._last_rv = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: StoreError | None = None
        self._closed = False

    # -- set-up by the store (synchronously, inside one event-loop step) ---------------------------------------------

    def begin(self, initial: Iterable[WatchEvent], last_rv: int) -> None:
        """Events to deliver before live ones; live events with rv <= ``last_rv`` are already covered by them."""
        self._initial.extend(initial)
        self._last_rv = last_rv

    def fail(self, error: StoreError) -> None:
        """End the watch with ``error``: the next ``__anext__`` raises it, the ones after end the iteration."""
        self._error = error
        self._initial.clear()
        self._live.clear()
        self._wake()

    def matches(self, event: WatchEvent) -> bool:
        if self.gr is not None and event.gr != self.gr:
            return False
        return self.namespace is None or event_namespace(event) == self.namespace

    # -- called by the hub ----------------------------------------------------------------------------------------

    def offer(self, event: WatchEvent) -> bool:
        """Queue a live event (the hub has already matched the group/resource). False: overflowed, unsubscribe me."""
        if self._closed or self._error is not None:
            return False
        if self.namespace is not None and event_namespace(event) != self.namespace:
            return True
        if len(self._live) >= self._queue_size:
            # The client relists and watches again from the list's rv; see the module docstring.
            self.fail(Expired(self._last_rv, event.rv))
            return False
        self._live.append(event)
        self._wake()
        return True

    def end(self) -> None:
        """The store closed: iteration stops."""
        self._closed = True
        self._initial.clear()
        self._live.clear()
        self._wake()

    # -- the Watch protocol -----------------------------------------------------------------------------------------

    def __aiter__(self) -> StoreWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._error is not None:
                error, self._error = self._error, None
                self._closed = True
                raise error
            if self._initial:
                event = self._initial.popleft()
                # Replayed history advances the position; a snapshot's synthetic ADDED events are all at or below
                # the snapshot's rv, which ``begin`` already set.
                self._last_rv = max(self._last_rv, event.rv)
                return event
            while self._live:
                event = self._live.popleft()
                if event.rv > self._last_rv:
                    self._last_rv = event.rv
                    return event
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        self._hub.unsubscribe(self)
        self.end()

    @property
    def last_rv(self) -> int:
        """The rv up to which this watch has delivered changes."""
        return self._last_rv

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class WatchHub:
    """Fans committed events out to the watches, indexed by group/resource (``None``: every collection)."""

    def __init__(self) -> None:
        self._by_gr: dict[GroupResource | None, set[StoreWatch]] = {}

    def subscribe(self, watch: StoreWatch) -> None:
        self._by_gr.setdefault(watch.gr, set()).add(watch)

    def unsubscribe(self, watch: StoreWatch) -> None:
        watches = self._by_gr.get(watch.gr)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._by_gr[watch.gr]

    def publish(self, event: WatchEvent) -> None:
        overflowed: list[StoreWatch] = []
        for key in (event.gr, None):
            for watch in self._by_gr.get(key, ()):
                if not watch.offer(event):
                    overflowed.append(watch)
        for watch in overflowed:
            self.unsubscribe(watch)

    def close_all(self) -> None:
        watches = [w for ws in self._by_gr.values() for w in ws]
        self._by_gr.clear()
        for watch in watches:
            watch.end()

    def __len__(self) -> int:
        return sum(len(ws) for ws in self._by_gr.values())
