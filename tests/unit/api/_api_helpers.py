"""Helpers of the validation tests: build an object of a kind, validate it, look at what came back."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshplane.api.errors import FieldCause, InvalidObject
from meshplane.api.kinds import KindInfo, default_registry
from meshplane.api.validation import validate

DATA = Path(__file__).resolve().parents[2] / "data"
REGISTRY = default_registry()
KINDS: dict[str, KindInfo] = {k.kind: k for k in REGISTRY}


def make(kind: str, spec: Any, *, name: str = "x", namespace: str | None = "default", **meta: Any) -> dict[str, Any]:
    info = KINDS[kind]
    metadata: dict[str, Any] = {"name": name, **meta}
    if namespace is not None and info.namespaced:
        metadata["namespace"] = namespace
    return {"apiVersion": info.api_version(info.preferred_version), "kind": kind, "metadata": metadata,
            "spec": copy.deepcopy(spec)}


def ok(kind: str, spec: Any, **kw: Any) -> list[str]:
    """Validate an object that must pass; return the warnings."""
    return validate(KINDS[kind], make(kind, spec, **kw))


def causes(kind: str, spec: Any, **kw: Any) -> list[FieldCause]:
    """Validate an object that must fail; return the causes."""
    obj = make(kind, spec, **kw)
    with pytest.raises(InvalidObject) as exc:
        validate(KINDS[kind], obj)
    return exc.value.causes


def assert_cause(found: list[FieldCause], field: str, reason: str, text: str = "") -> FieldCause:
    """The cause for ``field`` with ``reason`` (and a message containing ``text``) must be among ``found``."""
    for cause in found:
        if cause.field == field and cause.reason == reason and text in cause.message:
            return cause
    listing = "\n".join(f"  {c.field}: {c.reason}: {c.message}" for c in found)
    raise AssertionError(f"no {reason} cause at {field} (containing {text!r}); found:\n{listing}")


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
