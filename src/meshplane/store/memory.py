"""A store that keeps everything in memory: the full ``Store`` semantics with no persistence.

Why it exists: unit tests of the layers above (the API server, controllers) need a real store that starts instantly
and leaves nothing behind. It is ``CoreStore`` with a durability step that does nothing, so its behaviour is the
SQLite store's behaviour, minus surviving a restart.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from meshplane.store._core import (
    DEFAULT_AUDIT_LIMIT,
    DEFAULT_HISTORY_LIMIT,
    Change,
    CoreStore,
    LoadedState,
    audit_excess,
    valid_audit_limit,
)
from meshplane.store._watch import DEFAULT_WATCH_QUEUE_SIZE
from meshplane.store.interface import Store
from meshplane.store.types import AuditRecord

__all__ = ["MemoryStore"]


class MemoryStore(CoreStore):
    """``Store`` in memory. ``history_limit``, ``audit_limit`` and ``watch_queue_size`` behave as in
    ``SqliteStore``."""

    def __init__(
        self,
        *,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        clock: Callable[[], datetime] | None = None,
        watch_queue_size: int = DEFAULT_WATCH_QUEUE_SIZE,
        max_batch: int | None = None,
        audit_limit: int = DEFAULT_AUDIT_LIMIT,
    ) -> None:
        super().__init__(
            history_limit=history_limit, clock=clock, watch_queue_size=watch_queue_size, max_batch=max_batch
        )
        self._audit: list[AuditRecord] = []
        self._audit_limit = valid_audit_limit(audit_limit)

    async def _load(self) -> LoadedState:
        return LoadedState(rv=0, compacted_rv=0, objects=(), history=())

    async def _persist(self, batch: Sequence[Change], compacted_rv: int) -> None:
        self._audit.extend(change.audit for change in batch)
        del self._audit[: audit_excess(len(self._audit), self._audit_limit)]

    async def _close_backend(self) -> None:
        pass

    def audit(self, since_rv: int = 0, limit: int = 500) -> list[AuditRecord]:
        start = bisect_right(self._audit, since_rv, key=lambda r: r.rv)
        end = bisect_right(self._audit, self.current_rv, key=lambda r: r.rv)
        return self._audit[start : min(end, start + max(limit, 0))]


if TYPE_CHECKING:  # mypy proves the backend keeps the Protocol

    def _conforms(store: MemoryStore) -> Store:
        return store
