"""Gateway TLS with ``credentialName``, end to end on the local runtime: a self-signed certificate (made here with
``cryptography``) stored through the API as a ``kubernetes.io/tls`` Secret, a Gateway with an HTTPS server on 443
naming it, a VirtualService bound to the Gateway. The gateway's agent fetches the credential from the control
plane (bootstrap token) and serves it to its Envoy over its local SDS.

Checked with real processes and a real Envoy: an HTTPS request with SNI to the gateway is answered by ratings and
the gateway presents exactly that certificate; the key never shows up in API reads (get, list, watch), the logs or
the status output. Waiting is bounded by generous deadlines; nothing asserts how long anything took.
"""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_runtime_support import eventually, meshplane, running_mesh

pytestmark = [pytest.mark.envoy]

HOST = "ratings.example.com"

MANIFEST = """\
name: gwtls
clusters: [{name: c1, network: network-1, region: region-1, zone: zone-a}]
security: {mtls: true}
workloads:
- name: istio-ingressgateway
  namespace: istio-system
  role: gateway
  labels: {istio: ingressgateway}
  ports: [443]
- name: ratings-v1
  namespace: default
  labels: {app: ratings, version: v1}
  serviceAccount: ratings
  ports: [{port: 9080, name: http, protocol: HTTP}]
  command: ["{python}", "-m", "meshplane.runtime.demoapp", "--service", "ratings", "--listen", "{listen}"]
  readiness: {httpGet: {path: /healthz}}
services:
- {name: ratings, namespace: default, ports: [{port: 9080, name: http}], selector: {app: ratings}}
"""

GATEWAY = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
           "metadata": {"name": "ratings-gw", "namespace": "istio-system"},
           "spec": {"selector": {"istio": "ingressgateway"},
                    "servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": [HOST],
                                 "tls": {"mode": "SIMPLE", "credentialName": "ratings-cred"}}]}}
VIRTUAL_SERVICE = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                   "metadata": {"name": "ratings", "namespace": "default"},
                   "spec": {"hosts": [HOST], "gateways": ["istio-system/ratings-gw"],
                            "http": [{"route": [{"destination": {"host": "ratings.default.svc.cluster.local",
                                                                 "port": {"number": 9080}}}]}]}}


def self_signed(host: str) -> tuple[bytes, bytes]:
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


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    manifest = tmp_path / "gwtls.yaml"
    manifest.write_text(MANIFEST)
    with running_mesh(manifest, tmp_path / "home") as running:
        yield running


def post(api: str, path: str, obj: dict[str, Any]) -> None:
    req = urllib.request.Request(f"{api}{path}", data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201


def read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def https_get(address: str, port: int, ca_pem: bytes) -> tuple[int, bytes, str]:
    """(status, the certificate the gateway presented (DER), body) of GET / with SNI ``HOST``."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    with socket.create_connection((address, port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        der = tls.getpeercert(binary_form=True) or b""
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
                    .encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    text = b"".join(chunks).decode(errors="replace")
    return int(text.split(" ", 2)[1]), der, text


def test_gateway_serves_credential_name_certificate(mesh: tuple[Path, dict[str, Any]]) -> None:
    home, st = mesh
    api = st["api"]
    cert, key = self_signed(HOST)
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "ratings-cred", "namespace": "istio-system"},
              "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}}
    post(api, "/api/v1/namespaces/istio-system/secrets", secret)
    post(api, "/apis/networking.istio.io/v1/namespaces/istio-system/gateways", GATEWAY)
    post(api, "/apis/networking.istio.io/v1/namespaces/default/virtualservices", VIRTUAL_SERVICE)
    gw = next(w for w in st["workloads"] if w["workload"] == "istio-ingressgateway")
    expected = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    seen: dict[str, Any] = {}

    def served() -> bool:
        seen["r"] = https_get(gw["address"], 8443, cert)
        return seen["r"][0] == 200

    eventually(served, "an HTTPS request with SNI through the gateway")
    _, der, body = seen["r"]
    assert der == expected, "the gateway presented another certificate"
    assert '"ratings"' in body

    # The key is never shown back: get, list, watch, status; nor logged.
    key_b64 = base64.b64encode(key).decode()
    key_line = key.decode().splitlines()[1]
    texts = [read(f"{api}/api/v1/namespaces/istio-system/secrets/ratings-cred"),
             read(f"{api}/api/v1/secrets"), read(f"{api}/api/v1/namespaces/istio-system/secrets"),
             read(f"{api}/api/v1/secrets?watch=true&timeoutSeconds=1"),
             meshplane("status", "-o", "json", "--home", str(home)).stdout,
             meshplane("audit", "-o", "json", "--home", str(home)).stdout]
    got = json.loads(texts[0])
    assert sorted(got["data"]) == ["tls.crt", "tls.key"]
    logs = [p for p in home.rglob("*") if p.is_file() and (p.suffix in (".log", ".json") or "log" in p.name)]
    assert logs, "no log files found under the runtime home"
    texts += [p.read_text(errors="replace") for p in logs]
    for text in texts:
        assert key_b64[:48] not in text and key_line not in text
