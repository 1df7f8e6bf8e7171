"""The certificate signing service: Istio's ``istio.v1.auth.IstioCertificateService/CreateCertificate`` over gRPC.

Why Istio's shape: its agent and other tools already speak it (CSR in, PEM chain out), and it is tiny. The
messages are built at run time from a descriptor (the proto is not in xds-protos); on the wire they are Istio's:
``IstioCertificateRequest{csr=1, validity_duration=3}`` and ``IstioCertificateResponse{cert_chain=1}`` (leaf,
intermediate, root last). meshplane adds ``trust_bundle=100`` (every trusted root, for root rotation), which Istio
clients ignore as an unknown field.

Authentication: the caller proves the identity it asks for with a bootstrap token (``authorization: Bearer
<token>`` metadata, see ``meshplane.security.tokens``) bound to a namespace and service account; the CA signs only a
CSR for exactly that SPIFFE id. Every issuance and every refusal is recorded in the audit trail with the identities
involved (never the CSR's key or the token). Bind it to loopback or a Unix socket; TLS on this endpoint is for
whoever wires it across hosts.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from meshplane.rpc._serve import serve
from meshplane.security import AuditTrail, CertificateAuthority, CsrRejected, TokenIssuer, TokenRejected
from meshplane.security.audit import CERT_ISSUED, CERT_REFUSED
from meshplane.security.ca import csr_uris

log = logging.getLogger(__name__)

SERVICE = "istio.v1.auth.IstioCertificateService"
METHOD = "CreateCertificate"


def _messages() -> tuple[type[Any], type[Any]]:
    fd = descriptor_pb2.FileDescriptorProto(name="meshplane/istio_ca.proto", package="istio.v1.auth",
                                            syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    req = fd.message_type.add(name="IstioCertificateRequest")
    req.field.add(name="csr", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    req.field.add(name="validity_duration", number=3, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    resp = fd.message_type.add(name="IstioCertificateResponse")
    resp.field.add(name="cert_chain", number=1, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    resp.field.add(name="trust_bundle", number=100, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateResponse")))


CertificateRequest, CertificateResponse = _messages()


def _split_pem(data: bytes) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [p.strip() + "\n" + marker + "\n" for p in data.decode().split(marker) if p.strip()]


class CaService:
    """Verifies the caller's token, signs its CSR with ``ca``, records the outcome in ``audit``."""

    def __init__(self, ca: CertificateAuthority, tokens: TokenIssuer, audit: AuditTrail | None = None,
                 max_ttl: datetime.timedelta = datetime.timedelta(hours=24)) -> None:
        self.ca, self.tokens, self.audit, self.max_ttl = ca, tokens, audit or AuditTrail(), max_ttl

    def generic_handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        return grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.unary_unary_rpc_method_handler(
                self.create_certificate, request_deserializer=CertificateRequest.FromString,
                response_serializer=CertificateResponse.SerializeToString),
        })

    def _refuse(self, subject: str, asked: list[str], peer: str, reason: str) -> None:
        self.audit.record(CERT_REFUSED, subject=subject, target=",".join(asked), reason=reason,
                          details={"peer": peer})
        log.warning("certificate refused: caller=%s asked=%s peer=%s: %s", subject or "?", asked, peer, reason)

    async def create_certificate(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        peer = context.peer() or ""
        csr = str(request.csr).encode()
        asked = csr_uris(csr)
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
                token = value[7:].strip()
        if not token:
            self._refuse("", asked, peer, "no bootstrap token")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a bootstrap token is required")
        try:
            ns, sa = self.tokens.verify(token)
        except TokenRejected as e:
            self._refuse("", asked, peer, str(e))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        identity = self.ca.identity(ns, sa)
        ttl = self.max_ttl
        if int(request.validity_duration) > 0:
            ttl = min(ttl, datetime.timedelta(seconds=int(request.validity_duration)))
        try:
            issued = self.ca.sign_csr(csr, identity, ttl)
        except CsrRejected as e:
            self._refuse(identity.uri, asked, peer, str(e))
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        self.audit.record(CERT_ISSUED, subject=identity.uri, target=identity.uri, reason="csr signed",
                          details={"serial": f"{issued.serial:x}", "notAfter": issued.not_after.isoformat(),
                                   "peer": peer})
        log.info("certificate issued to %s serial %x until %s", identity, issued.serial, issued.not_after)
        roots = _split_pem(issued.trust_bundle_pem)
        return CertificateResponse(cert_chain=[*_split_pem(issued.cert_chain_pem), roots[0]], trust_bundle=roots)


class CaServer:
    """A gRPC server hosting :class:`CaService` (``start("127.0.0.1:0")`` or ``start("unix:/path")``)."""

    def __init__(self, service: CaService) -> None:
        self.service = service
        self._server: grpc.aio.Server | None = None

    async def start(self, address: str) -> int:
        self._server, port = await serve(self.service.generic_handler(), address, "certificate signing service (CA)")
        return port

    async def stop(self, grace: float = 0.5) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


TOKEN_ISSUED = "token.issued"


class SecurityPlane:
    """The control plane's zero-trust parts in one place: the CA (under ``directory``), the bootstrap token issuer
    (its HMAC key next to the CA), the audit trail and the signing service.

    Why one object: the server composes it once and hands it to the management API (tokens, audit, trust bundle)
    and to the gRPC signing endpoint, so both see the same CA, the same token key and the same audit ring."""

    def __init__(self, ca: CertificateAuthority, tokens: TokenIssuer, audit: AuditTrail,
                 max_ttl: datetime.timedelta = datetime.timedelta(hours=24)) -> None:
        self.ca, self.tokens, self.audit = ca, tokens, audit
        self.server = CaServer(CaService(ca, tokens, audit, max_ttl))

    def __repr__(self) -> str:
        return f"SecurityPlane({self.ca!r})"

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str = "cluster.local", *,
                       root_cert_file: Path | None = None, root_key_file: Path | None = None,
                       max_ttl: datetime.timedelta = datetime.timedelta(hours=24)) -> SecurityPlane:
        ca = CertificateAuthority.load_or_create(directory, trust_domain, root_cert_file=root_cert_file,
                                                 root_key_file=root_key_file, default_ttl=max_ttl)
        return cls(ca, TokenIssuer.load_or_create(directory), AuditTrail(), max_ttl)

    def issue_token(self, namespace: str, service_account: str, ttl: datetime.timedelta, *,
                    requested_by: str) -> tuple[str, datetime.datetime]:
        """A bootstrap token for ``namespace``/``service_account`` (validated as a SPIFFE id first) and its expiry.
        Recorded in the audit trail without the token itself."""
        identity = self.ca.identity(namespace, service_account)
        token = self.tokens.issue(namespace, service_account, ttl)
        expires = datetime.datetime.now(datetime.UTC) + ttl
        self.audit.record(TOKEN_ISSUED, subject=requested_by, target=identity.uri, reason="bootstrap token issued",
                          details={"expires": expires.isoformat(timespec="seconds")})
        return token, expires

    async def start(self, address: str) -> int:
        return await self.server.start(address)

    async def stop(self) -> None:
        await self.server.stop()


