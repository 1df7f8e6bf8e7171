"""Collects what validation finds about one object: field errors shaped like Kubernetes' and warnings.

Every check reports here instead of raising, so one pass returns every bad field at once. The message texts follow
``k8s.io/apimachinery/pkg/util/validation/field`` (``Invalid value: "abc": ...``, ``Required value``,
``Unsupported value: ...``) because kubectl prints them verbatim.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from meshplane.api.errors import FieldCause
from meshplane.model.spec import encode

INVALID = "FieldValueInvalid"
REQUIRED = "FieldValueRequired"
NOT_SUPPORTED = "FieldValueNotSupported"
TYPE_INVALID = "FieldValueTypeInvalid"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"


def render(value: Any) -> str:
    """A value as kube's field errors print it: strings quoted, numbers bare, large objects by type (a typed spec
    object as its JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = encode(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return json.dumps(value, ensure_ascii=False)
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)
    if len(text) <= 120:
        return text
    return '"object"' if isinstance(value, dict) else '"array"'


class Report:
    """``undecoded`` holds the paths the typed decode reported as invalid: rules see those fields as absent, and a
    field that is there with a bad value is never also reported missing. ``aliases`` holds the paths where the user
    spelled a field by its alias, ``durations`` each duration's text as the user wrote it, ``empty`` the lists and
    maps given empty (see :class:`~meshplane.model.spec.DecodeLog`)."""

    __slots__ = ("aliases", "causes", "durations", "empty", "undecoded", "warnings")

    def __init__(self) -> None:
        self.causes: list[FieldCause] = []
        self.warnings: list[str] = []
        self.undecoded: set[str] = set()
        self.aliases: set[str] = set()
        self.durations: dict[str, str] = {}
        self.empty: set[str] = set()

    def add(self, path: str, reason: str, message: str) -> None:
        self.causes.append(FieldCause(path, reason, message))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.add(path, INVALID, f"Invalid value: {render(value)}: {detail}")

    def required(self, path: str, detail: str = "") -> None:
        if path in self.undecoded:
            return
        self.add(path, REQUIRED, f"Required value: {detail}" if detail else "Required value")

    def forbidden(self, path: str, detail: str) -> None:
        self.add(path, FORBIDDEN, f"Forbidden: {detail}")

    def duplicate(self, path: str, value: Any) -> None:
        self.add(path, DUPLICATE, f"Duplicate value: {render(value)}")

    def not_supported(self, path: str, value: Any, supported: Iterable[Any]) -> None:
        values = ", ".join(render(v) for v in supported)
        self.add(path, NOT_SUPPORTED, f"Unsupported value: {render(value)}: supported values: {values}")

    def type_invalid(self, path: str, actual: str, expected: str) -> None:
        self.add(
            path,
            TYPE_INVALID,
            f'Invalid value: "{actual}": {path} in body must be of type {expected}: "{actual}"',
        )

    def too_long(self, path: str, limit: int) -> None:
        self.add(path, TOO_LONG, f"Too long: may not be more than {limit} bytes")

    def too_many(self, path: str, count: int, limit: int) -> None:
        self.add(path, TOO_MANY, f"Too many: {count}: must have at most {limit} items")

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def deprecated(self, path: str, name: str, replacement: str) -> None:
        self.warn(f'{path}: using deprecated field "{name}"; use "{replacement}"')
