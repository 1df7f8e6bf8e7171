"""AuthorizationPolicy, PeerAuthentication and RequestAuthentication translation: the RBAC/ext_authz/jwt_authn
filters and TLS chains a sidecar gets, and that Envoy accepts all of it (``envoy --mode validate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import (
    bookinfo_registry,
    clusters,
    context,
    envoy_validate,
    gateway,
    hcm_of,
    listeners,
    sidecar,
)
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2

from meshplane.model import spec as istio
from meshplane.model.proxy import InboundPort
from meshplane.model.resources import AUTHORIZATION_POLICIES, REQUEST_AUTHENTICATIONS
from meshplane.model.spec import AuthorizationAction, MutualTLSMode
from meshplane.translate import MeshSettings
from meshplane.translate.authz import rule_policy
from meshplane.translate.jwt import UNAVAILABLE_JWKS
from meshplane.translate.mesh import ExtAuthzProvider
from meshplane.translate.opa import selecting_policies
from meshplane.translate.peerauthn import inbound_mtls_mode, selected_policies

SEC = "security.istio.io/v1"
JWKS = '{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",' \
       '"y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","alg":"ES256"}]}'


def obj(kind: str, name: str, spec: dict[str, Any], ns: str = "default",
        annotations: dict[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": SEC, "kind": kind, "metadata": md, "spec": spec}


def _inbound(ctx: Any, **kw: Any) -> Any:
    lst = listeners(sidecar("reviews", **kw), ctx)
    return lst["inbound_127.0.1.3_9080"]


def _http_filters(ctx: Any, **kw: Any) -> list[Any]:
    """The HTTP filters of the reviews sidecar's inbound chain on 9080."""
    h = hcm_of(_inbound(ctx, **kw).filter_chains[0])
    assert h is not None
    return list(h.http_filters)


def _rbac_filters(ctx: Any) -> list[http_rbac_pb2.RBAC]:
    out = []
    for f in _http_filters(ctx):
        if f.name == "envoy.filters.http.rbac":
            r = http_rbac_pb2.RBAC()
            assert f.typed_config.Unpack(r)
            out.append(r)
    return out


def test_peer_authentication_precedence() -> None:
    ctx = context([*bookinfo_registry(),
        obj("PeerAuthentication", "mesh", {"mtls": {"mode": "STRICT"}}, ns="istio-system"),
        obj("PeerAuthentication", "ns", {"mtls": {"mode": "PERMISSIVE"}}),
        obj("PeerAuthentication", "wl", {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "UNSET"},
                                         "portLevelMtls": {"9080": {"mode": "DISABLE"}}}),
    ])
    rev = sidecar("reviews")
    assert inbound_mtls_mode(rev, InboundPort(9080, 9080), ctx) is MutualTLSMode.DISABLE
    assert inbound_mtls_mode(rev, InboundPort(9090, 9090), ctx) is MutualTLSMode.PERMISSIVE
    other_ns = sidecar("ratings", ns="prod")
    assert inbound_mtls_mode(other_ns, InboundPort(9080, 9080), ctx) is MutualTLSMode.STRICT
    assert inbound_mtls_mode(rev, InboundPort(9080, 9080), context(bookinfo_registry())) is MutualTLSMode.DISABLE
    assert inbound_mtls_mode(rev, InboundPort(9080, 9080), context(bookinfo_registry(), MeshSettings(
        inbound_mtls=True))) is MutualTLSMode.PERMISSIVE


@pytest.mark.parametrize(("mode", "chains", "inspector"), [("STRICT", 1, False), ("PERMISSIVE", 2, True),
                                                           ("DISABLE", 1, False)])
def test_peer_authentication_chains(mode: str, chains: int, inspector: bool) -> None:
    ctx = context([*bookinfo_registry(), obj("PeerAuthentication", "ns", {"mtls": {"mode": mode}})])
    lst = _inbound(ctx)
    assert len(lst.filter_chains) == chains
    assert any(f.name == "envoy.filters.listener.tls_inspector" for f in lst.listener_filters) is inspector
    has_tls = lst.filter_chains[0].transport_socket.name == "envoy.transport_sockets.tls"
    assert has_tls is (mode != "DISABLE")


