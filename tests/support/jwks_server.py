"""A JWKS server on loopback for tests: HTTPS with a test CA of its own (or plain HTTP), serving the keys of the
issuers it is given at ``/jwks.json``; the keys can be replaced while it runs (rotation) and it can be stopped.

Why a CA of its own: the control plane must verify the server (``meshplane server --jwks-ca-bundle FILE``); the
test writes that CA's certificate to a file and passes it, as an operator would pass their issuer's CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.jwt import Issuer


@dataclass
class LoopbackCA:
    """A root CA and one server certificate for ``host`` (an IP SAN), written as PEM files under ``workdir``."""

    workdir: Path
    host: str = "127.0.0.1"
    ca_file: Path = field(init=False)
    cert_file: Path = field(init=False)
    key_file: Path = field(init=False)

    def __post_init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshplane test JWKS CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False, encipher_only=False,
                                           decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.host)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(self.host))]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.workdir / "jwks-ca.pem"
        self.cert_file = self.workdir / "jwks-server.pem"
        self.key_file = self.workdir / "jwks-server-key.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


class JwksServer:
    """Serves ``{"keys": [...]}`` of ``issuers`` at ``/jwks.json``; ``requests`` counts the GETs."""

    def __init__(self, issuers: Sequence[Issuer], *, ca: LoopbackCA | None = None, host: str = "127.0.0.1") -> None:
        self.issuers = list(issuers)
        self.ca, self.host = ca, host
        self.port = 0
        self.requests = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}:{self.port}/jwks.json"

    def set_keys(self, issuers: Sequence[Issuer]) -> None:
        self.issuers = list(issuers)

    async def _jwks(self, _: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response({"keys": [i.jwk() for i in self.issuers]})

    async def start(self, port: int = 0) -> JwksServer:
        app = web.Application()
        app.router.add_get("/jwks.json", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port, ssl_context=self.ca.server_context() if self.ca else None)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def jwks_json(issuers: Sequence[Issuer]) -> str:
    return json.dumps({"keys": [i.jwk() for i in issuers]})
