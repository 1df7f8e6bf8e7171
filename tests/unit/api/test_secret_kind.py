"""The core v1 Secret kind: validation that never quotes a value, stringData merged into data, values redacted
on the way out (keys kept), read-back placeholders restored, kubectl's protobuf body decoded."""

from __future__ import annotations

import base64
import json

import pytest

from meshplane.api.errors import InvalidObject
from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate
from meshplane.apiserver import kubeproto, objects

SECRET = default_registry().by_resource("", "v1", "secrets")
KEY = "-----BEGIN PRIVATE KEY-----\nSECRETKEYBYTES\n-----END PRIVATE KEY-----\n"


def _obj(**extra: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cred", "namespace": "istio-system"},
            "type": "kubernetes.io/tls", **extra}


def test_registered_in_the_core_group() -> None:
    assert SECRET is not None and SECRET.namespaced and SECRET.has_secrets and SECRET.api_version("v1") == "v1"


def test_tls_secret_needs_cert_and_key_and_messages_hide_values() -> None:
    assert SECRET is not None
    validate(SECRET, _obj(stringData={"tls.crt": "c", "tls.key": KEY}), field_validation="Strict")
    with pytest.raises(InvalidObject) as e:
        validate(SECRET, _obj(data={"tls.crt": "!!notbase64" + KEY}), field_validation="Strict")
    text = json.dumps([c.__dict__ if hasattr(c, "__dict__") else str(c) for c in e.value.causes], default=str)
    assert "tls.key" in text and "illegal base64" in text and "SECRETKEYBYTES" not in str(e.value)


def test_incoming_merges_string_data_and_outgoing_redacts() -> None:
    assert SECRET is not None
    b64 = base64.b64encode(KEY.encode()).decode()
    annotated = _obj(stringData={"tls.key": KEY}, data={"tls.crt": "Yw=="})
    annotated["metadata"] = {"name": "cred", "annotations": {objects.LAST_APPLIED: json.dumps(_obj(
        stringData={"tls.key": KEY}))}}
    stored = objects.incoming(SECRET, annotated)
    assert "stringData" not in stored and stored["data"] == {"tls.crt": "Yw==", "tls.key": b64}
    assert KEY not in stored["metadata"]["annotations"][objects.LAST_APPLIED].replace("\\n", "\n")
    out = objects.outgoing(SECRET, stored, "v1")
    assert out["data"] == {"tls.crt": objects.REDACTED_B64, "tls.key": objects.REDACTED_B64}
    assert stored["data"]["tls.key"] == b64  # the stored object is untouched
    # A client writes back what it read: the stored values stay.
    back = objects.restore_redacted(SECRET, objects.incoming(SECRET, out), stored)
    assert back["data"] == stored["data"]


def _ld(number: int, payload: bytes) -> bytes:
    return bytes([(number << 3) | 2, len(payload)]) + payload


def test_protobuf_secret_from_kubectl() -> None:
    meta = _ld(1, b"cred") + _ld(3, b"istio-system")
    secret = _ld(1, meta) + _ld(2, _ld(1, b"tls.key") + _ld(2, b"k3y")) + _ld(3, b"kubernetes.io/tls")
    body = kubeproto.MAGIC + _ld(1, _ld(1, b"v1") + _ld(2, b"Secret")) + _ld(2, secret)
    obj = kubeproto.decode_secret(body)
    assert obj["metadata"] == {"name": "cred", "namespace": "istio-system"}
    assert obj["type"] == "kubernetes.io/tls" and obj["data"] == {"tls.key": base64.b64encode(b"k3y").decode()}