def rule(data: dict[str, Any]) -> istio.Rule:
    return istio.decode(istio.Rule, data)


ALLOW, DENY = AuthorizationAction.ALLOW, AuthorizationAction.DENY


def test_rule_semantics() -> None:
    pol = rule_policy(rule({"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"],
                                                 "notNamespaces": ["prod"]}}],
                            "to": [{"operation": {"methods": ["GET"], "paths": ["/api/*"]}}],
                            "when": [{"key": "request.headers[x-user]", "values": ["alice"]}]}), ALLOW)
    assert pol is not None
    ids = pol.principals[0].and_ids.ids
    assert ids[0].and_ids.ids[0].authenticated.principal_name.exact == "spiffe://cluster.local/ns/default/sa/sleep"
    assert ids[0].and_ids.ids[1].not_id.authenticated.principal_name.safe_regex.regex == ".*/ns/prod/.*"
    assert ids[1].header.name == "x-user"
    perm = pol.permissions[0].and_rules.rules
    assert perm[0].header.string_match.exact == "GET"
    assert perm[1].url_path.path.prefix == "/api/"
    assert rule_policy(rule({"when": [{"key": "unknown.key", "values": ["x"]}]}), ALLOW) is None
    assert rule_policy(rule({"when": [{"key": "unknown.key", "notValues": ["x"]}]}), ALLOW) is None
    assert rule_policy(rule({"when": [{"key": "unknown.key", "values": ["x"]}]}), DENY) is not None


def test_filter_order_dry_run_and_allow_nothing() -> None:
    ctx = context([*bookinfo_registry(),
        obj("AuthorizationPolicy", "allow-nothing", {"action": "ALLOW"}),
        obj("AuthorizationPolicy", "deny-admin", {"action": "DENY", "rules": [{"to": [{"operation": {
            "paths": ["/admin*"]}}]}]}),
        obj("AuthorizationPolicy", "deny-dry", {"action": "DENY", "rules": [{"to": [{"operation": {
            "methods": ["DELETE"]}}]}]}, annotations={"istio.io/dry-run": "true"}),
        obj("AuthorizationPolicy", "audit", {"action": "AUDIT", "rules": [{}]}),
    ])
    deny, allow, audit = _rbac_filters(ctx)
    assert deny.rules.action == rbac_pb2.RBAC.DENY and list(deny.rules.policies) == [
        "ns[default]-policy[deny-admin]-rule[0]"]
    assert list(deny.shadow_rules.policies) == ["ns[default]-policy[deny-dry]-rule[0]"]
    assert deny.shadow_rules_stat_prefix == "istio_dry_run_deny_"
    assert allow.rules.action == rbac_pb2.RBAC.ALLOW and not allow.rules.policies  # allows nothing
    assert audit.rules.action == rbac_pb2.RBAC.LOG


def test_other_namespace_policy_does_not_apply() -> None:
    ctx = context([*bookinfo_registry(), obj("AuthorizationPolicy", "x", {"action": "DENY", "rules": [{}]},
                                             ns="prod")])
    assert _rbac_filters(ctx) == []


