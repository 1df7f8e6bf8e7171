"""A stored config object as translation sees it: typed metadata, typed spec, and the JSON it came from.

Why a wrapper: the store keeps JSON (kubectl round-trips it byte for byte), but nothing past admission should read
it. :func:`decode_object` is the one place where an object's metadata and spec become typed; ``raw`` remains for
the few consumers that hand the object on unchanged (status writers, the API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from meshplane.model.resources import GroupResource
from meshplane.model.spec._base import DecodeError, DecodeLog, decode
from meshplane.model.spec._types import KINDS, RESOURCES

S = TypeVar("S")


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectMeta:
    """The metadata fields the mesh acts on (names, selection, ordering, ownership)."""

    namespace: str = "default"
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    creation_timestamp: str = ""
    generation: int = 0
    resource_version: str = ""
    uid: str = ""

    @property
    def key(self) -> str:
        """``namespace/name``, as Istio names config in messages and references."""
        return f"{self.namespace}/{self.name}"


def _str_map(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}


def object_meta(raw: Mapping[str, Any] | None) -> ObjectMeta:
    """Typed metadata of a stored object (the one reading of ``metadata`` in the product)."""
    md = raw or {}
    gen = md.get("generation")
    return ObjectMeta(
        namespace=str(md.get("namespace") or "default"),
        name=str(md.get("name") or ""),
        labels=_str_map(md.get("labels")),
        annotations=_str_map(md.get("annotations")),
        creation_timestamp=str(md.get("creationTimestamp") or ""),
        generation=gen if isinstance(gen, int) and not isinstance(gen, bool) else 0,
        resource_version=str(md.get("resourceVersion") or ""),
        uid=str(md.get("uid") or ""),
    )


@dataclass(frozen=True, slots=True, eq=False)
class ConfigObject(Generic[S]):
    """One decoded object: ``spec`` is the kind's generated class (``VirtualService``, ``DestinationRule``...)."""

    group: str
    kind: str
    meta: ObjectMeta
    spec: S
    raw: dict[str, Any]  # the stored JSON; callers must not mutate it

    @property
    def key(self) -> str:
        return self.meta.key

    @property
    def order(self) -> tuple[str, str, str]:
        """Istio's precedence among conflicting objects: oldest first, then namespace/name."""
        return (self.meta.creation_timestamp, self.meta.namespace, self.meta.name)


def spec_class(group: str, kind: str) -> type:
    """The generated spec class of a served kind; KeyError if the kind has no typed spec (core kinds)."""
    return KINDS[(group, kind)]


def decode_spec(group: str, kind: str, spec: Any, path: str = "spec", log: DecodeLog | None = None) -> Any:
    """Decode one kind's ``spec`` JSON; :class:`DecodeError` names the bad field (with ``log``: see
    :func:`~meshplane.model.spec.decode`)."""
    return decode(spec_class(group, kind), spec, path, log)


def decode_object(group: str, kind: str, raw: dict[str, Any]) -> ConfigObject[Any]:
    """Decode a stored object of a served kind.

    :raises DecodeError: a field does not have its schema's shape (the path starts with ``spec``).
    :raises KeyError: the kind has no typed spec.
    """
    spec = decode_spec(group, kind, raw.get("spec"))
    return ConfigObject(group, kind, object_meta(raw.get("metadata")), spec, raw)


def decode_resource(gr: GroupResource, raw: dict[str, Any]) -> ConfigObject[Any]:
    """Decode a stored object of collection ``gr`` (the config controller's entry point).

    :raises DecodeError: a field does not have its schema's shape.
    :raises KeyError: the collection has no typed spec.
    """
    kind, cls = RESOURCES[gr]
    spec = decode(cls, raw.get("spec"), "spec")
    return ConfigObject(gr.group, kind, object_meta(raw.get("metadata")), spec, raw)


__all__ = [
    "ConfigObject",
    "DecodeError",
    "ObjectMeta",
    "decode_object",
    "decode_resource",
    "decode_spec",
    "object_meta",
    "spec_class",
]


def condition_status(obj: ConfigObject[Any], ctype: str) -> str | None:
    """The ``status`` (``True``, ``False``, ``Unknown``) of the object's ``status.conditions`` entry of type
    ``ctype``, None when it has none: the one reading of stored conditions past admission (a WorkloadEntry's
    ``Healthy``, which health checks write; ``status`` is not part of the typed spec)."""
    status = obj.raw.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for cond in conditions if isinstance(conditions, list) else ():
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return str(cond.get("status"))
    return None
