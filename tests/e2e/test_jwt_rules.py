"""Every JWTRule field through real Envoys (sleep -> reviews over mTLS, the RequestAuthentication on reviews):
where the token is read (``fromHeaders`` with a prefix, ``fromParams``, ``fromCookies``), what the backend receives
(``outputClaimToHeaders`` with a nested claim, ``outputPayloadToHeader``, the token itself only with
``forwardOriginalToken``), and AuthorizationPolicy conditions on claims whose names contain dots
(``request.auth.claims[foo.bar]`` is one claim) or are nested (``request.auth.claims[nested][key1]``)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from envoy_harness import Harness
from security_mesh import AP, PA, RA, REVIEWS, SecurityMesh

from meshplane.store import MemoryStore
from meshplane.xds.default_translator import DefaultTranslator
from tests.support.jwt import Issuer

pytestmark = pytest.mark.envoy

A, B, C = Issuer("https://a.test"), Issuer("https://b.test"), Issuer("https://c.test")


@pytest.fixture
async def sec(store: MemoryStore, harness: Harness, xds, tmp_path: Path) -> AsyncIterator[SecurityMesh]:  # type: ignore[no-untyped-def]
    server, address = await xds(DefaultTranslator())
    m = await SecurityMesh(store, harness, server, address, tmp_path).start()
    await m.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, namespace="istio-system")
    reviews = {"matchLabels": {"app": "reviews"}}
    await m.apply(RA, "RequestAuthentication", "reviews", {"selector": reviews, "jwtRules": [
        {"issuer": A.iss, "jwks": A.jwks(), "outputPayloadToHeader": "x-jwt-payload",
         "outputClaimToHeaders": [{"header": "X-Jwt-Claim-Foo", "claim": "foo"},
                                  {"header": "x-jwt-nested", "claim": "nested.key1"}]},
        {"issuer": B.iss, "jwks": B.jwks(), "forwardOriginalToken": True},
        {"issuer": C.iss, "jwks": C.jwks(), "fromHeaders": [{"name": "x-jwt-assertion", "prefix": "Token "}],
         "fromParams": ["my_token"], "fromCookies": ["session"],
         "outputClaimToHeaders": [{"header": "x-verified-sub", "claim": "sub"}]},
    ]})
    await m.apply(AP, "AuthorizationPolicy", "claims", {"selector": reviews, "rules": [
        {"to": [{"operation": {"paths": ["/dotted"]}}],
         "when": [{"key": "request.auth.claims[foo.bar]", "values": ["dotted"]}]},
        {"to": [{"operation": {"paths": ["/nested"]}}],
         "when": [{"key": "request.auth.claims[nested][key1]", "values": ["value1"]}]},
        {"to": [{"operation": {"notPaths": ["/dotted", "/nested"]}}]}]})
    await m.workload("reviews")
    await m.workload("sleep", serve=False)
    await m.synced()
    await m.eventually("sleep", "/", 200)
    yield m
    await m.close()


async def _get(sec: SecurityMesh, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Status and the request headers the reviews backend received."""
    e = sec.workloads["sleep"].envoy
    status, body, _ = await sec.h.get(f"http://{e.listen_host}:15001{path}", host=REVIEWS, headers=headers)
    return status, body.get("headers", {})


async def test_output_claims_payload_and_original_token(sec: SecurityMesh) -> None:
    token = A.token("alice", foo="bar", nested={"key1": "value1"})
    status, seen = await _get(sec, "/", {"authorization": f"Bearer {token}"})
    assert status == 200
    assert seen.get("x-jwt-claim-foo") == "bar" and seen.get("x-jwt-nested") == "value1", seen
    payload = seen["x-jwt-payload"]
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"] == "alice"
    assert "authorization" not in seen, seen  # forwardOriginalToken false (the default): stripped
    b_token = B.token("bob")
    status, seen = await _get(sec, "/", {"authorization": f"Bearer {b_token}"})
    assert status == 200 and seen.get("authorization") == f"Bearer {b_token}", seen  # forwardOriginalToken true
    assert "x-jwt-claim-foo" not in seen


async def test_token_locations(sec: SecurityMesh) -> None:
    token = C.token("carol")
    for path, headers in [("/", {"x-jwt-assertion": f"Token {token}"}), (f"/?my_token={token}", {}),
                          ("/", {"cookie": f"session={token}"})]:
        status, seen = await _get(sec, path, headers)
        assert (status, seen.get("x-verified-sub")) == (200, "carol"), (path, headers, seen)
    for path, headers in [("/", {"x-jwt-assertion": "Token deadbeef"}), ("/?my_token=deadbeef", {}),
                          ("/", {"cookie": "session=deadbeef"})]:
        assert (await _get(sec, path, headers))[0] == 401, (path, headers)
    # C's token where only A and B look (Authorization): C's issuer does not read it there; A and B refuse it.
    assert (await _get(sec, "/", {"authorization": f"Bearer {token}"}))[0] == 401


async def test_dotted_and_nested_claim_conditions(sec: SecurityMesh) -> None:
    dotted = A.token("alice", **{"foo.bar": "dotted"})
    nested_foo = A.token("alice", foo={"bar": "dotted"})  # not the claim named "foo.bar"
    nested = A.token("alice", nested={"key1": "value1"})
    flat = A.token("alice", **{"nested.key1": "value1"})  # not a nested claim
    cases = [("/dotted", dotted, 200), ("/dotted", nested_foo, 403), ("/nested", nested, 200),
             ("/nested", flat, 403), ("/dotted", None, 403), ("/other", None, 200)]
    for path, token, want in cases:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        assert (await _get(sec, path, headers))[0] == want, (path, token)