def _security_objects() -> list[dict[str, Any]]:
    return [
        obj("PeerAuthentication", "mesh", {"mtls": {"mode": "STRICT"}}, ns="istio-system"),
        obj("PeerAuthentication", "wl", {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"},
                                         "portLevelMtls": {"9090": {"mode": "PERMISSIVE"}}}),
        obj("RequestAuthentication", "jwt", {"jwtRules": [
            {"issuer": "https://issuer.example", "jwks": JWKS, "audiences": ["reviews"]},
            {"issuer": "remote", "jwksUri": "http://127.0.0.1:8181/jwks.json"}]}),
        obj("AuthorizationPolicy", "custom", {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [
            {"to": [{"operation": {"paths": ["/opa/*"]}}]}]}),
        obj("AuthorizationPolicy", "deny", {"action": "DENY", "rules": [
            {"from": [{"source": {"notRequestPrincipals": ["*"]}}], "to": [{"operation": {"paths": ["/secure*"]}}]},
            {"from": [{"source": {"ipBlocks": ["10.0.0.0/8"], "remoteIpBlocks": ["1.2.3.4"]}}]},
            {"when": [{"key": "request.auth.claims[groups]", "values": ["banned"]},
                      {"key": "destination.port", "values": ["9090"]},
                      {"key": "connection.sni", "notValues": ["*.local"]}]}]}),
        obj("AuthorizationPolicy", "allow", {"action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/*"], "namespaces": ["default"]}}],
             "to": [{"operation": {"hosts": ["*.svc.cluster.local"], "methods": ["GET", "POST"],
                                   "notPaths": ["/private/*"], "ports": ["9080"]}}],
             "when": [{"key": "request.auth.principal", "values": ["https://issuer.example/alice"]},
                      {"key": "source.ip", "values": ["127.0.0.0/8"]}]}]},
            annotations={"istio.io/dry-run": "true"}),
        obj("AuthorizationPolicy", "audit", {"action": "AUDIT", "rules": [{"to": [{"operation": {
            "methods": ["DELETE"]}}]}]}),
    ]


@pytest.mark.parametrize("mode", ["NONE", "REDIRECT"])
def test_security_config_validates(mode: str, tmp_path: Path) -> None:
    mesh = MeshSettings(ext_authz_providers=(ExtAuthzProvider("opa", "127.0.0.1", 9191),))
    ctx = context(bookinfo_registry() + _security_objects(), mesh)
    proxy = sidecar("reviews", INTERCEPTION_MODE=mode, INBOUND_PORTS="http:9080,9090/TCP")
    cs = clusters(proxy, ctx)
    assert "extauthz|opa" in cs and not [n for n in cs if n.startswith("jwks|")]  # keys are inline (jwt)
    h = hcm_of(listeners(proxy, ctx)[("inbound_127.0.1.3_9080" if mode == "NONE" else "virtualInbound")]
               .filter_chains[0])
    assert h is not None
    names = [f.name for f in h.http_filters]
    # The metrics' peer-identity exchange moves headers first; the security filters come next, before the rest.
    assert names[:2] == ["envoy.filters.http.header_to_metadata", "envoy.filters.http.header_mutation"]
    assert names[2:7] == [
        "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac", "envoy.filters.http.ext_authz",
        "envoy.filters.http.rbac", "envoy.filters.http.rbac"]
    envoy_validate(proxy, ctx, tmp_path)
    envoy_validate(sidecar("productpage", INTERCEPTION_MODE=mode), ctx, tmp_path)


def test_auto_mtls_transport_socket_matches(tmp_path: Path) -> None:
    objs = bookinfo_registry()
    for o in objs:
        if o["kind"] == "WorkloadEntry" and o["metadata"]["name"].startswith("reviews"):
            o["spec"]["labels"]["security.istio.io/tlsMode"] = "istio"
    ctx = context(objs)
    proxy = sidecar("productpage")
    c = clusters(proxy, ctx)["outbound|9080||reviews.default.svc.cluster.local"]
    assert [m.name for m in c.transport_socket_matches] == ["tlsMode-istio", "tlsMode-disabled"]
    envoy_validate(proxy, ctx, tmp_path)
    off = context(objs, MeshSettings(auto_mtls=False))
    assert not clusters(proxy, off)["outbound|9080||reviews.default.svc.cluster.local"].transport_socket_matches


def test_selected_policies_are_typed_by_level() -> None:
    sel = {"matchLabels": {"app": "reviews"}}
    ctx = context([*bookinfo_registry(),
        obj("AuthorizationPolicy", "mesh", {"action": "AUDIT", "rules": [{}]}, ns="istio-system"),
        obj("AuthorizationPolicy", "root-wl", {"selector": sel, "rules": [{}]}, ns="istio-system"),
        obj("AuthorizationPolicy", "ns", {"rules": [{}]}),
        obj("AuthorizationPolicy", "ns-empty-selector", {"selector": {"matchLabels": {}}, "rules": [{}]}),
        obj("AuthorizationPolicy", "wl", {"selector": sel, "rules": [{}]}),
        obj("AuthorizationPolicy", "other-wl", {"selector": {"matchLabels": {"app": "ratings"}}, "rules": [{}]}),
        obj("AuthorizationPolicy", "other-ns", {"rules": [{}]}, ns="prod"),
    ])
    levels = selected_policies(ctx, AUTHORIZATION_POLICIES, sidecar("reviews"), istio.AuthorizationPolicy)
    assert [o.meta.name for o in levels.mesh] == ["mesh"]
    assert [o.meta.name for o in levels.namespace] == ["ns", "ns-empty-selector"]
    assert [o.meta.name for o in levels.workload] == ["wl", "root-wl"]  # by namespace, then age
    assert all(isinstance(o.spec, istio.AuthorizationPolicy) for o in levels.all())
    assert levels.mesh[0].spec.action is AuthorizationAction.AUDIT


@pytest.mark.parametrize(("kind", "gr"), [("AuthorizationPolicy", AUTHORIZATION_POLICIES),
                                         ("RequestAuthentication", REQUEST_AUTHENTICATIONS)])
def test_target_refs_select_the_gateways_proxies_only_never_the_namespace(kind: str, gr: Any) -> None:
    gw_ref = {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}]}
    svc_ref = {"targetRefs": [{"kind": "Service", "name": "reviews"}]}
    spec = {"rules": [{}]} if kind == "AuthorizationPolicy" else {"jwtRules": [{"issuer": "https://x"}]}
    ctx = context([*bookinfo_registry(), obj(kind, "gw", {**gw_ref, **spec}), obj(kind, "svc", {**svc_ref, **spec}),
                   obj(kind, "root-gw", {**gw_ref, **spec}, ns="istio-system")])
    cls = istio.AuthorizationPolicy if kind == "AuthorizationPolicy" else istio.RequestAuthentication
    web = gateway({"gateway.networking.k8s.io/gateway-name": "web"}, ns="default")
    assert [o.meta.name for o in selected_policies(ctx, gr, web, cls).all()] == ["gw"]
    # neither the other workloads of the namespace (a Service target is for waypoints), nor a gateway elsewhere
    assert selected_policies(ctx, gr, sidecar("reviews"), cls).all() == ()
    other = gateway({"gateway.networking.k8s.io/gateway-name": "web"}, ns="istio-system")
    assert [o.meta.name for o in selected_policies(ctx, gr, other, cls).all()] == ["root-gw"]


def test_port_level_unset_inherits() -> None:
    ctx = context([*bookinfo_registry(), obj("PeerAuthentication", "wl", {
        "selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"},
        "portLevelMtls": {"9080": {"mode": "UNSET"}, "15080": {"mode": "DISABLE"}, "9091": {}}})])
    rev = sidecar("reviews")
    assert inbound_mtls_mode(rev, InboundPort(9080, 9080), ctx) is MutualTLSMode.STRICT
    # The app port says UNSET: the sidecar port's setting applies.
    assert inbound_mtls_mode(rev, InboundPort(15080, 9080), ctx) is MutualTLSMode.DISABLE
    assert inbound_mtls_mode(rev, InboundPort(9091, 9091), ctx) is MutualTLSMode.STRICT


