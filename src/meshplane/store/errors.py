"""The store's error hierarchy: every failure a store operation can report to its caller.

    StoreError
    ├── NotFound          the object does not exist
    ├── AlreadyExists     create of a name that exists
    ├── Conflict          a resourceVersion precondition did not match
    ├── Expired           a watch asked for history that was compacted away (HTTP 410)
    └── StorageFailure    the backend could not persist; nothing of the failed write is visible
"""

from __future__ import annotations

from meshplane.store.types import GroupResource


class StoreError(Exception):
    """Base of every store error."""


class _ObjectError(StoreError):
    def __init__(self, gr: GroupResource, namespace: str, name: str, message: str) -> None:
        super().__init__(message)
        self.gr = gr
        self.namespace = namespace
        self.name = name


class NotFound(_ObjectError):
    def __init__(self, gr: GroupResource, namespace: str, name: str) -> None:
        super().__init__(gr, namespace, name, f'{gr} "{name}" not found')


class AlreadyExists(_ObjectError):
    def __init__(self, gr: GroupResource, namespace: str, name: str) -> None:
        super().__init__(gr, namespace, name, f'{gr} "{name}" already exists')


class Conflict(_ObjectError):
    def __init__(self, gr: GroupResource, namespace: str, name: str) -> None:
        super().__init__(
            gr,
            namespace,
            name,
            f'Operation cannot be fulfilled on {gr} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
        )


class Expired(StoreError):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class StorageFailure(StoreError):
    """The backend failed to persist a write. The write is not visible and was not acknowledged."""
