"""REST paths of API objects, resolved through the kind registry the API server itself serves from.

Why the registry and not paths written by each caller: the registry is the one place that knows a kind's group,
plural, served versions and scope, so any kind the server serves can be read or written here (a manifest's
``config`` may hold any of them) and a kind the server does not serve fails before a request is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from meshplane.api.kinds import KindInfo, KindRegistry
from meshplane.client.errors import InvalidRequest

DEFAULT_NAMESPACE = "default"  # where a namespaced object without metadata.namespace goes, as kubectl does


@dataclass(frozen=True, slots=True)
class Target:
    """One object (or, with ``name`` empty, one collection) of a kind, at one API version."""

    info: KindInfo
    api_version: str
    namespace: str  # "" for a cluster-scoped kind
    name: str = ""

    @property
    def collection(self) -> str:
        prefix = f"/apis/{self.api_version}" if self.info.group else f"/api/{self.api_version}"
        if self.namespace:
            return f"{prefix}/namespaces/{quote(self.namespace, safe='')}/{self.info.plural}"
        return f"{prefix}/{self.info.plural}"

    def item(self, subresource: str = "") -> str:
        return f"{self.collection}/{quote(self.name, safe='')}" + (f"/{subresource}" if subresource else "")

    def describe(self, verb: str, subresource: str = "") -> str:
        """What a message calls this call: ``delete WorkloadEntry default/web-0``, ``list MemberCluster``."""
        if not self.name:
            return f"{verb} {self.info.kind}" + (f" in {self.namespace}" if self.namespace else "")
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{verb} {self.info.kind} {where}" + (f" {subresource}" if subresource else "")


def resolve(registry: KindRegistry, verb: str, api_version: str, kind: str, namespace: str | None = None,
            name: str = "") -> Target:
    """The target of ``verb`` on a kind; InvalidRequest when the API does not serve that kind at that version."""
    info = registry.by_api_version(api_version, kind)
    if info is None:
        raise InvalidRequest(f"{verb} {kind or '?'}", f"kind not served by the API ({api_version or 'no apiVersion'})")
    ns = (namespace or DEFAULT_NAMESPACE) if info.namespaced else ""
    return Target(info, api_version, ns, name)


def target_of(registry: KindRegistry, verb: str, obj: Mapping[str, Any]) -> Target:
    """The target an object names in its apiVersion, kind and metadata; its name is required."""
    md = obj.get("metadata") or {}
    t = resolve(registry, verb, str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""),
                str(md.get("namespace") or ""), str(md.get("name") or ""))
    if not t.name:
        raise InvalidRequest(f"{verb} {t.info.kind}", "metadata.name is required")
    return t
