"""Types shared by every store backend and its callers.

Objects are stored as plain JSON-shaped Kubernetes objects (``dict``): the store does not know Istio's schemas,
the API layer does. What the store owns is the bookkeeping Kubernetes clients rely on: ``metadata.uid``,
``metadata.resourceVersion`` (one monotonic counter across every kind), ``metadata.generation`` (bumped only when
something outside ``metadata`` and ``status`` changes), ``metadata.creationTimestamp``, optimistic concurrency,
watch history and the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from meshplane.model.resources import GroupResource, JSONObject

__all__ = ["AuditRecord", "EventType", "GroupResource", "JSONObject", "ObjectKey", "WatchEvent"]


class ObjectKey(NamedTuple):
    """Where one object lives. ``namespace`` is ``""`` for cluster-scoped kinds."""

    gr: GroupResource
    namespace: str
    name: str


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. ``obj`` is the object after the change (for DELETED: its last state, with the delete's rv)."""

    type: EventType
    gr: GroupResource
    obj: JSONObject
    rv: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One accepted change, as kept by the store: who did what to which object, and the generations around it."""

    rv: int
    timestamp: str
    actor: str
    verb: str  # create | update | delete
    group: str
    resource: str
    namespace: str
    name: str
    uid: str
    old_generation: int | None
    new_generation: int | None
