"""Bootstrap tokens: how a workload proves, before it has a certificate, which identity it may ask for.

A token is bound to one namespace and service account and expires. It is ``mpt1.<payload>.<mac>`` where the
payload is base64url JSON ``{"ns", "sa", "exp", "jti"}`` and the MAC is HMAC-SHA256 under a key that only the
control plane holds (a 0600 file next to the CA). Why HMAC and not random tokens stored hashed: every control
plane process that shares the key (API server, signing service, replicas) can verify a token without a shared
table, and nothing secret is ever written to the store. Revocation is by ``jti`` (kept in memory by the
verifier); issuance and verification are pure functions of the key and the clock.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from meshplane.security.errors import TokenRejected

PREFIX = "mpt1"
KEY_FILE = "token-hmac.key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class TokenIssuer:
    """Issues and verifies bootstrap tokens under one HMAC key."""

    def __init__(self, key: bytes, clock: Callable[[], datetime.datetime] = _utcnow) -> None:
        if len(key) < 32:
            raise ValueError("token key must be at least 32 bytes")
        self._key = key
        self._clock = clock
        self._revoked: set[str] = set()

    def __repr__(self) -> str:
        return "TokenIssuer(<key hidden>)"

    @classmethod
    def load_or_create(cls, directory: Path, clock: Callable[[], datetime.datetime] = _utcnow) -> TokenIssuer:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / KEY_FILE
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        return cls(path.read_bytes(), clock)

    def issue(self, namespace: str, service_account: str,
              ttl: datetime.timedelta = datetime.timedelta(hours=1)) -> str:
        exp = int((self._clock() + ttl).timestamp())
        payload = json.dumps({"ns": namespace, "sa": service_account, "exp": exp, "jti": secrets.token_hex(8)},
                             separators=(",", ":"), sort_keys=True).encode()
        body = f"{PREFIX}.{_b64(payload)}"
        return f"{body}.{_b64(self._mac(body))}"

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()

    def verify(self, token: str) -> tuple[str, str]:
        """(namespace, service account) the token is bound to; :class:`TokenRejected` otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise TokenRejected("malformed bootstrap token")
        body = f"{parts[0]}.{parts[1]}"
        try:
            mac = _unb64(parts[2])
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, json.JSONDecodeError):
            raise TokenRejected("malformed bootstrap token") from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise TokenRejected("bootstrap token signature does not verify")
        if not isinstance(claims, dict) or not all(k in claims for k in ("ns", "sa", "exp", "jti")):
            raise TokenRejected("malformed bootstrap token")
        if int(claims["exp"]) <= self._clock().timestamp():
            raise TokenRejected(f"bootstrap token for {claims['ns']}/{claims['sa']} expired")
        if str(claims["jti"]) in self._revoked:
            raise TokenRejected(f"bootstrap token for {claims['ns']}/{claims['sa']} was revoked")
        return str(claims["ns"]), str(claims["sa"])

    def revoke(self, token: str) -> None:
        parts = token.split(".")
        if len(parts) == 3:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self._revoked.add(str(json.loads(_unb64(parts[1]))["jti"]))
