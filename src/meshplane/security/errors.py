"""The error hierarchy of ``meshplane.security`` (drawn in the package docstring)."""

from __future__ import annotations


class SecurityError(Exception):
    """Base of every error raised by the security package. Messages never contain key material."""


class InvalidIdentity(SecurityError, ValueError):
    """A SPIFFE id, namespace or service account that does not follow the mesh's identity format."""


class CsrRejected(SecurityError):
    """A certificate signing request that is malformed or asks for an identity the caller has not proven."""


class TokenRejected(SecurityError):
    """A bootstrap token that is unknown, expired, forged or malformed."""
