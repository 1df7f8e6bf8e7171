"""Decoding what clients send: resource paths, query parameters and request bodies.

Kubernetes clients are lenient in different ways (the Python client sends ``watch=True`` and POSTs without a
Content-Type); this module absorbs that, and turns anything undecodable into a 400 Status naming the problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from meshplane.apiserver.status import ApiError, bad_request


@dataclass(frozen=True, slots=True)
class ResourcePath:
    """A parsed /apis or /api path."""

    group: str
    version: str
    namespace: str | None  # None: all namespaces / cluster-scoped
    plural: str
    name: str | None
    subresource: str | None


def parse_resource_path(parts: list[str], group: str, version: str) -> ResourcePath | None:
    """``parts`` is what follows /apis/{group}/{version}/ (or /api/v1/)."""
    ns: str | None = None
    if len(parts) >= 3 and parts[0] == "namespaces":
        ns, parts = parts[1], parts[2:]
    if not parts or len(parts) > 3 or not all(parts):
        return None
    plural = parts[0]
    name = parts[1] if len(parts) > 1 else None
    sub = parts[2] if len(parts) > 2 else None
    return ResourcePath(group, version, ns, plural, name, sub)


def flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def field_validation(request: web.Request) -> str:
    value = request.query.get("fieldValidation", "Warn") or "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise bad_request(f'fieldValidation must be one of "Strict", "Warn", "Ignore", got "{value}"')
    return value


def dry_run(request: web.Request) -> bool:
    values = request.query.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise bad_request(f'unsupported dry run value "{v}": only "All" is supported')
    return bool(values)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large(max_bytes)
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        raise too_large(max_bytes) from e
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    return data


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge", f"the request body is larger than {max_bytes} bytes")


def decode(data: bytes, content_type: str, *, allow_yaml: bool = False) -> Any:
    """JSON (or YAML for apply patches); a missing content type means JSON."""
    if not data.strip():
        raise bad_request("the request body is empty")
    try:
        if allow_yaml and "yaml" in content_type:
            return yaml.safe_load(data)
        return json.loads(data)
    except (ValueError, yaml.YAMLError) as e:
        kind = "YAML" if allow_yaml and "yaml" in content_type else "JSON"
        raise bad_request(f"the body of the request could not be decoded as {kind}: {_short(str(e))}") from e


def decode_object(data: bytes, content_type: str, *, allow_yaml: bool = False) -> dict[str, Any]:
    obj = decode(data, content_type, allow_yaml=allow_yaml)
    if not isinstance(obj, dict):
        raise bad_request(f"the body of the request must be an object, got {type(obj).__name__}")
    return obj


def _short(text: str) -> str:
    return text if len(text) < 300 else text[:300] + "..."


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def metric_labels(request: web.Request, known: Callable[[str, str, str], bool]) -> tuple[str, str]:
    """Kubernetes' ``verb`` and ``resource`` labels of a request, for ``apiserver_request_total``.

    GET is ``get`` with a name, else ``list`` (``watch`` with ``?watch``); a path outside the resource API is
    labelled by its first segment (``management``, ``openapi``, ``apis`` for discovery), so the label set stays
    bounded whatever paths clients try; a resource path of a kind ``known(group, version, plural)`` denies is
    ``unknown``."""
    segments = [s for s in request.path.split("/") if s]
    resource = segments[0] if segments else ""
    named = False
    parts: list[str] | None = None
    group = version = ""
    if len(segments) >= 3 and segments[0] == "apis":
        group, version, parts = segments[1], segments[2], segments[3:]
    elif len(segments) >= 2 and segments[0] == "api":
        version, parts = segments[1], segments[2:]
    if parts:
        path = parse_resource_path(parts, group, version)
        if path is None or not known(group, version, path.plural):
            resource = "unknown"
        else:
            resource = path.plural if path.subresource is None else f"{path.plural}/{path.subresource}"
            named = path.name is not None
    if request.method == "GET":
        verb = "watch" if flag(request, "watch") else ("get" if named else "list")
    else:
        verb = _VERBS.get(request.method, request.method.lower())
    return verb, resource
