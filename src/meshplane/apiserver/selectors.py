"""Label and field selectors, as ``kubectl get -l`` and watches with ``fieldSelector`` send them.

Label selector grammar (Kubernetes' ``labels.Parse``): comma-separated requirements, each one of
``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists), ``!k`` (does not exist).
Field selectors support ``metadata.name`` and ``metadata.namespace`` with ``=``, ``==`` and ``!=``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from meshplane.apiserver.status import ApiError, bad_request

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_CMP_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def _eq(key: str, value: str, negate: bool) -> Predicate:
    def pred(labels: Mapping[str, Any]) -> bool:
        return (labels.get(key) == value) != negate

    return pred


def _in(key: str, values: frozenset[str], negate: bool) -> Predicate:
    def pred(labels: Mapping[str, Any]) -> bool:
        return (labels.get(key) in values) != negate

    return pred


def _exists(key: str, negate: bool) -> Predicate:
    def pred(labels: Mapping[str, Any]) -> bool:
        return (key in labels) != negate

    return pred


def parse_label_selector(text: str) -> Predicate:
    """A predicate over a labels map. Raises ApiError(400) naming the bad requirement."""
    reqs: list[Predicate] = []
    for raw in _split_top_level(text):
        m = _CMP_RE.match(raw)
        if m:
            key, op, value = m.groups()
            reqs.append(_eq(key, value, op == "!="))
            continue
        m = _SET_RE.match(raw)
        if not m:
            raise _bad_selector(raw)
        neg, key, op, values = m.groups()
        if op is not None and neg:
            raise _bad_selector(raw)
        if op in ("in", "notin"):
            reqs.append(_in(key, frozenset(v.strip() for v in values.split(",")), op == "notin"))
        else:
            reqs.append(_exists(key, bool(neg)))
    return lambda labels: all(r(labels) for r in reqs)


def _bad_selector(raw: str) -> ApiError:
    return bad_request(f"unable to parse requirement: invalid label selector: {raw.strip()!r}")


_FIELDS = {"metadata.name": "name", "metadata.namespace": "namespace"}


def _field_eq(key: str, value: str, negate: bool) -> Predicate:
    def pred(meta: Mapping[str, Any]) -> bool:
        return bool(meta.get(key, "") == value) != negate

    return pred


def parse_field_selector(text: str) -> Predicate:
    """A predicate over an object's metadata map."""
    reqs: list[Predicate] = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", raw)
        if not m:
            raise bad_request(f"invalid field selector: {raw.strip()!r}")
        field, op, value = m.groups()
        if field not in _FIELDS:
            raise ApiError(400, "BadRequest", f"field label not supported: {field}")
        reqs.append(_field_eq(_FIELDS[field], value, op == "!="))
    return lambda meta: all(r(meta) for r in reqs)
