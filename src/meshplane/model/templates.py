"""ASM's EnvoyFilterTemplate values, read the same way by admission (which refuses what does not read) and
translation (which makes EnvoyFilters of them): version ranges and the EnvoyFilter a value holds."""

from __future__ import annotations

import re
from typing import Any

import yaml

_VERSION = re.compile(r"^(\d+)\.(\d+)$")
_MIN, _MAX = "MIN_VERSION", "MAX_VERSION"
Version = tuple[int, int]


def parse_version(text: str) -> Version | None:
    """``1.20`` as (1, 20); None for anything else."""
    m = _VERSION.match(text.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_range(text: str) -> tuple[Version, Version] | None:
    """A template value's ``istioVersion`` as an inclusive (low, high) range: ``1.19``, ``1.19-1.21``,
    ``1.19-MAX_VERSION``, ``MIN_VERSION-1.18``; None if it does not read (or low > high)."""
    low_s, sep, high_s = text.strip().partition("-")
    low = (0, 0) if low_s == _MIN else parse_version(low_s)
    if not sep:
        return (low, low) if low is not None and low_s != _MIN else None
    high = (1 << 30, 0) if high_s == _MAX else parse_version(high_s)
    if low is None or high is None or low > high:
        return None
    return low, high


def envoy_filter_spec(value: str) -> dict[str, Any]:
    """The ``spec`` (JSON) of the EnvoyFilter a template value holds (YAML or JSON text); ValueError saying why
    not."""
    try:
        doc = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ValueError(f"not YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("must be an EnvoyFilter (a mapping with apiVersion, kind and spec)")
    kind, api = doc.get("kind"), str(doc.get("apiVersion") or "")
    if kind not in (None, "EnvoyFilter") or (api and not api.startswith("networking.istio.io/")):
        raise ValueError(f"must be a networking.istio.io EnvoyFilter, not {api or '?'} {kind}")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ValueError("has no spec")
    return spec


__all__ = ["Version", "envoy_filter_spec", "parse_range", "parse_version"]
