"""Kubernetes' label rules for callers outside the API layer (the local runtime's manifest), so that a label the
API would refuse later is refused where it is written, naming the field."""

from __future__ import annotations

from meshplane.api import _formats as fmt


def label_error(key: str, value: str) -> str | None:
    """Why ``key: value`` is not a valid Kubernetes label, or None."""
    err = fmt.qualified_name(key)
    if err:
        return f"key {key!r}: {err}"
    err = fmt.label_value(value)
    if err:
        return f"value {value!r}: {err}"
    return None
