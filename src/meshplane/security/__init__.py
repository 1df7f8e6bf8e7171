"""Workload identity for the mesh: SPIFFE ids, the certificate authority, bootstrap tokens, key/CSR generation and
the audit trail of security decisions.

Pure Python over ``cryptography``: no gRPC (the signing and SDS services that expose this live in
``meshplane.xds``), no store. Private keys are held in memory or in 0600 files and are never part of a
``repr``, a log record or an API object.

Errors (one hierarchy for this boundary)::

    SecurityError
     ├── InvalidIdentity      a SPIFFE id or namespace/service account that cannot be parsed
     ├── CsrRejected          a CSR that is malformed or asks for an identity other than the caller's
     └── TokenRejected        a bootstrap token that is unknown, expired, forged or malformed
"""

from meshplane.security.audit import AuditEvent, AuditTrail
from meshplane.security.ca import CertificateAuthority, IssuedCertificate
from meshplane.security.errors import CsrRejected, InvalidIdentity, SecurityError, TokenRejected
from meshplane.security.identity import SpiffeId
from meshplane.security.keys import WorkloadKey
from meshplane.security.tokens import TokenIssuer

__all__ = [
    "AuditEvent",
    "AuditTrail",
    "CertificateAuthority",
    "CsrRejected",
    "InvalidIdentity",
    "IssuedCertificate",
    "SecurityError",
    "SpiffeId",
    "TokenIssuer",
    "TokenRejected",
    "WorkloadKey",
]
