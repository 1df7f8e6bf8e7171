"""How objects look on the way in and out of the API, independent of HTTP.

In: server-owned metadata a client cannot set is dropped, status written through the main resource is ignored
(status is a subresource, as for Istio's CRDs), credentials are kept out of kubectl's last-applied annotation.
Out: ``apiVersion`` is the version the client asked through (all versions of a kind share one schema), and
credential fields are never returned.
"""

from __future__ import annotations

import base64
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
# A Secret's data values are bytes to typed clients (kubectl create decodes the answer): the placeholder must be
# valid base64 itself; it decodes to "<redacted>".
REDACTED_B64 = base64.b64encode(REDACTED.encode()).decode()
# Maps whose every value is a credential (a core Secret's data): the keys stay visible, the values never do.
SECRET_MAPS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "secrets"): ("data", "stringData"),
}


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


def _redact_maps(info: KindInfo, obj: Any) -> None:
    for name in SECRET_MAPS.get((info.group, info.plural), ()):
        values = obj.get(name) if isinstance(obj, dict) else None
        if isinstance(values, dict):
            obj[name] = dict.fromkeys(values, REDACTED_B64 if name == "data" else REDACTED)


def redact(info: KindInfo, obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` without credential values (only when the kind has any)."""
    fields = secret_fields(info)
    if not fields and not info.has_secrets:
        return obj
    out = copy.deepcopy(obj)
    for path in fields:
        _pop_path(out, path)
    _redact_maps(info, out)
    annotations = out.get("metadata", {}).get("annotations") or {}
    if LAST_APPLIED in annotations:
        annotations[LAST_APPLIED] = scrub_last_applied(info, annotations[LAST_APPLIED])
    return out


def scrub_last_applied(info: KindInfo, text: str) -> str:
    fields = secret_fields(info)
    if not fields and not info.has_secrets:
        return text
    try:
        applied = json.loads(text)
    except ValueError:
        return text
    for path in fields:
        _pop_path(applied, path)
    _redact_maps(info, applied)
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
    if isinstance(annotations, dict) and LAST_APPLIED in annotations and (secret_fields(info) or info.has_secrets):
        meta["annotations"] = {**annotations, LAST_APPLIED: scrub_last_applied(info, annotations[LAST_APPLIED])}
    out["metadata"] = meta
    if (info.group, info.plural) == ("", "secrets") and isinstance(out.get("stringData"), dict):
        # As kube-apiserver: stringData is write-only, merged into data (base64) and not stored.
        data = dict(out.get("data") or {})
        for key, value in out.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        out["data"] = data
    out["apiVersion"] = info.api_version(info.preferred_version)
    out["kind"] = info.kind
    return out


def restore_redacted(info: KindInfo, new: dict[str, Any], live: dict[str, Any] | None) -> dict[str, Any]:
    """Values a client sent back as ``<redacted>`` (it read them so: a patch or replace of a read object) keep
    their stored value instead of becoming the placeholder."""
    if live is None:
        return new
    for name in SECRET_MAPS.get((info.group, info.plural), ()):
        values, old = new.get(name), live.get(name)
        if isinstance(values, dict) and isinstance(old, dict):
            for key, value in values.items():
                if value in (REDACTED, REDACTED_B64) and key in old:
                    values[key] = old[key]
    for path in secret_fields(info):
        cur_new: Any = new
        cur_old: Any = live
        for p in path[:-1]:
            cur_new = cur_new.get(p) if isinstance(cur_new, dict) else None
            cur_old = cur_old.get(p) if isinstance(cur_old, dict) else None
        if isinstance(cur_new, dict) and isinstance(cur_old, dict) and cur_new.get(path[-1]) == REDACTED \
                and path[-1] in cur_old:
            cur_new[path[-1]] = cur_old[path[-1]]
    return new
