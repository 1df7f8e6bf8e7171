"""AuthorizationPolicy and RequestAuthentication through real Envoys with mTLS identities from meshplane's CA:
ALLOW/DENY by principal, namespace, path, method and header as in Istio's authorization tasks; a dry-run DENY
blocks nothing and Envoy's shadow counters record the would-be denials; a JWT-protected path refuses a missing
(403) or bad (401) token and accepts a good one."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from envoy_harness import Harness
from security_mesh import AP, PA, RA, SecurityMesh

from meshplane.store import MemoryStore
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy

SLEEP = "cluster.local/ns/default/sa/sleep"


@pytest.fixture
async def sec(store: MemoryStore, harness: Harness, xds, tmp_path: Path) -> AsyncIterator[SecurityMesh]:  # type: ignore[no-untyped-def]
    server, address = await xds(DefaultTranslator())
    m = await SecurityMesh(store, harness, server, address, tmp_path).start()
    await m.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, namespace="istio-system")
    yield m
    await m.close()


async def test_allow_and_deny_by_principal_namespace_path_method_header(sec: SecurityMesh) -> None:
    await sec.apply(AP, "AuthorizationPolicy", "reviews-allow", {
        "selector": {"matchLabels": {"app": "reviews"}}, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": [SLEEP]}}], "to": [{"operation": {"methods": ["GET"],
                                                                                   "paths": ["/api/*"]}}]},
            {"from": [{"source": {"namespaces": ["default"]}}], "to": [{"operation": {"paths": ["/public"]}}]},
            {"to": [{"operation": {"paths": ["/header"]}}],
             "when": [{"key": "request.headers[x-token]", "values": ["letmein"]}]},
        ]})
    await sec.apply(AP, "AuthorizationPolicy", "reviews-deny", {
        "selector": {"matchLabels": {"app": "reviews"}}, "action": "DENY", "rules": [
            {"to": [{"operation": {"paths": ["/api/secret"]}}]}]})
    await sec.apply(AP, "AuthorizationPolicy", "reviews-dry-run", {
        "selector": {"matchLabels": {"app": "reviews"}}, "action": "DENY", "rules": [
            {"to": [{"operation": {"paths": ["/api/audit-me"]}}]}]}, annotations={"istio.io/dry-run": "true"})
    reviews = await sec.workload("reviews")
    await sec.workload("sleep", serve=False)
    await sec.workload("intruder", namespace="other", serve=False)
    await sec.synced()
    await sec.eventually("sleep", "/api/x", 200)
    expected = [
        ("sleep", "GET", "/api/x", {}, 200),
        ("sleep", "POST", "/api/x", {}, 403),  # method
        ("sleep", "GET", "/api/secret", {}, 403),  # DENY wins over ALLOW
        ("sleep", "GET", "/public", {}, 200),  # namespace
        ("sleep", "GET", "/other", {}, 403),  # nothing allows it
        ("sleep", "GET", "/header", {"x-token": "letmein"}, 200),  # header condition
        ("sleep", "GET", "/header", {"x-token": "nope"}, 403),
        ("intruder", "GET", "/api/x", {}, 403),  # principal
        ("intruder", "GET", "/public", {}, 403),  # namespace
        ("intruder", "GET", "/header", {"x-token": "letmein"}, 200),
    ]
    for client, method, path, headers, want in expected:
        got = await sec.call(client, path, method=method, headers=headers)
        assert got == want, f"{client} {method} {path} {headers}: {got}, want {want}"
    # Dry run: blocks nothing, but the would-be denials are counted by Envoy's shadow rules.
    for _ in range(3):
        assert await sec.call("sleep", "/api/audit-me") == 200
    stats = await reviews.envoy.stats("rbac")
    shadow = {k: v for k, v in stats.items() if "istio_dry_run_deny_" in k and k.endswith("shadow_denied")}
    assert shadow and max(shadow.values()) == 3, stats
    denied = {k: v for k, v in stats.items() if k.endswith("rbac.denied")}
    assert sum(denied.values()) >= 6, stats


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]) -> str:
    head = _b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": "k1"}).encode())
    body = _b64(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _jwks(key: ec.EllipticCurvePrivateKey) -> str:
    n = key.public_key().public_numbers()
    return json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
                                 "x": _b64(n.x.to_bytes(32, "big")), "y": _b64(n.y.to_bytes(32, "big"))}]})


async def test_jwt_protected_path(sec: SecurityMesh) -> None:
    issuer = "https://issuer.test"
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    await sec.apply(RA, "RequestAuthentication", "jwt", {"selector": {"matchLabels": {"app": "reviews"}},
                                                        "jwtRules": [{"issuer": issuer, "jwks": _jwks(key)}]})
    await sec.apply(AP, "AuthorizationPolicy", "require-jwt", {
        "selector": {"matchLabels": {"app": "reviews"}}, "action": "ALLOW", "rules": [
            {"from": [{"source": {"requestPrincipals": [f"{issuer}/alice"]}}],
             "to": [{"operation": {"paths": ["/secure*"]}}]},
            {"to": [{"operation": {"notPaths": ["/secure*"]}}]}]})
    await sec.workload("reviews")
    await sec.workload("sleep", serve=False)
    await sec.synced()
    await sec.eventually("sleep", "/open", 200)
    exp = int(time.time()) + 3600
    good = _jwt(key, {"iss": issuer, "sub": "alice", "exp": exp})
    bob = _jwt(key, {"iss": issuer, "sub": "bob", "exp": exp})
    forged = _jwt(other, {"iss": issuer, "sub": "alice", "exp": exp})
    assert await sec.call("sleep", "/secure") == 403  # missing token
    assert await sec.call("sleep", "/secure", headers={"authorization": f"Bearer {forged}"}) == 401
    assert await sec.call("sleep", "/secure", headers={"authorization": "Bearer not.a.jwt"}) == 401
    assert await sec.call("sleep", "/secure", headers={"authorization": f"Bearer {bob}"}) == 403
    assert await sec.call("sleep", "/secure", headers={"authorization": f"Bearer {good}"}) == 200
    assert await sec.call("sleep", "/open") == 200
