"""OpenAPI v3 documents per group-version, as kube-apiserver serves them for custom resources.

kubectl reads them for two things: whether the server validates fields itself (the ``fieldValidation`` parameter
on each PATCH operation; without it kubectl falls back to protobuf OpenAPI v2 and fails) and ``kubectl explain``
(``components.schemas`` entries carrying ``x-kubernetes-group-version-kind``). The PATCH operation lists no
strategic-merge content type, so ``kubectl apply`` computes JSON merge patches, as for any custom resource.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from meshplane.api.kinds import KindInfo, KindRegistry

SchemaFor = Callable[[KindInfo], dict[str, Any]]

_QUERY = [
    {"name": "dryRun", "in": "query", "schema": {"type": "string"}, "uniqueItems": True},
    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}, "uniqueItems": True},
    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}, "uniqueItems": True},
]
_PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]


def schema_name(info: KindInfo, version: str) -> str:
    reversed_group = ".".join(reversed(info.group.split("."))) if info.group else "io.k8s.api.core"
    return f"{reversed_group}.{version}.{info.kind}"


def _gvk(info: KindInfo, version: str) -> dict[str, str]:
    return {"group": info.group, "version": version, "kind": info.kind}


def group_version_document(
    registry: KindRegistry, group: str, version: str, schema_for: SchemaFor
) -> dict[str, Any] | None:
    kinds = [k for k in registry if k.group == group and version in k.versions]
    if not kinds:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for info in kinds:
        name = schema_name(info, version)
        schema = dict(schema_for(info))
        schema["x-kubernetes-group-version-kind"] = [_gvk(info, version)]
        schemas[name] = schema
        ref = {"$ref": f"#/components/schemas/{name}"}
        body = {"content": {"application/json": {"schema": ref}}}
        ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
        base = f"/apis/{group}/{version}"
        coll = f"{base}/namespaces/{{namespace}}/{info.plural}" if info.namespaced else f"{base}/{info.plural}"
        gvk = _gvk(info, version)
        paths[coll] = {
            "get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "list", "responses": ok},
            "post": {
                "x-kubernetes-group-version-kind": gvk,
                "x-kubernetes-action": "post",
                "parameters": _QUERY,
                "requestBody": body,
                "responses": ok,
            },
        }
        item = {
            "get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "get", "responses": ok},
            "put": {
                "x-kubernetes-group-version-kind": gvk,
                "x-kubernetes-action": "put",
                "parameters": _QUERY,
                "requestBody": body,
                "responses": ok,
            },
            "patch": {
                "x-kubernetes-group-version-kind": gvk,
                "x-kubernetes-action": "patch",
                "parameters": [*_QUERY, {"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                "requestBody": {"content": {t: {"schema": {"type": "object"}} for t in _PATCH_TYPES}},
                "responses": ok,
            },
            "delete": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "delete", "responses": ok},
        }
        paths[f"{coll}/{{name}}"] = item
        paths[f"{coll}/{{name}}/status"] = {k: v for k, v in item.items() if k != "delete"}
    return {
        "openapi": "3.0.0",
        "info": {"title": "meshplane", "version": f"{group}/{version}"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def index(registry: KindRegistry, hashes: dict[str, str]) -> dict[str, Any]:
    """The discovery document of /openapi/v3: one entry per group-version, with a content hash."""
    paths: dict[str, Any] = {}
    for group, versions in registry.groups().items():
        for v in versions:
            key = f"apis/{group}/{v}"
            h = hashes.get(key, "")
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}" + (f"?hash={h}" if h else "")}
    return {"paths": paths}


def content_hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
