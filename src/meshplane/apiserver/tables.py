"""Server-side Table output for ``kubectl get``: the printer columns of each kind, rendered as kubectl expects.

kubectl prints cells verbatim, so the server renders them: dates as human durations (``5m12s``), arrays and
objects as compact JSON (``["mesh"]``), exactly as the CRD table convertor of kube-apiserver does.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from meshplane.api.kinds import KindInfo, PrinterColumn

TABLE_ACCEPT = "as=Table"

_FILTER_RE = re.compile(r'^(\w+)\[\?\(@\.(\w+)==["\']([^"\']*)["\']\)\]$')


def human_duration(seconds: float) -> str:
    """Kubernetes' HumanDuration: coarser as the age grows."""
    if seconds < -1:
        return "<invalid>"
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        rest = s % 60
        return f"{m}m{rest}s" if rest else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        rest = m % 60
        return f"{h}h{rest}m" if rest else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        rest = h % 24
        return f"{h // 24}d{rest}h" if rest else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        days = (h // 24) % 365
        return f"{h // 24 // 365}y{days}d" if days else f"{h // 24 // 365}y"
    return f"{h // 24 // 365}y"


def _segments(path: str) -> list[str]:
    """A printer column's path split at the dots that separate fields: not inside ``[...]`` (a filter such as
    ``[?(@.type=="Connected")]`` holds dots of its own) and not escaped (``app\\.kubernetes\\.io``)."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    quote = ""
    i = 0
    while i < len(path):
        c = path[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'" and depth:
            quote = c
        elif c == "\\" and i + 1 < len(path) and path[i + 1] == ".":
            cur.append(".")
            i += 2
            continue
        elif c == "[":
            depth += 1
        elif c == "]":
            depth = max(depth - 1, 0)
        elif c == "." and not depth:
            if cur:
                parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    if cur:
        parts.append("".join(cur))
    return parts


def evaluate_path(obj: Any, path: str) -> Any:
    """The value at a printer column's path: dotted fields, plus ``name[?(@.key=="v")]`` list filters."""
    cur = obj
    for part in _segments(path):
        if cur is None:
            return None
        m = _FILTER_RE.match(part)
        if m:
            field, key, value = m.groups()
            items = cur.get(field) if isinstance(cur, dict) else None
            if not isinstance(items, list):
                return None
            cur = next((i for i in items if isinstance(i, dict) and str(i.get(key)) == value), None)
            continue
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def render_cell(column: PrinterColumn, obj: dict[str, Any], now: datetime) -> Any:
    value = evaluate_path(obj, column.json_path)
    if value is None:
        return "<none>" if column.type != "date" else "<unknown>"
    if column.type == "date":
        try:
            ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return "<invalid>"
        return human_duration((now - ts).total_seconds())
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if column.type in ("integer", "number", "boolean"):
        return value
    return str(value)


def column_definitions(info: KindInfo) -> list[dict[str, Any]]:
    cols = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": "Name must be unique within a namespace. Cannot be updated.",
            "priority": 0,
        }
    ]
    cols += [
        {"name": c.name, "type": c.type, "format": c.format, "description": c.description, "priority": c.priority}
        for c in info.columns
    ]
    return cols


def partial_metadata(obj: dict[str, Any], api_version: str) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def table(
    info: KindInfo,
    objects: list[dict[str, Any]],
    *,
    resource_version: str,
    continue_token: str = "",
    include_headers: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    at = now or datetime.now(UTC)
    rows = [
        {
            "cells": [o["metadata"]["name"], *(render_cell(c, o, at) for c in info.columns)],
            "object": partial_metadata(o, info.api_version(info.preferred_version)),
        }
        for o in objects
    ]
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "rows": rows}
    out["columnDefinitions"] = column_definitions(info) if include_headers else None
    return out


def wants_table(accept: str) -> bool:
    """True when the client's Accept header prefers a meta.k8s.io Table (kubectl's table mode)."""
    first = accept.split(",")[0] if accept else ""
    return TABLE_ACCEPT in first and "g=meta.k8s.io" in first
