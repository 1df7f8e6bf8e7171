"""The pieces every typed spec is made of: the one duration parser, enums, and the generic decoder.

Why one decoder: a field's meaning used to be read three times (schema, validator, builder), and the readings
disagreed (``timeout: .5s`` validated, then reached Envoy as "no timeout"). Now the schema is the only source:
``tools/gen_spec_types.py`` turns it into frozen dataclasses plus a field table per class, and :func:`decode`
walks that table. Validation and translation both see the decoded value, so they cannot disagree.

Decoding is total for what structural validation admits; anything else raises :class:`DecodeError` naming the
field path (``spec.http[0].timeout``). Fields absent from the JSON decode to ``None`` (scalars, messages,
enums), ``()`` (lists) or ``{}`` (maps): absence stays visible, as proto3's wrapper types keep it in Istio.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NewType, TypeVar

__all__ = [
    "DURATION_FORMS",
    "DecodeError",
    "DecodeLog",
    "Duration",
    "FieldTable",
    "Json",
    "SpecEnum",
    "decode",
    "encode",
    "format_duration",
    "parse_duration",
]

Duration = NewType("Duration", int)
"""A Go/protobuf duration in nanoseconds: the one representation of time spans in specs."""

Json = Mapping[str, Any]
"""A free-form value the schema leaves open (``x-kubernetes-preserve-unknown-fields``)."""


class SpecEnum(enum.StrEnum):
    """Base of every generated enum: the member's value is the JSON text."""


class DecodeError(ValueError):
    """A JSON value does not have the shape its schema gives; ``path`` names the field.

    ``value`` and ``detail`` are set when the value has the right JSON type but does not read as the field's type
    (a duration): admission then reports it as kube reports an invalid value (``Invalid value: "5": <detail>``).
    """

    def __init__(self, path: str, message: str, *, value: Any = None, detail: str = "") -> None:
        self.path = path
        self.message = message
        self.value = value
        self.detail = detail
        super().__init__(f"{path}: {message}")


# --- durations -------------------------------------------------------------------------------------------------

DURATION_FORMS = "must be a valid duration, e.g. 1s, 0.5s, 100ms or 1m30s"

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
          "h": 3600 * 10**9}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> Duration | None:
    """Nanoseconds of a duration as Go's ``time.ParseDuration`` reads it; None if ``text`` is not one.

    Istio decodes duration fields with Go's parser, so every form it admits is admitted here with the same value:
    ``1.5s``, ``100ms``, ``1h30m``, ``.5s``, ``1.s``, ``+1s``, ``0``. Fractions below a nanosecond truncate.
    """
    if text == "0":
        return Duration(0)
    if not text:
        return None
    sign = 1
    if text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
        if text == "0":
            return Duration(0)
    if not text:
        return None
    pos, total = 0, 0
    while pos < len(text):
        m = _PART.match(text, pos)
        if m is None or m.group(1) in ("", "."):
            return None
        whole, _, frac = m.group(1).partition(".")
        unit = _UNITS[m.group(2)]
        total += int(whole or "0") * unit
        if frac:
            total += int(frac) * unit // 10 ** len(frac)
        pos = m.end()
    return Duration(sign * total)


def format_duration(ns: int) -> str:
    """The shortest exact text of ``ns`` that :func:`parse_duration` reads back (``500ms``, ``1.5s``, ``0s``)."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    for unit, size in (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns % size == 0:
            return f"{sign}{ns // size}{unit}"
    whole, frac = divmod(ns, 10**9)
    return f"{sign}{whole}.{frac:09d}".rstrip("0") + "s"


@dataclass(slots=True)
class DecodeLog:
    """What admission's decode noticed: the fields it could not decode; the paths where a field's value came under
    its alias (``spec.http[0].mirror_percent``), for rules that name the field as the user spelled it; and each
    duration's text as written, for messages that quote the value (``Invalid value: "0.0005s"``); and the lists
    and maps given empty (``rules: []``), which decode like absent ones but which Istio's webhook tells apart."""

    errors: list[DecodeError] = field(default_factory=list)
    aliases: set[str] = field(default_factory=set)
    durations: dict[str, str] = field(default_factory=dict)
    empty: set[str] = field(default_factory=set)


# --- the decoder -----------------------------------------------------------------------------------------------

# A field's type, as the generator writes it:
#   ("s",) str · ("i",) int · ("f",) float · ("b",) bool · ("d",) Duration · ("is",) int | str · ("j",) free-form
#   ("e", EnumClass) · ("m", SpecClass) · ("l", inner) list -> tuple · ("M", inner) map -> dict
FieldType = tuple[Any, ...]
FieldTable = tuple[tuple[str, str, FieldType], ...]  # (json name, attribute, type)

T = TypeVar("T")

_FIELDS: dict[type, FieldTable] = {}


