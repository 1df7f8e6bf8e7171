"""JSON Web Tokens for tests: an issuer's EC P-256 key pair, its JWKS document and tokens it signs (ES256).

Why here: the security e2e tests need tokens Envoy's jwt_authn verifies for real (signature, issuer, audience,
expiry), signed by a key the test controls, so it can also rotate the key or forge a token with another one.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issuer:
    """One signing key of an issuer; ``kid`` names it in the JWKS and in the tokens' header."""

    iss: str
    kid: str = "k1"
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, str]:
        n = self.key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
                "x": b64url(n.x.to_bytes(32, "big")), "y": b64url(n.y.to_bytes(32, "big"))}

    def jwks(self) -> str:
        return json.dumps({"keys": [self.jwk()]})

    def token(self, sub: str = "", *, ttl_s: int = 3600, **claims: Any) -> str:
        """A signed token from this issuer (``iss``, ``sub`` if given, ``exp`` in ``ttl_s``, then ``claims``)."""
        body: dict[str, Any] = {"iss": self.iss, "exp": int(time.time()) + ttl_s}
        if sub:
            body["sub"] = sub
        body.update(claims)
        head = b64url(json.dumps({"alg": "ES256", "typ": "JWT", "kid": self.kid}).encode())
        payload = b64url(json.dumps(body).encode())
        r, s = decode_dss_signature(self.key.sign(f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256())))
        return f"{head}.{payload}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
