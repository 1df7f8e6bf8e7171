"""Just enough of Kubernetes' protobuf encoding to accept a Namespace from ``kubectl create namespace``.

kubectl sends built-in kinds (meshplane serves Namespace and Secret) as ``application/vnd.kubernetes.protobuf``:
the magic ``k8s\\x00`` followed by a ``runtime.Unknown`` message whose ``raw`` field holds the object. Only the
fields meshplane keeps are decoded: ``metadata.name``, ``generateName``, ``namespace``, ``labels`` and
``annotations``, and a Secret's ``type``, ``data``, ``stringData`` and ``immutable`` (``kubectl create secret``).
"""

from __future__ import annotations

import base64
from typing import Any

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class ProtoDecodeError(ValueError):
    """The body is not a well-formed Kubernetes protobuf envelope."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data):
            raise ProtoDecodeError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ProtoDecodeError("varint too long")


def _fields(data: bytes) -> list[tuple[int, bytes | int]]:
    out: list[tuple[int, bytes | int]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            out.append((field, value))
        elif wire == 2:
            length, i = _varint(data, i)
            if i + length > len(data):
                raise ProtoDecodeError("truncated field")
            out.append((field, data[i : i + length]))
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ProtoDecodeError(f"unsupported wire type {wire}")
    return out


def _bytes(fields: list[tuple[int, bytes | int]], number: int) -> list[bytes]:
    return [v for f, v in fields if f == number and isinstance(v, bytes)]


def _str(fields: list[tuple[int, bytes | int]], number: int) -> str:
    return b"".join(_bytes(fields, number)[:1]).decode()


def _map(fields: list[tuple[int, bytes | int]], number: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for entry in _bytes(fields, number):
        kv = _fields(entry)
        out[_str(kv, 1)] = b"".join(_bytes(kv, 2)[:1])
    return out


def _object(body: bytes) -> list[tuple[int, bytes | int]]:
    if not body.startswith(MAGIC):
        raise ProtoDecodeError("missing the k8s protobuf magic prefix")
    raw = _bytes(_fields(body[len(MAGIC) :]), 2)
    if not raw:
        raise ProtoDecodeError("the envelope carries no object")
    return _fields(raw[0])


def decode_secret(body: bytes) -> dict[str, Any]:
    """The core v1 Secret in a protobuf request body, as a JSON-shaped object (``data`` base64 as in JSON)."""
    obj = _object(body)
    meta_raw = _bytes(obj, 1)
    meta = _fields(meta_raw[0]) if meta_raw else []
    metadata: dict[str, Any] = {"name": _str(meta, 1)}
    for key, number in (("generateName", 2), ("namespace", 3)):
        if value := _str(meta, number):
            metadata[key] = value
    for key, number in (("labels", 11), ("annotations", 12)):
        if entries := _map(meta, number):
            metadata[key] = {k: v.decode() for k, v in entries.items()}
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata}
    if data := _map(obj, 2):
        out["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    if type_ := _str(obj, 3):
        out["type"] = type_
    if string_data := _map(obj, 4):
        out["stringData"] = {k: v.decode() for k, v in string_data.items()}
    immutable = [v for f, v in obj if f == 5 and isinstance(v, int)]
    if immutable:
        out["immutable"] = bool(immutable[0])
    return out


def decode_namespace(body: bytes) -> dict[str, Any]:
    """The Namespace in a protobuf request body, as a JSON-shaped object."""
    if not body.startswith(MAGIC):
        raise ProtoDecodeError("missing the k8s protobuf magic prefix")
    unknown = _fields(body[len(MAGIC) :])
    raw = _bytes(unknown, 2)
    if not raw:
        raise ProtoDecodeError("the envelope carries no object")
    obj = _fields(raw[0])
    meta_raw = _bytes(obj, 1)
    meta = _fields(meta_raw[0]) if meta_raw else []
    name = b"".join(_bytes(meta, 1)[:1]).decode()
    generate = b"".join(_bytes(meta, 2)[:1]).decode()
    labels: dict[str, str] = {}
    for entry in _bytes(meta, 11):
        kv = _fields(entry)
        key = b"".join(_bytes(kv, 1)[:1]).decode()
        labels[key] = b"".join(_bytes(kv, 2)[:1]).decode()
    metadata: dict[str, Any] = {"name": name}
    if generate:
        metadata["generateName"] = generate
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
