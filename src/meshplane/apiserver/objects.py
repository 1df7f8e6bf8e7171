"""How objects look on the way in and out of the API, independent of HTTP.

In: server-owned metadata a client cannot set is dropped, status written through the main resource is ignored
(status is a subresource, as for Istio's CRDs), credentials are kept out of kubectl's last-applied annotation.
Out: ``apiVersion`` is the version the client asked through (all versions of a kind share one schema), and
credential fields are never returned.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from meshplane.api.kinds import KindInfo

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# Fields holding credentials, per (group, plural): stored, used by the control plane, never read back.
SECRET_FIELDS: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("meshplane.io", "memberclusters"): (("spec", "kubeconfig"), ("spec", "token")),
}
REDACTED = "<redacted>"


def secret_fields(info: KindInfo) -> tuple[tuple[str, ...], ...]:
    return SECRET_FIELDS.get((info.group, info.plural), ())


def _pop_path(obj: Any, path: tuple[str, ...]) -> bool:
    cur = obj
    for p in path[:-1]:
        if not isinstance(cur, dict):
            return False
        cur = cur.get(p)
    if isinstance(cur, dict) and path[-1] in cur:
        cur[path[-1]] = REDACTED
        return True
    return False


def redact(info: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` without credential values (only when the kind has any)."""
    fields = secret_fields(info)
    if not fields:
        return obj
    out = copy.deepcopy(obj)
    for path in fields:
        _pop_path(out, path)
    annotations = out.get("metadata", {}).get("annotations") or {}
    if LAST_APPLIED in annotations:
        annotations[LAST_APPLIED] = scrub_last_applied(info, annotations[LAST_APPLIED])
    return out


def scrub_last_applied(info: KindInfo, text: str) -> str:
    fields = secret_fields(info)
    if not fields:
        return text
    try:
        applied = json.loads(text)
    except ValueError:
        return text
    for path in fields:
        _pop_path(applied, path)
    return json.dumps(applied, separators=(",", ":"))


def outgoing(info: KindInfo, obj: dict[str, Any], version: str) -> dict[str, Any]:
    out = redact(info, obj)
    if out is obj:
        out = dict(obj)
    out["apiVersion"] = info.api_version(version)
    out["kind"] = info.kind
    return out


_SERVER_OWNED = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp", "selfLink")


def incoming(info: KindInfo, obj: dict[str, Any], *, keep_rv: bool = False) -> dict[str, Any]:
    """The parts of a client's object the store should see."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    for key in _SERVER_OWNED:
        if key == "resourceVersion" and keep_rv:
            continue
        meta.pop(key, None)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations and secret_fields(info):
        meta["annotations"] = {**annotations, LAST_APPLIED: scrub_last_applied(info, annotations[LAST_APPLIED])}
    out["metadata"] = meta
    out["apiVersion"] = info.api_version(info.preferred_version)
    out["kind"] = info.kind
    return out
