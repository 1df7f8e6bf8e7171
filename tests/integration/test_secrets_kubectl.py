"""Core v1 Secrets through real kubectl: created as kubectl sends them (protobuf for ``create secret``, JSON for
``apply``), their values never shown back (get, list, watch, last-applied), their keys visible."""

from __future__ import annotations

import base64
import datetime
import json
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshplane.apiserver.objects import REDACTED_B64
from tests.integration.conftest import Kubectl
from tests.support.server import ServerProcess


def self_signed(host: str) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for ``host`` (CN and DNS SAN), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


CERT, KEY = self_signed("gw.example.com")
KEY_BODY = KEY.decode().splitlines()[1]  # a line of the base64 key inside the PEM


def _no_key(text: str) -> None:
    assert KEY_BODY not in text
    assert base64.b64encode(KEY).decode()[:40] not in text


def test_create_secret_tls_never_read_back(kubectl: Kubectl, server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_bytes(CERT)
    (tmp_path / "tls.key").write_bytes(KEY)
    out = kubectl.run("create", "secret", "tls", "gw-cred", "-n", "istio-system",
                      f"--cert={tmp_path / 'tls.crt'}", f"--key={tmp_path / 'tls.key'}")
    assert "created" in out.stdout
    _no_key(out.stdout + out.stderr)
    got = kubectl.run("get", "secret", "gw-cred", "-n", "istio-system", "-o", "json").stdout
    _no_key(got)
    obj = json.loads(got)
    assert obj["type"] == "kubernetes.io/tls"
    assert sorted(obj["data"]) == ["tls.crt", "tls.key"] and set(obj["data"].values()) == {REDACTED_B64}
    listed = kubectl.run("get", "secrets", "-A", "-o", "json").stdout
    _no_key(listed)
    table = kubectl.run("get", "secrets", "-n", "istio-system").stdout
    assert "gw-cred" in table and "kubernetes.io/tls" in table
    with urllib.request.urlopen(f"{server.url}/api/v1/secrets?watch=true&timeoutSeconds=1", timeout=10) as r:
        _no_key(r.read().decode())


def test_apply_string_data_and_patch_keep_values(kubectl: Kubectl, server: ServerProcess) -> None:
    manifest = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                "metadata": {"name": "gw2", "namespace": "default"},
                "stringData": {"tls.crt": CERT.decode(), "tls.key": KEY.decode()}}
    kubectl.run("apply", "-f", "-", input=json.dumps(manifest))
    got = kubectl.run("get", "secret", "gw2", "-o", "json").stdout
    _no_key(got)  # also the last-applied annotation
    obj = json.loads(got)
    assert "stringData" not in obj and sorted(obj["data"]) == ["tls.crt", "tls.key"]
    kubectl.run("label", "secret", "gw2", "team=edge")  # a patch of a read-back object keeps the values
    kubectl.run("apply", "-f", "-", input=json.dumps(manifest))
    bad = {**manifest, "metadata": {"name": "gw3", "namespace": "default"}, "stringData": {"tls.crt": "x"}}
    res = kubectl.run("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert res.returncode != 0 and "tls.key" in res.stderr
