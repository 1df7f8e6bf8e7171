"""RequestAuthentication translation: every JWTRule field on the jwt_authn provider, the filter on gateways as on
sidecars (before RBAC), and claim names in AuthorizationPolicy conditions split as Istio splits them."""

from __future__ import annotations

from typing import Any

from _translate_helpers import bookinfo_registry, clusters, context, gateway, hcm_of, listeners, sidecar, snapshot
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2

from meshplane.model import spec as istio
from meshplane.model.spec import AuthorizationAction
from meshplane.registry import registry_from_config
from meshplane.translate import MeshSettings, build_push_context
from meshplane.translate.authz import rule_policy
from meshplane.translate.httproute import route_match
from meshplane.translate.jwt import UNAVAILABLE_JWKS, routing_claim

SEC = "security.istio.io/v1"
JWKS = '{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",' \
       '"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","alg":"ES256"}]}'
JWT = "envoy.filters.http.jwt_authn"


def obj(kind: str, name: str, spec: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": SEC, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _filters(lst: Any) -> list[Any]:
    h = hcm_of(lst.filter_chains[0])
    assert h is not None
    return list(h.http_filters)


def _jwt_config(filters: list[Any]) -> jwt_pb2.JwtAuthentication:
    cfg = jwt_pb2.JwtAuthentication()
    assert next(f for f in filters if f.name == JWT).typed_config.Unpack(cfg)
    return cfg


def test_every_jwt_rule_field() -> None:
    ctx = context([*bookinfo_registry(), obj("RequestAuthentication", "jwt", {"jwtRules": [
        {"issuer": "a", "jwks": JWKS, "audiences": ["x"], "fromCookies": ["session"], "fromParams": ["tok"],
         "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}],
         "outputPayloadToHeader": "x-jwt-payload",
         "outputClaimToHeaders": [{"header": "x-jwt-claim-foo", "claim": "foo"},
                                  {"header": "x-jwt-nested", "claim": "nested.key1"}]},
        {"issuer": "b", "jwks": JWKS, "forwardOriginalToken": True},
    ]})])
    cfg = _jwt_config(_filters(listeners(sidecar("reviews"), ctx)["inbound_127.0.1.3_9080"]))
    a, b = cfg.providers["origins-0"], cfg.providers["origins-1"]
    assert not a.forward and b.forward  # Istio strips the token unless forwardOriginalToken
    assert list(a.from_cookies) == ["session"] and list(a.from_params) == ["tok"]
    assert [(h.name, h.value_prefix) for h in a.from_headers] == [("x-jwt", "Bearer ")]
    assert a.forward_payload_header == "x-jwt-payload" and not b.forward_payload_header
    assert [(c.header_name, c.claim_name) for c in a.claim_to_headers] == [
        ("x-jwt-claim-foo", "foo"), ("x-jwt-nested", "nested.key1")]
    assert list(a.audiences) == ["x"] and a.payload_in_metadata == "payload"


def test_jwks_uri_keys_from_the_push_context_else_unavailable() -> None:
    objs = [*bookinfo_registry(), obj("RequestAuthentication", "jwt", {"jwtRules": [
        {"issuer": "r", "jwksUri": "https://keys.example/r.json"},
        {"issuer": "d", "jwksUri": "https://keys.example/down.json"},
        {"issuer": "none"},
        {"issuer": "https://oidc.example/"}]})]
    snap = snapshot(objs)
    ctx = build_push_context(snap, registry_from_config(snap, "cluster-1"), MeshSettings(), jwks={
        "https://keys.example/r.json": JWKS, "https://oidc.example/.well-known/openid-configuration": JWKS})
    cfg = _jwt_config(_filters(listeners(sidecar("reviews"), ctx)["inbound_127.0.1.3_9080"]))
    assert cfg.providers["origins-0"].local_jwks.inline_string == JWKS
    assert cfg.providers["origins-1"].local_jwks.inline_string == UNAVAILABLE_JWKS  # not fetched: refuse all
    assert cfg.providers["origins-2"].local_jwks.inline_string == UNAVAILABLE_JWKS  # no key source at all
    assert cfg.providers["origins-3"].local_jwks.inline_string == JWKS  # the issuer's OpenID discovery
    assert not [c for c in clusters(sidecar("reviews"), ctx) if c.startswith("jwks|")]


def test_gateway_gets_jwt_then_rbac_on_its_http_chains() -> None:
    gw = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
          "metadata": {"name": "gw", "namespace": "istio-system"},
          "spec": {"selector": {"istio": "ingressgateway"},
                   "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}
    sel = {"matchLabels": {"istio": "ingressgateway"}}
    ctx = context([*bookinfo_registry(), gw,
                   obj("RequestAuthentication", "jwt", {"selector": sel, "jwtRules": [{"issuer": "i", "jwks": JWKS}]},
                       ns="istio-system"),
                   obj("AuthorizationPolicy", "deny", {"selector": sel, "action": "DENY", "rules": [
                       {"from": [{"source": {"notRequestPrincipals": ["*"]}}]}]}, ns="istio-system")])
    names = [f.name for f in _filters(listeners(gateway(), ctx)["127.0.2.1_8080"])]
    assert names.index(JWT) < names.index("envoy.filters.http.rbac") < names.index("envoy.filters.http.router")
    # A terminated HTTPS server's chain too.
    gw["spec"]["servers"] = [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
                              "tls": {"mode": "SIMPLE", "credentialName": "cred"}}]
    ctx = context([*bookinfo_registry(), gw,
                   obj("RequestAuthentication", "jwt", {"selector": sel, "jwtRules": [{"issuer": "i", "jwks": JWKS}]},
                       ns="istio-system")])
    names = [f.name for f in _filters(listeners(gateway(), ctx)["127.0.2.1_8443"])]
    assert names.index(JWT) < names.index("envoy.filters.http.router")


def _claim_paths(p: rbac_pb2.Principal) -> list[list[str]]:
    """The metadata paths of every matcher under ``p``."""
    out: list[list[str]] = []
    if p.HasField("metadata"):
        out.append([s.key for s in p.metadata.path])
    for child in [*p.or_ids.ids, *p.and_ids.ids]:
        out += _claim_paths(child)
    return out


def test_claim_names_split_on_brackets_only() -> None:
    def paths(key: str) -> list[list[str]]:
        pol = rule_policy(istio.Rule(when=(istio.Condition(key=key, values=("v",)),)), AuthorizationAction.ALLOW)
        assert pol is not None
        return _claim_paths(pol.principals[0])

    assert paths("request.auth.claims[foo.bar]") == [["payload", "foo.bar"]] * 2  # string or list of strings
    assert paths("request.auth.claims[nested][key1]") == [["payload", "nested", "key1"]] * 2
    assert paths("request.auth.claims[groups]") == [["payload", "groups"]] * 2


def test_routing_claim_names() -> None:
    assert routing_claim("x-user") is None
    assert routing_claim("@request.auth.claims.groups") == ["groups"]
    assert routing_claim("@request.auth.claims.nested.key1") == ["nested", "key1"]
    assert routing_claim("@request.auth.claims[nested][key1]") == ["nested", "key1"]
    assert routing_claim("@request.auth.claims") == ["@request.auth.claims"]  # names no claim: never matches


def test_claim_route_match_on_gateway_only_clears_route_cache() -> None:
    m = route_match(istio.HTTPMatchRequest(headers={"@request.auth.claims.groups": istio.StringMatch(exact="g1")},
                                           without_headers={"@request.auth.claims.banned": istio.StringMatch()}))
    assert not m.headers
    want, banned = m.dynamic_metadata
    assert want.filter == JWT and [s.key for s in want.path] == ["payload", "groups"] and not want.invert
    string, listed = want.value.or_match.value_matchers  # a string claim or a list of strings
    assert string.string_match.exact == "g1" and listed.list_match.one_of.string_match.exact == "g1"
    assert banned.invert and banned.value.present_match
    gw = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
          "metadata": {"name": "gw", "namespace": "istio-system"},
          "spec": {"selector": {"istio": "ingressgateway"},
                   "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}
    ctx = context([*bookinfo_registry(), gw, obj("RequestAuthentication", "jwt", {"jwtRules": [
        {"issuer": "i", "jwks": JWKS}]}, ns="istio-system")])
    on_gw = _jwt_config(_filters(listeners(gateway(), ctx)["127.0.2.1_8080"])).providers["origins-0"]
    on_sidecar = _jwt_config(_filters(listeners(sidecar("reviews"), ctx)["inbound_127.0.1.3_9080"]))
    assert on_gw.clear_route_cache and not on_sidecar.providers["origins-0"].clear_route_cache
