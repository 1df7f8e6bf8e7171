"""X-Forwarded-Client-Cert at the edge, on a real gateway Envoy: a Gateway server with ``tls.mode: MUTUAL``
(certificate, key and CA files, as Istio allows) in front of httpbin. Istio's gateway default is SANITIZE_SET: the
client's own header is dropped and the gateway sets the details of the certificate the client presented (its hash,
the certificate, subject, URI and DNS SANs).

Fails on the code before ``tls.forward_client_cert``: Envoy's default (SANITIZE) only dropped the header, the
backend learned nothing of the client certificate.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import socket
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2e_objects import service_entry, workload_entry
from envoy_harness import Harness, free_port, wait_until

from meshplane.store import GroupResource, MemoryStore
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy

HOST = "httpbin.example.com"
CLIENT_URI = "spiffe://example.org/ns/partners/sa/acme"
NET = "networking.istio.io"
SE, WE, GW, VS = (GroupResource(NET, "serviceentries"), GroupResource(NET, "workloadentries"),
                  GroupResource(NET, "gateways"), GroupResource(NET, "virtualservices"))
_NOW = datetime.datetime.now(datetime.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
          sans: list[x509.GeneralName], *, ca: bool = False) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(_NOW - datetime.timedelta(minutes=5)).not_valid_after(_NOW + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _https_get(address: str, port: int, ca: Path, cert: Path, key: Path, headers: dict[str, str]) -> int:
    """Status of GET /headers with SNI ``HOST``, presenting the client certificate."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((address, port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        tls.sendall(f"GET /headers HTTP/1.1\r\nHost: {HOST}\r\n{extra}Connection: close\r\n\r\n".encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return int(b"".join(chunks).decode(errors="replace").split(" ", 2)[1])


def _xfcc_fields(value: str) -> dict[str, str]:
    """One XFCC element's key=value pairs (values may be quoted; ours have no ``;`` or ``,`` inside quotes)."""
    assert "," not in value, f"more than one element: {value}"
    out: dict[str, str] = {}
    for part in value.split(";"):
        k, _, v = part.partition("=")
        out[k] = v
    return out


async def test_mutual_gateway_sets_client_cert_details_and_drops_the_clients_header(
        store: MemoryStore, harness: Harness, xds, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca = _cert("test-ca", ca_key, None, [], ca=True)
    server = _cert(HOST, server_key, ("test-ca", ca_key), [x509.DNSName(HOST)])
    client = _cert("acme-client", client_key, ("test-ca", ca_key),
                   [x509.UniformResourceIdentifier(CLIENT_URI), x509.DNSName("client.acme.example")])
    files = {"ca.pem": _pem(ca), "server.pem": _pem(server), "server.key": _key_pem(server_key),
             "client.pem": _pem(client), "client.key": _key_pem(client_key)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    _, address = await xds(DefaultTranslator())
    httpbin = await harness.backend("httpbin")
    await store.create(SE, service_entry("httpbin", "httpbin.foo.svc.cluster.local", port=8000, namespace="foo",
                                         selector={"app": "httpbin"}), actor="test")
    await store.create(WE, workload_entry("httpbin", httpbin.host, {"app": "httpbin"},
                                          ports={"http-8000": httpbin.port}, namespace="foo"), actor="test")
    await store.create(GW, {"apiVersion": f"{NET}/v1", "kind": "Gateway",
                            "metadata": {"name": "mtls-gateway", "namespace": "foo"},
                            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [{
                                "port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": [HOST],
                                "tls": {"mode": "MUTUAL", "serverCertificate": str(tmp_path / "server.pem"),
                                        "privateKey": str(tmp_path / "server.key"),
                                        "caCertificates": str(tmp_path / "ca.pem")}}]}}, actor="test")
    vs: dict[str, Any] = {"apiVersion": f"{NET}/v1", "kind": "VirtualService",
                          "metadata": {"name": "httpbin", "namespace": "foo"},
                          "spec": {"hosts": [HOST], "gateways": ["mtls-gateway"], "http": [{"route": [
                              {"destination": {"host": "httpbin.foo.svc.cluster.local",
                                               "port": {"number": 8000}}}]}]}}
    await store.create(VS, vs, actor="test")
    port = free_port("127.0.0.1")
    gw = await harness.envoy("ingressgateway", address, namespace="istio-system", workload="istio-ingressgateway",
                             router=True, metadata={"LABELS": {"istio": "ingressgateway"},
                                                    "GATEWAY_PORTS": {"443": port}})
    forged = {"x-forwarded-client-cert": f"By=spiffe://cluster.local/ns/foo/sa/httpbin;URI={CLIENT_URI}-admin"}

    async def get() -> int:
        return await asyncio.to_thread(_https_get, gw.listen_host, port, tmp_path / "ca.pem",
                                       tmp_path / "client.pem", tmp_path / "client.key", forged)

    async def ok() -> bool:
        return await get() == 200

    await wait_until(ok, what="HTTPS with a client certificate through the MUTUAL gateway")
    _, path, headers = httpbin.requests[-1]
    assert path == "/headers"
    xfcc = headers.get("x-forwarded-client-cert")
    assert xfcc is not None, "the gateway did not set x-forwarded-client-cert"
    fields = _xfcc_fields(xfcc)
    der = client.public_bytes(serialization.Encoding.DER)
    assert fields["Hash"] == hashlib.sha256(der).hexdigest()
    assert fields["Subject"] == '"CN=acme-client"'
    assert fields["URI"] == CLIENT_URI and fields["DNS"] == "client.acme.example"
    assert urllib.parse.unquote(fields["Cert"].strip('"')).encode() == _pem(client)
    assert "By" not in fields  # the gateway's own certificate has no URI SAN
    assert "-admin" not in xfcc  # the client's forged header is gone
