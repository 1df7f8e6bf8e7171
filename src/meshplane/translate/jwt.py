"""RequestAuthentication -> Envoy's ``jwt_authn`` HTTP filter, and VirtualService matches on its verified claims.

Istio's semantics: a request without a token passes this filter (AuthorizationPolicy ``requestPrincipals`` decides
whether a token was required); a request with a token that does not verify against any rule is refused with 401.
That is ``requires_any: [<every provider>, allow_missing]``. The verified payload is written to dynamic metadata
(``envoy.filters.http.jwt_authn`` / ``payload``), where the RBAC principals built by ``authz`` read ``iss``,
``sub`` and claims, and a gateway's routes match claims (``routing_claim``). All RequestAuthentications that
select a workload (mesh, namespace and workload level) contribute their rules, as in Istio.

JWKS: always inline (``local_jwks``), as istiod sends it. A rule's own ``jwks`` as written; a ``jwksUri`` as the
control plane fetched it (``meshplane.jwks`` resolves, caches and refreshes the keys and hands them to the push
context: translation does no I/O). Fail closed: a rule whose keys are not (yet) known gets ``UNAVAILABLE_JWKS``, a
well-formed key set of a key nobody holds, so every token for that issuer is refused (401) instead of the rule
being dropped, which would let a malformed token through unverified.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2

from meshplane.model import spec as istio
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.resources import REQUEST_AUTHENTICATIONS
from meshplane.translate.common import pack
from meshplane.translate.context import PushContext
from meshplane.translate.peerauthn import selected_policies

JWT_FILTER = "envoy.filters.http.jwt_authn"
PAYLOAD_KEY = "payload"
# A VirtualService header match on this prefix is a match on a verified JWT claim (Istio's claim based routing).
ROUTING_CLAIM = "@request.auth.claims"


def jwt_rules(proxy: Proxy, ctx: PushContext) -> list[istio.JWTRule]:
    """The rules of every RequestAuthentication selecting ``proxy``: mesh, namespace, then workload level."""
    levels = selected_policies(ctx, REQUEST_AUTHENTICATIONS, proxy, istio.RequestAuthentication)
    return [rule for obj in levels.all() for rule in obj.spec.jwt_rules]


# The public half of a P-256 key whose private half was discarded when it was made: no token verifies against it.
UNAVAILABLE_JWKS = (
    '{"keys":[{"kty":"EC","crv":"P-256","kid":"meshplane-jwks-unavailable","alg":"ES256","use":"sig",'
    '"x":"WWcQlmtJx76wvNlXjfwJfJhoPe0AuLZx9pYPzUOp1cc","y":"jYRT7ZE7BEv38BtL4AmNznBAuCfBVIUAYxLQf2NZ4ic"}]}')


OPENID_CONFIGURATION = "/.well-known/openid-configuration"


def jwks_source(rule: istio.JWTRule) -> str | None:
    """Where the control plane gets a rule's keys (the key of ``PushContext.jwks``): its ``jwksUri``, else, as
    Istio, the issuer's OpenID discovery document (``<issuer>/.well-known/openid-configuration``, whose
    ``jwks_uri`` is then fetched); None for inline keys, or an issuer that is not an http(s) URL."""
    if rule.jwks:
        return None
    if rule.jwks_uri:
        return rule.jwks_uri
    issuer = rule.issuer or ""
    if issuer.startswith(("https://", "http://")):
        return issuer.rstrip("/") + OPENID_CONFIGURATION
    return None


def rule_jwks(rule: istio.JWTRule, resolved: Mapping[str, str]) -> str:
    """The key set a rule verifies with: its ``jwks``, else what the control plane fetched for it
    (``jwks_source``), else (not fetched, fetch failed, no key source) ``UNAVAILABLE_JWKS``."""
    if rule.jwks:
        return rule.jwks
    source = jwks_source(rule)
    return (resolved.get(source) if source else None) or UNAVAILABLE_JWKS


def _provider(rule: istio.JWTRule, router: bool, resolved: Mapping[str, str]) -> jwt_pb2.JwtProvider:
    """One rule as a jwt_authn provider, every JWTRule field applied (``timeout`` is the control plane's fetch
    timeout, see ``meshplane.jwks``)."""
    prov = jwt_pb2.JwtProvider(issuer=rule.issuer or "")
    prov.audiences.extend(rule.audiences)
    # Istio's default: the token is removed before the request is forwarded, unless forwardOriginalToken.
    prov.forward = bool(rule.forward_original_token)
    prov.payload_in_metadata = PAYLOAD_KEY
    # A gateway's routes may match on claims (``routing_claim``): the route is chosen again once the payload is in
    # metadata. Only gateways (as in Istio; admission refuses claim matches in VirtualServices bound to the mesh).
    prov.clear_route_cache = router
    for h in rule.from_headers:
        if h.name:
            prov.from_headers.add(name=h.name, value_prefix=h.prefix or "")
    prov.from_params.extend(rule.from_params)
    prov.from_cookies.extend(rule.from_cookies)
    if rule.output_payload_to_header:
        prov.forward_payload_header = rule.output_payload_to_header  # base64url of the verified payload
    for c in rule.output_claim_to_headers:
        if c.header and c.claim:
            # Envoy reads a claim name with '.' as a path into nested claims (``nested.key1``), as Istio documents.
            prov.claim_to_headers.add(header_name=c.header, claim_name=c.claim)
    prov.local_jwks.inline_string = rule_jwks(rule, resolved)
    return prov


def jwt_filter(proxy: Proxy, ctx: PushContext) -> hcm_pb2.HttpFilter | None:
    cfg = jwt_pb2.JwtAuthentication()
    names: list[str] = []
    for i, rule in enumerate(jwt_rules(proxy, ctx)):
        prov = _provider(rule, proxy.type is ProxyType.ROUTER, ctx.jwks)
        name = f"origins-{i}"
        cfg.providers[name].CopyFrom(prov)
        names.append(name)
    if not names:
        return None
    req = cfg.rules.add()
    req.match.prefix = "/"
    any_of = req.requires.requires_any
    for n in names:
        any_of.requirements.add(provider_name=n)
    any_of.requirements.add().allow_missing.SetInParent()
    return hcm_pb2.HttpFilter(name=JWT_FILTER, typed_config=pack(cfg))


def routing_claim(name: str) -> list[str] | None:
    """The claim path a VirtualService header match names (``@request.auth.claims.groups``, nested with ``.``:
    ``@request.auth.claims.nested.key1``; or ``@request.auth.claims[nested][key1]``); None for a real header."""
    if not name.startswith(ROUTING_CLAIM):
        return None
    rest = name[len(ROUTING_CLAIM):]
    bracketed = rest.startswith("[") and rest.endswith("]")
    parts = rest[1:-1].split("][") if bracketed else rest.removeprefix(".").split(".")
    # A name that names no claim (``@request.auth.claims``) matches no verified payload: fail closed.
    return [p for p in parts if p] or ["@request.auth.claims"]


def claim_route_matcher(claim: list[str], match: string_pb2.StringMatcher | None,
                        invert: bool = False) -> metadata_pb2.MetadataMatcher:
    """A route's dynamic-metadata matcher on a verified claim (``jwt_authn``'s payload): the claim equals ``match``
    whether it is a string or a list of strings (``groups: [group1, group2]``); ``match`` None: it is present."""
    if match is None:
        value = value_pb2.ValueMatcher(present_match=True)
    else:
        value = value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=[
            value_pb2.ValueMatcher(string_match=match),
            value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=value_pb2.ValueMatcher(
                string_match=match)))]))
    return metadata_pb2.MetadataMatcher(
        filter=JWT_FILTER, path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in [PAYLOAD_KEY, *claim]],
        value=value, invert=invert)