def register(cls: type[T], fields: FieldTable) -> None:
    """Record the field table of a generated class (called by the generated module only)."""
    _FIELDS[cls] = fields


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _bad(path: str, expected: str, value: Any) -> DecodeError:
    return DecodeError(path, f"must be of type {expected}, not {_type_name(value)}")


def _value(ft: FieldType, value: Any, path: str, log: DecodeLog | None) -> Any:
    tag = ft[0]
    if tag == "s":
        if isinstance(value, str):
            return value
        raise _bad(path, "string", value)
    if tag == "i":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _bad(path, "integer", value)
    if tag == "f":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _bad(path, "number", value)
    if tag == "b":
        if isinstance(value, bool):
            return value
        raise _bad(path, "boolean", value)
    if tag == "d":
        if not isinstance(value, str):
            raise _bad(path, "string (a duration)", value)
        ns = parse_duration(value)
        if log is not None:
            log.durations[path] = value
        if ns is None:
            raise DecodeError(path, f"{value!r} is not a valid duration, e.g. 1s, 0.5s, 100ms or 1m30s",
                              value=value, detail=DURATION_FORMS)
        return ns
    if tag == "is":
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise _bad(path, "integer or string", value)
    if tag == "j":
        return value
    if tag == "e":
        cls = ft[1]
        if not isinstance(value, str):
            raise _bad(path, "string", value)
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise DecodeError(path, f"unsupported value {value!r}: supported values are {allowed}") from None
    if tag == "m":
        return decode(ft[1], value, path, log)
    if tag == "l":
        if not isinstance(value, list | tuple):
            raise _bad(path, "array", value)
        if log is not None and not value:
            log.empty.add(path)
        inner = ft[1]
        return tuple(_value(inner, v, f"{path}[{i}]", log) for i, v in enumerate(value))
    if tag == "M":
        if not isinstance(value, Mapping):
            raise _bad(path, "object", value)
        if log is not None and not value:
            log.empty.add(path)
        inner = ft[1]
        return {str(k): _value(inner, v, f"{path}[{k}]", log) for k, v in value.items()}
    raise AssertionError(f"unknown field type {tag!r}")  # pragma: no cover - the generator writes the tags


def decode(cls: Callable[..., T], data: Any, path: str = "spec", log: DecodeLog | None = None) -> T:
    """``data`` (decoded JSON) as an instance of the generated spec class ``cls``.

    Unknown keys are ignored (structural validation prunes or refuses them before storage; objects stored by an
    older version keep decoding). ``null`` is the same as absent, as in protobuf JSON.

    With ``log`` (admission's decode), decoding does not stop at a bad field: its error goes to ``log.errors``,
    the field is left absent and the rest decodes, so every bad field is reported at once and the rules run on
    what did decode; a value given under a field's alias (its proto name) is noted in ``log.aliases``.

    :raises DecodeError: a value of the wrong type, or a string that is not a valid duration or enum value
        (without ``log``; with it, only when ``data`` itself is not an object).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _bad(path, "object", data)
    fields = _FIELDS[cls]  # type: ignore[index]
    kwargs: dict[str, Any] = {}
    if log is None:
        for json_name, attr, ft in fields:
            value = data.get(json_name)
            if value is None or attr in kwargs:  # an alias (proto name) after its JSON name: the JSON name wins
                continue
            kwargs[attr] = _value(ft, value, f"{path}.{json_name}", None)
        return cls(**kwargs)
    named: set[str] = set()
    for json_name, attr, ft in fields:
        alias = attr in named
        named.add(attr)
        value = data.get(json_name)
        if value is None or attr in kwargs:
            continue
        field_path = f"{path}.{json_name}"
        if alias:
            log.aliases.add(field_path)
        try:
            kwargs[attr] = _value(ft, value, field_path, log)
        except DecodeError as e:
            log.errors.append(e)
    return cls(**kwargs)


def _json(ft: FieldType, value: Any) -> Any:
    tag = ft[0]
    if tag == "d":
        return format_duration(value)
    if tag == "f":
        return int(value) if float(value).is_integer() else value
    if tag == "e":
        return value.value
    if tag == "m":
        return encode(value)
    if tag == "l":
        return [_json(ft[1], v) for v in value]
    if tag == "M":
        return {k: _json(ft[1], v) for k, v in value.items()}
    return value


def encode(obj: Any) -> dict[str, Any]:
    """A decoded spec object back as JSON (its JSON field names, durations as :func:`format_duration` writes them).

    For messages that quote a whole value (``Invalid value: {"httpStatus":500,"grpcStatus":"UNAVAILABLE"}``); the
    store keeps the JSON the user sent, never this.
    """
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for json_name, attr, ft in _FIELDS[type(obj)]:
        if attr in seen:
            continue
        seen.add(attr)
        value = getattr(obj, attr)
        if value is None or value == () or (isinstance(value, Mapping) and not value):
            continue
        out[json_name] = _json(ft, value)
    return out
