"""Workload identity for the mesh: SPIFFE ids, the certificate authority, bootstrap tokens, key/CSR generation and
the audit trail of security decisions.

Python over ``cryptography``: no gRPC (the signing, SDS and ext_authz services that expose this live in
``meshplane.rpc``), no asyncio, no network, no store. Private keys are held in memory or in 0600 files and are never
part of a ``repr``, a log record or an API object.

Pure except for the CA's own directory, which it reads and writes (``lint-imports`` keeps the rest out). Only
these calls touch the file system, and only these files (``directory`` is the CA directory, the server's
``<data dir>/ca``):

- ``CertificateAuthority.load_or_create(directory)``: creates ``directory`` (mode 0700); writes ``root-key.pem``
  (0600) and ``root-cert.pem`` (0644) when it makes a new root, or copies a plugged-in root's certificate to
  ``root-cert.pem`` (reading ``root_cert_file``/``root_key_file``, never copying the key) and deletes
  ``ca-cert.pem`` when that root differs from the one there; writes ``ca-key.pem`` (0600) and ``ca-cert.pem``
  (0644) when it makes a new intermediate; reads ``trust-bundle.json``.
- ``CertificateAuthority.rotate_root``: rewrites ``trust-bundle.json`` (first), ``root-key.pem``, ``root-cert.pem``,
  ``ca-key.pem`` and ``ca-cert.pem``.
- ``TokenIssuer.load_or_create(directory)``: creates ``directory`` and, once, ``token-hmac.key`` (0600, 32 random
  bytes); reads it.

Every CA write goes to ``<file>.tmp`` and is renamed over the file, so a crash leaves the old or the new file.

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
