"""The PATCH flavours kubectl and Kubernetes clients send, applied to plain JSON objects.

- ``merge``: RFC 7386 JSON merge patch (kubectl apply/edit/label/annotate, ``patch --type merge``).
- ``json``: RFC 6902 JSON patch (``patch --type json``).
- ``apply``: server-side apply (``apply --server-side``). Each field manager owns the fields its last applied
  configuration set, recorded in ``metadata.managedFields`` as FieldsV1 (lists are atomic). A new apply sets its
  fields, removes the fields it owned before and no longer sets (unless another manager owns them), and conflicts
  with another applier that owns a field with a different value unless ``force`` is given.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

FieldPath = tuple[str, ...]

# Content types (the first three are the only patch types served; strategic merge patch is refused with 415
# exactly as for custom resources).
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
STRATEGIC = "application/strategic-merge-patch+json"


class PatchError(Exception):
    """A patch that cannot be applied to the object (bad path, failed ``test``, wrong shape)."""


class ApplyConflict(Exception):
    """Server-side apply would take fields another manager owns; ``conflicts`` = (manager, dotted field)."""

    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        self.conflicts = conflicts
        super().__init__(
            f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''}: "
            + "; ".join(f'conflict with "{m}": {f}' for m, f in conflicts)
        )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}: must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return cur, parts[-1]


def _get(doc: Any, path: str) -> Any:
    cur = doc
    for p in _pointer(path):
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return cur


def _index(container: list[Any], key: str, path: str, *, insert: bool) -> int:
    if insert and key == "-":
        return len(container)
    if not key.isdigit():
        raise PatchError(f"invalid array index {key!r} in {path!r}")
    i = int(key)
    if i > len(container) or (not insert and i == len(container)):
        raise PatchError(f"array index {i} out of range in {path!r}")
    return i


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, key = _parent(doc, parts, path)
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, key, path, insert=True), value)
    else:
        raise PatchError(f"cannot add at {path!r}: parent is not a container")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent, key = _parent(doc, parts, path)
    if isinstance(parent, dict):
        if key not in parent:
            raise PatchError(f"path {path!r} does not exist")
        return parent.pop(key)
    if isinstance(parent, list):
        return parent.pop(_index(parent, key, path, insert=False))
    raise PatchError(f"cannot remove {path!r}: parent is not a container")


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 on a copy of ``doc``: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    out = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {i}: must be an object with 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {i} ({kind}): missing 'value'")
        if kind == "add":
            out = _add(out, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(out, path)
        elif kind == "replace":
            _get(out, path)
            if _pointer(path):
                _remove(out, path)
            out = _add(out, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise PatchError(f"operation {i} ({kind}): missing 'from'")
            value = copy.deepcopy(_get(out, op["from"]))
            if kind == "move":
                _remove(out, op["from"])
            out = _add(out, path, value)
        elif kind == "test":
            if _get(out, path) != op["value"]:
                raise PatchError(f"test operation failed at {path!r}")
        else:
            raise PatchError(f"operation {i}: unknown op {kind!r}")
    return out


# ---- server-side apply -------------------------------------------------------------------------------------


def _leaves(config: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    """Paths a configuration sets. Maps recurse; lists, scalars and empty maps are leaves (lists are atomic)."""
    if isinstance(config, dict) and config:
        out: set[FieldPath] = set()
        for k, v in config.items():
            out |= _leaves(v, (*prefix, k))
        return out
    return {prefix}


def owned_paths(config: dict[str, Any]) -> set[FieldPath]:
    """Fields an applied configuration owns: everything but identity (apiVersion, kind, name, namespace)."""
    out: set[FieldPath] = set()
    for key, value in config.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        if key == "metadata":
            meta = value if isinstance(value, dict) else {}
            for mk in ("labels", "annotations"):
                if isinstance(meta.get(mk), dict):
                    out |= _leaves(meta[mk], ("metadata", mk)) if meta[mk] else set()
            continue
        out |= _leaves(value, (key,))
    return out


def to_fields_v1(paths: set[FieldPath]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths):
        cur = root
        for part in path:
            cur = cur.setdefault(f"f:{part}", {})
    return root


def from_fields_v1(fields: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    if not isinstance(fields, dict) or not fields:
        return {prefix} if prefix else set()
    out: set[FieldPath] = set()
    for key, sub in fields.items():
        if key.startswith("f:"):
            out |= from_fields_v1(sub, (*prefix, key[2:]))
    return out


def _lookup(obj: Any, path: FieldPath) -> tuple[bool, Any]:
    cur = obj
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return False, None
        cur = cur[p]
    return True, cur


def _delete(obj: dict[str, Any], path: FieldPath) -> None:
    cur: Any = obj
    parents: list[tuple[dict[str, Any], str]] = []
    for p in path[:-1]:
        if not isinstance(cur, dict) or p not in cur:
            return
        parents.append((cur, p))
        cur = cur[p]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
    # drop maps the removal left empty (but never metadata or spec themselves)
    for parent, key in reversed(parents):
        child = parent.get(key)
        if isinstance(child, dict) and not child and len(parents) > 1:
            parent.pop(key)


def _set(obj: dict[str, Any], path: FieldPath, value: Any) -> None:
    cur = obj
    for p in path[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[path[-1]] = copy.deepcopy(value)


def server_side_apply(
    live: dict[str, Any] | None, config: dict[str, Any], manager: str, *, force: bool, api_version: str
) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` to ``live`` (None: the object does not exist yet)."""
    new_paths = owned_paths(config)
    entries: list[dict[str, Any]] = list((live or {}).get("metadata", {}).get("managedFields") or [])
    mine = next((e for e in entries if e.get("manager") == manager and e.get("operation") == "Apply"), None)
    prev_paths = from_fields_v1(mine.get("fieldsV1")) if mine else set()

    conflicts: list[tuple[str, str]] = []
    others: dict[str, set[FieldPath]] = {}
    for e in entries:
        if e is mine or e.get("operation") != "Apply":
            continue
        paths = from_fields_v1(e.get("fieldsV1"))
        others[str(e.get("manager"))] = paths
        for p in sorted(paths & new_paths):
            _, live_value = _lookup(live, p)
            _, new_value = _lookup(config, p)
            if live_value != new_value:
                conflicts.append((str(e.get("manager")), ".".join(p)))
    if conflicts and not force:
        raise ApplyConflict(conflicts)

    result: dict[str, Any] = (
        copy.deepcopy(live)
        if live is not None
        else {
            "apiVersion": config.get("apiVersion"),
            "kind": config.get("kind"),
            "metadata": {k: v for k, v in (config.get("metadata") or {}).items() if k in ("name", "namespace")},
        }
    )
    owned_by_others = set().union(*others.values()) if others else set()
    for p in prev_paths - new_paths:
        if p not in owned_by_others:
            _delete(result, p)
    for p in new_paths:
        _, value = _lookup(config, p)
        _set(result, p, value)

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    new_entries: list[dict[str, Any]] = []
    for e in entries:
        if e is mine:
            continue
        name = str(e.get("manager"))
        if force and name in others and e.get("operation") == "Apply":
            left = others[name] - new_paths
            if not left:
                continue
            e = {**e, "fieldsV1": to_fields_v1(left)}
        new_entries.append(e)
    new_entries.append(
        {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": mine.get("time", now) if mine and prev_paths == new_paths else now,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(new_paths),
        }
    )
    result.setdefault("metadata", {})["managedFields"] = new_entries
    return result
