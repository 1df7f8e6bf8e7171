"""Objects not yet applied (``meshplane analyze -f``), validated as the API would and merged over a snapshot.

Why as ``istioctl analyze -f`` does: a file is judged in the mesh it will join, so a VirtualService in a file may
name a DestinationRule subset that already exists, and one in the file replaces the live object of the same kind,
namespace and name. An object the API would refuse is an IST0106 message (the API's own error text) and takes no
part in the rest of the analysis; a kind meshplane does not serve is IST0106 too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from meshplane.analysis.context import AnalysisInput, SchemaError
from meshplane.api.errors import InvalidObject, StrictDecodingError
from meshplane.api.kinds import KindRegistry, default_registry
from meshplane.api.validation import validate
from meshplane.model.config import ConfigSnapshot
from meshplane.model.resources import GroupResource
from meshplane.model.service import RegistrySnapshot
from meshplane.model.spec import RESOURCES, ConfigObject, DecodeError, decode_resource


@dataclass(frozen=True, slots=True)
class Submitted:
    """One object of a file: its JSON and where it came from (``bookinfo.yaml``, shown in messages)."""

    obj: dict[str, Any]
    origin: str = ""


def _meta(obj: dict[str, Any]) -> tuple[str, str, str]:
    md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(md, dict)
    return str(obj.get("kind") or "?"), str(md.get("namespace") or ""), str(md.get("name") or "")


def merged_input(base: ConfigSnapshot, registry: RegistrySnapshot, submitted: Iterable[Submitted], *,
                 default_namespace: str = "default", kinds: KindRegistry | None = None) -> AnalysisInput:
    """``base`` with every valid submitted object in place of the stored one (a missing namespace is
    ``default_namespace``, as kubectl fills it)."""
    kinds = kinds or default_registry()
    replaced: dict[GroupResource, dict[tuple[str, str], ConfigObject[Any]]] = {
        gr: {(o.meta.namespace, o.meta.name): o for o in objs} for gr, objs in base.objects.items()}
    errors: list[SchemaError] = []
    origins: dict[tuple[str, str, str], str] = {}
    for sub in submitted:
        obj = copy.deepcopy(sub.obj)
        kind, ns, name = _meta(obj)
        info = kinds.by_api_version(str(obj.get("apiVersion") or ""), kind)
        if info is None:
            errors.append(SchemaError(kind, ns or default_namespace, name,
                                      f'no matches for kind "{kind}" in version "{obj.get("apiVersion")}"',
                                      sub.origin))
            continue
        if info.namespaced and not ns:
            ns = default_namespace
            obj.setdefault("metadata", {})["namespace"] = ns
        try:
            validate(info, obj, field_validation="Strict")
        except (InvalidObject, StrictDecodingError) as e:
            errors.append(SchemaError(kind, ns, name, str(e), sub.origin))
            continue
        if info.gr not in RESOURCES:  # Secrets, ConfigMaps: nothing to analyze
            continue
        try:
            decoded = decode_resource(info.gr, obj)
        except DecodeError as e:  # pragma: no cover - validation decodes the same way
            errors.append(SchemaError(kind, ns, name, str(e), sub.origin))
            continue
        replaced.setdefault(info.gr, {})[(ns, name)] = decoded
        if sub.origin:
            origins[(kind, ns, name)] = sub.origin
    objects = {gr: tuple(v for _, v in sorted(table.items())) for gr, table in replaced.items()}
    return AnalysisInput(ConfigSnapshot(base.version, objects), registry, tuple(errors), origins)


__all__ = ["Submitted", "merged_input"]
