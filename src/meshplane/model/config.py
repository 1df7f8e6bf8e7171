"""An immutable view of the mesh configuration (Istio/ASM objects) at one store resourceVersion.

The xDS layer keeps one ConfigSnapshot current from a store watch; translation reads it and never does I/O.
Objects are held decoded (:class:`~meshplane.model.spec.ConfigObject`: typed metadata and spec), so every reader
sees the values admission validated; each object is decoded once, when the controller receives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshplane.model.resources import GroupResource
from meshplane.model.spec import ConfigObject, decode_resource

JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """Identifies one config object across kinds: what a PushRequest says changed."""

    gr: GroupResource
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Decoded objects by collection (the controller keeps them sorted by namespace and name); read-only."""

    version: int
    objects: Mapping[GroupResource, tuple[ConfigObject[Any], ...]] = field(default_factory=dict)

    def of(self, gr: GroupResource) -> tuple[ConfigObject[Any], ...]:
        return self.objects.get(gr, ())

    @classmethod
    def from_json(cls, version: int, objects: Mapping[GroupResource, Iterable[dict[str, Any]]]) -> ConfigSnapshot:
        """A snapshot of stored JSON objects, decoded (tests and tools; the controller decodes as events come).

        :raises meshplane.model.spec.DecodeError: an object does not decode.
        """
        return cls(version, {gr: tuple(decode_resource(gr, o) for o in objs) for gr, objs in objects.items()})
