"""Revisioned, watchable storage of API objects; see ``interface`` for the contract every backend keeps."""

from meshplane.store.errors import AlreadyExists, Conflict, Expired, NotFound, StorageFailure, StoreError
from meshplane.store.interface import Store, Watch
from meshplane.store.memory import MemoryStore
from meshplane.store.sqlite import SqliteStore
from meshplane.store.types import AuditRecord, EventType, GroupResource, JSONObject, ObjectKey, WatchEvent

__all__ = [
    "AlreadyExists",
    "AuditRecord",
    "Conflict",
    "EventType",
    "Expired",
    "GroupResource",
    "JSONObject",
    "MemoryStore",
    "NotFound",
    "ObjectKey",
    "SqliteStore",
    "StorageFailure",
    "Store",
    "StoreError",
    "Watch",
    "WatchEvent",
]
