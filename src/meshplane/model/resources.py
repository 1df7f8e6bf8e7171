"""Names of stored collections, shared by every layer: the API kinds, the store, the config snapshot.

It lives at the bottom (model) so that the API kind registry and the domain model can name collections without
depending on the store.
"""

from __future__ import annotations

from typing import Any, NamedTuple

JSONObject = dict[str, Any]


class GroupResource(NamedTuple):
    """A stored collection: API group (``""`` for the core group) and plural resource name.

    Objects are stored once per GroupResource, whatever API version they were written through: the versions of
    one kind share a schema, and the API layer rewrites ``apiVersion`` on the way out.
    """

    group: str
    resource: str

    def __str__(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource
