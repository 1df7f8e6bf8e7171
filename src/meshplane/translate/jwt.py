"""RequestAuthentication -> Envoy's ``jwt_authn`` HTTP filter (and a cluster per remote JWKS).

Istio's semantics: a request without a token passes this filter (AuthorizationPolicy ``requestPrincipals`` decides
whether a token was required); a request with a token that does not verify against any rule is refused with 401.
That is ``requires_any: [<every provider>, allow_missing]``. The verified payload is written to dynamic metadata
(``envoy.filters.http.jwt_authn`` / ``payload``), where the RBAC principals built by ``authz`` read ``iss``,
``sub`` and claims. All RequestAuthentications that select a workload (mesh, namespace and workload level)
contribute their rules, as in Istio.

JWKS: inline (``jwks``) or fetched by Envoy from ``jwksUri`` through a static cluster ``jwks|HOST|PORT``
(plain HTTP, meant for a loopback issuer; translation does no I/O, so the control plane never fetches keys).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import metadata_pb2, string_pb2, value_pb2
from google.protobuf import duration_pb2

from meshplane.model import spec as istio
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.resources import (
    REQUEST_AUTHENTICATIONS,
    )
from meshplane.translate.common import duration, pack, proto_duration
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


def _jwks_target(rule: istio.JWTRule) -> tuple[str, str, int] | None:
    """(cluster, host, port) Envoy fetches the rule's remote JWKS through; None when its keys are inline, or it has
    no ``jwksUri``, or the URI is not plain HTTP."""
    if rule.jwks or not rule.jwks_uri:
        return None
    parts = urlsplit(rule.jwks_uri)
    if parts.scheme != "http" or not parts.hostname:
        return None
    port = parts.port or 80
    return f"jwks|{parts.hostname}|{port}", parts.hostname, port


DEFAULT_JWKS_TIMEOUT_S = 5.0  # Istio's default ``timeout`` of a JWKS fetch


def _provider(rule: istio.JWTRule, router: bool) -> jwt_pb2.JwtProvider | None:
    """One rule as a jwt_authn provider, every JWTRule field applied; None when it has no usable key source (it
    could verify nothing)."""
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
    if rule.jwks:
        prov.local_jwks.inline_string = rule.jwks
        return prov
    target = _jwks_target(rule)
    if target is None:
        return None
    remote = prov.remote_jwks
    remote.http_uri.uri = rule.jwks_uri or ""
    remote.http_uri.cluster = target[0]
    remote.http_uri.timeout.CopyFrom(_timeout(rule))
    remote.cache_duration.CopyFrom(duration(300))
    remote.async_fetch.fast_listener = False
    return prov


def _timeout(rule: istio.JWTRule) -> duration_pb2.Duration:
    """The rule's JWKS fetch ``timeout`` (Istio's default: 5 s)."""
    if rule.timeout is not None and rule.timeout > 0:
        return proto_duration(rule.timeout)
    return duration(DEFAULT_JWKS_TIMEOUT_S)


def jwt_filter(proxy: Proxy, ctx: PushContext) -> hcm_pb2.HttpFilter | None:
    cfg = jwt_pb2.JwtAuthentication()
    names: list[str] = []
    for i, rule in enumerate(jwt_rules(proxy, ctx)):
        prov = _provider(rule, proxy.type is ProxyType.ROUTER)
        if prov is None:
            continue
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


def jwks_clusters(proxy: Proxy, ctx: PushContext) -> list[cluster_pb2.Cluster]:
    out: dict[str, cluster_pb2.Cluster] = {}
    for rule in jwt_rules(proxy, ctx):
        target = _jwks_target(rule)
        if target is None or target[0] in out:
            continue
        name, host, port = target
        c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STRICT_DNS, connect_timeout=duration(5))
        c.dns_lookup_family = cluster_pb2.Cluster.V4_ONLY
        c.load_assignment.cluster_name = name
        sa = c.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
        sa.address, sa.port_value = host, port
        out[name] = c
    return [out[k] for k in sorted(out)]


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