class CaClient:
    """The caller's side (the agent, tests): send a CSR with a bootstrap token, get the chain and the bundle."""

    def __init__(self, target: str) -> None:
        # Several replicas (``h1:p1,h2:p2``, docs/ha.md): one channel over all of them; pick_first moves to the
        # next address when the one in use goes away.
        addresses = [a.strip() for a in target.split(",") if a.strip()]
        if len(addresses) > 1:
            target = "ipv4:" + ",".join(addresses)
        self._channel = grpc.aio.insecure_channel(target)
        self._call = self._channel.unary_unary(f"/{SERVICE}/{METHOD}",
                                               request_serializer=CertificateRequest.SerializeToString,
                                               response_deserializer=CertificateResponse.FromString)

    async def create_certificate(self, csr_pem: bytes, token: str, ttl_s: int = 0) -> tuple[bytes, bytes]:
        """(cert chain PEM without the root, trust bundle PEM). Raises ``grpc.aio.AioRpcError`` when refused."""
        resp = await self._call(CertificateRequest(csr=csr_pem.decode(), validity_duration=ttl_s),
                                metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        chain = list(resp.cert_chain)
        bundle = list(resp.trust_bundle) or chain[-1:]
        return "".join(chain[:-1] if len(chain) > 1 else chain).encode(), "".join(bundle).encode()

    async def close(self) -> None:
        await self._channel.close(None)
