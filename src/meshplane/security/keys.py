"""The workload side of issuance: a private key generated where the workload runs, and the CSR that asks for its
SPIFFE id.

Why here and not in the agent: the CA's tests, the e2e tests and the agent must build CSRs exactly the way the CA
checks them (one URI SAN, nothing else), so the format lives next to the CA. The key object never shows its
private half: ``repr`` names only the identity, and the PEM is produced only on an explicit call (for the SDS
secret handed to the local Envoy).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshplane.security.identity import SpiffeId


class WorkloadKey:
    """An ECDSA P-256 key pair for one workload identity."""

    __slots__ = ("_key", "identity")

    def __init__(self, identity: SpiffeId, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.identity = identity
        self._key = key or ec.generate_private_key(ec.SECP256R1())

    def __repr__(self) -> str:
        return f"WorkloadKey({self.identity.uri!r}, <private key hidden>)"

    def csr_pem(self) -> bytes:
        """A CSR with an empty subject and the SPIFFE id as its only (URI) SAN, as Istio's agent sends."""
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([]))
               .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self.identity.uri)]),
                              critical=True)
               .sign(self._key, hashes.SHA256()))
        return csr.public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        """The PKCS#8 PEM of the private key: only for the local Envoy (SDS over a Unix socket)."""
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())

    def public_key_matches(self, cert_pem: bytes) -> bool:
        """Whether ``cert_pem`` (the first certificate of a chain) certifies this key."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        mine = self._key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
        theirs = cert.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        return mine == theirs
