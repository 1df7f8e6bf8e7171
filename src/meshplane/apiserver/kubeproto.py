"""Just enough of Kubernetes' protobuf encoding to accept a Namespace from ``kubectl create namespace``.

kubectl sends built-in kinds (Namespace is the only one meshplane serves) as ``application/vnd.kubernetes.protobuf``:
the magic ``k8s\\x00`` followed by a ``runtime.Unknown`` message whose ``raw`` field holds the object. Only the
fields meshplane keeps are decoded: ``metadata.name``, ``metadata.generateName`` and ``metadata.labels``.
"""

from __future__ import annotations

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
