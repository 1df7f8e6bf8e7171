"""Errors of the API-object boundary: what validation reports about an object a user sent.

    ApiObjectError
    ├── InvalidObject        semantic or structural errors, one cause per bad field (HTTP 422)
    └── StrictDecodingError  unknown fields under fieldValidation=Strict (HTTP 400)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldCause:
    """One bad field, shaped like a Kubernetes StatusCause.

    ``reason`` is one of Kubernetes' cause types: FieldValueInvalid, FieldValueRequired, FieldValueNotSupported,
    FieldValueDuplicate, FieldValueTypeInvalid, FieldValueForbidden, FieldValueTooLong.
    ``field`` is a path such as ``spec.http[0].route[1].weight``.
    """

    field: str
    reason: str
    message: str


class ApiObjectError(Exception):
    """Base of the errors validation raises."""


class InvalidObject(ApiObjectError):
    def __init__(self, kind: str, name: str, causes: list[FieldCause]) -> None:
        self.kind = kind
        self.name = name
        self.causes = causes
        detail = "; ".join(f"{c.field}: {c.message}" for c in causes)
        super().__init__(f'{kind} "{name}" is invalid: {detail}')


class StrictDecodingError(ApiObjectError):
    def __init__(self, unknown_fields: list[str]) -> None:
        self.unknown_fields = unknown_fields
        super().__init__("strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown_fields))
