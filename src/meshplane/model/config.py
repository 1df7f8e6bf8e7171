"""An immutable view of the mesh configuration (Istio/ASM objects) at one store resourceVersion.

The xDS layer keeps one ConfigSnapshot current from a store watch; translation reads it and never does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshplane.model.resources import GroupResource

JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """Identifies one config object across kinds: what a PushRequest says changed."""

    gr: GroupResource
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Objects by collection, as stored (plain JSON objects; callers must not mutate them)."""

    version: int
    objects: Mapping[GroupResource, tuple[JSONObject, ...]] = field(default_factory=dict)

    def of(self, gr: GroupResource) -> tuple[JSONObject, ...]:
        return self.objects.get(gr, ())