def test_jwt_providers_from_typed_rules() -> None:
    ctx = context([*bookinfo_registry(), obj("RequestAuthentication", "jwt", {"jwtRules": [
        {"issuer": "inline", "jwks": JWKS, "audiences": ["a", "b"], "forwardOriginalToken": True,
         "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}, {"name": "x-raw"}], "fromParams": ["token"]},
        {"issuer": "tls", "jwksUri": "https://keys.example/jwks.json"},
        {"issuer": "remote", "jwksUri": "http://127.0.0.1:8181/a.json"}]})])
    jwt = next(f for f in _http_filters(ctx) if f.name == "envoy.filters.http.jwt_authn")
    cfg = jwt_pb2.JwtAuthentication()
    assert jwt.typed_config.Unpack(cfg)
    # Every rule is a provider: one whose keys the control plane has not fetched verifies nothing (fail closed).
    assert sorted(cfg.providers) == ["origins-0", "origins-1", "origins-2"]
    inline = cfg.providers["origins-0"]
    assert inline.issuer == "inline" and list(inline.audiences) == ["a", "b"] and inline.forward
    assert [(h.name, h.value_prefix) for h in inline.from_headers] == [("x-jwt", "Bearer "), ("x-raw", "")]
    assert list(inline.from_params) == ["token"] and inline.local_jwks.inline_string == JWKS
    for name in ("origins-1", "origins-2"):
        p = cfg.providers[name]
        assert not p.HasField("remote_jwks") and p.local_jwks.inline_string == UNAVAILABLE_JWKS
    assert [r.provider_name or "allow_missing" for r in cfg.rules[0].requires.requires_any.requirements] == [
        "origins-0", "origins-1", "origins-2", "allow_missing"]


def test_dry_run_annotation_and_unknown_custom_provider() -> None:
    ctx = context([*bookinfo_registry(),
        obj("AuthorizationPolicy", "dry", {"action": "DENY", "rules": [{}]}, annotations={"istio.io/dry-run": "True"}),
        obj("AuthorizationPolicy", "wet", {"action": "DENY", "rules": [{}]}, annotations={"istio.io/dry-run": "false"}),
        obj("AuthorizationPolicy", "custom", {"action": "CUSTOM", "provider": {"name": "missing"}, "rules": [
            {"when": [{"key": "request.headers[x-a]", "notValues": ["b"]}]}]}),
    ])
    custom, deny = _rbac_filters(ctx)
    # An unknown provider denies what its rules match (fail closed), under the policy's own rule name.
    assert custom.rules.action == rbac_pb2.RBAC.DENY
    assert custom.rules.policies["ns[default]-policy[custom]-rule[0]"].principals[0].not_id.header.name == "x-a"
    assert list(deny.rules.policies) == ["ns[default]-policy[wet]-rule[0]"]
    assert list(deny.shadow_rules.policies) == ["ns[default]-policy[dry]-rule[0]"]


def test_opa_policy_selection() -> None:
    opa = [{"apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "ASMOPAPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": {**spec, "policy": "package x\n"}}
           for name, ns, spec in (("b-sel", "default", {"workloadSelector": {"labels": {"app": "reviews"}}}),
                                  ("a-all", "default", {}),
                                  ("other", "default", {"workloadSelector": {"labels": {"app": "ratings"}}}),
                                  ("prod", "prod", {}))]
    ctx = context([*bookinfo_registry(), *opa])
    assert selecting_policies(sidecar("reviews"), ctx) == ["a-all", "b-sel"]
    assert selecting_policies(sidecar("reviews", ns="staging"), ctx) == []
    no_agent = [f for f in _http_filters(ctx) if f.name == "meshplane.opa.ext_authz"]
    deny_all = http_rbac_pb2.RBAC()
    assert len(no_agent) == 1 and no_agent[0].typed_config.Unpack(deny_all) and not deny_all.rules.policies
    with_agent = [f for f in _http_filters(context([*bookinfo_registry(), *opa]), OPA_EXTAUTHZ="opa-extauthz")
                  if f.name == "meshplane.opa.ext_authz"]
    ea = ext_authz_pb2.ExtAuthz()
    assert with_agent[0].typed_config.Unpack(ea) and ea.grpc_service.envoy_grpc.cluster_name == "opa-extauthz"
    assert not ea.failure_mode_allow
