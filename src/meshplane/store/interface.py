"""The narrow interface every store backend implements (SQLite now, etcd later).

Callers (the API server, the xDS config controller) depend on this Protocol only. Semantics every backend keeps:

- One resourceVersion counter for the whole store, strictly increasing; each accepted change gets the next value.
- ``create`` fills ``metadata.uid``, ``resourceVersion``, ``generation`` (1) and ``creationTimestamp``.
- ``update`` replaces the object. ``uid`` and ``creationTimestamp`` are kept whatever the caller sent;
  ``generation`` is bumped only when something outside ``metadata`` and ``status`` changed. An update that changes
  nothing at all returns the stored object unchanged: no new resourceVersion, no event, no audit record.
- ``expected_rv`` is an optimistic-concurrency precondition: ``Conflict`` when it is not the stored version.
- A write returns only once it is durable (a crash right after cannot lose it).
- ``watch(since_rv=N)`` yields every change with rv > N (replayed from history, then live) in rv order.
  ``since_rv=None`` first yields a synthetic ADDED for every current object, then live changes. A ``since_rv`` older
  than the compacted history raises ``Expired`` (on the first ``__anext__``, or from ``watch`` itself).
  A watch whose consumer falls too far behind live changes also ends with ``Expired`` (its buffer is bounded so a
  stalled client never holds writers or other watchers up); the answer is the same: list again, watch from there.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Protocol

from meshplane.store.types import AuditRecord, GroupResource, JSONObject, WatchEvent


class Watch(Protocol):
    """A live subscription. Iterate it for events; ``close`` ends it (iteration then stops)."""

    def __aiter__(self) -> AsyncIterator[WatchEvent]: ...

    async def __anext__(self) -> WatchEvent: ...

    def close(self) -> None: ...


class Store(Protocol):
    async def start(self) -> None:
        """Open the backend and load state. Must be called before anything else."""

    async def close(self) -> None:
        """Flush and close. Open watches end."""

    @property
    def current_rv(self) -> int:
        """The resourceVersion of the latest durable change (0 for an empty store)."""

    async def create(self, gr: GroupResource, obj: JSONObject, *, actor: str) -> JSONObject: ...

    async def update(
        self, gr: GroupResource, obj: JSONObject, *, actor: str, expected_rv: int | None = None
    ) -> JSONObject: ...

    async def delete(
        self, gr: GroupResource, namespace: str, name: str, *, actor: str, expected_rv: int | None = None
    ) -> JSONObject: ...

    def get(self, gr: GroupResource, namespace: str, name: str) -> JSONObject | None:
        """The durable object, or None. Returned objects must not be mutated by the caller."""

    def list(self, gr: GroupResource, namespace: str | None = None) -> tuple[builtins.list[JSONObject], int]:
        """Objects of one collection (all namespaces when ``namespace`` is None), sorted by (namespace, name),
        and the store's resourceVersion at which that list is consistent."""

    def watch(
        self, gr: GroupResource | None = None, namespace: str | None = None, since_rv: int | None = None
    ) -> Watch:
        """Changes to one collection (``gr=None``: every collection), optionally in one namespace."""

    def audit(self, since_rv: int = 0, limit: int = 500) -> builtins.list[AuditRecord]:
        """Audit records with rv > since_rv, oldest first."""
