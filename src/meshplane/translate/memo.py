"""The push context's memo: one typed table per kind of derived value, each saying what survives which push.

Why: proxies that see the same thing share built resources (and their serialized bytes), and an endpoint-only push
must rebuild only what depends on endpoints. Before, the memo was one dict of ad-hoc tuple keys written and read
across modules, with the survival rule a set of key prefixes kept elsewhere. Now each module declares the
:class:`Slot`\\ s it owns, and the slot states its rule:

- ``endpoint_free``: the value depends on config and the service list, never on endpoints; kept across an
  endpoint-only push (:meth:`PushMemo.after_endpoint_push`).
- ``host_of``: the value belongs to one host's endpoints (a ClusterLoadAssignment); kept across an endpoint-only
  push that names the hosts whose endpoints changed, unless its host is one of them.
- neither: rebuilt after any change.

The memo is private state of one PushContext: it never changes what the context means.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, eq=False)
class Slot(Generic[K, V]):
    """One table of the memo: values of type ``V`` by keys of type ``K`` (compared by identity of the slot)."""

    name: str
    endpoint_free: bool = False
    host_of: Callable[[K], str | None] | None = None  # the host whose endpoints the value holds, if any

    def __repr__(self) -> str:
        return f"Slot({self.name})"


class PushMemo:
    """The tables of one push context."""

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[Slot[Any, Any], dict[Any, Any]] = {}

    def get(self, slot: Slot[K, V], key: K) -> V | None:
        table = self._tables.get(slot)
        return None if table is None else table.get(key)

    def put(self, slot: Slot[K, V], key: K, value: V) -> V:
        self._tables.setdefault(slot, {})[key] = value
        return value

    def get_or_build(self, slot: Slot[K, V], key: K, build: Callable[[], V]) -> V:
        table = self._tables.setdefault(slot, {})
        if key in table:
            return table[key]  # type: ignore[no-any-return]
        value = table[key] = build()
        return value

    def entries(self, slot: Slot[K, V]) -> Mapping[K, V]:
        """A read-only view of one table (diagnosis and tests)."""
        return MappingProxyType(self._tables.get(slot, {}))

    def after_endpoint_push(self, changed: frozenset[str] | None) -> PushMemo:
        """The entries a context with the same config and services but new endpoints may keep (see the module)."""
        out = PushMemo()
        for slot, table in self._tables.items():
            if slot.endpoint_free:
                out._tables[slot] = dict(table)
            elif slot.host_of is not None and changed is not None:
                host_of = slot.host_of
                kept = {k: v for k, v in table.items() if (h := host_of(k)) is not None and h not in changed}
                if kept:
                    out._tables[slot] = kept
        return out
