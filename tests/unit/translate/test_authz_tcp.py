"""AuthorizationPolicy on inbound TCP ports: the network RBAC (and ext_authz) filters before ``tcp_proxy``, with
Istio's reading of HTTP-only fields (an ALLOW rule using one matches nothing, a DENY rule drops them), dry run as
shadow rules, AUDIT as LOG, CUSTOM fail closed without a gRPC provider; and that Envoy accepts it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import bookinfo_registry, context, envoy_validate, listeners, sidecar
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as tcp_rbac_pb2

from meshplane.model import spec as istio
from meshplane.model.spec import AuthorizationAction
from meshplane.translate import MeshSettings
from meshplane.translate.authz import is_dry_run, rule_policy
from meshplane.translate.mesh import ExtAuthzProvider

SEC = "security.istio.io/v1"
SEL = {"matchLabels": {"app": "reviews"}}
ALLOW, DENY = AuthorizationAction.ALLOW, AuthorizationAction.DENY


def ap(name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "default"}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": SEC, "kind": "AuthorizationPolicy", "metadata": md, "spec": {"selector": SEL, **spec}}


def _tcp_filters(objs: list[dict[str, Any]], mesh: MeshSettings | None = None) -> list[Any]:
    """The filters of the reviews sidecar's inbound TCP chain on 9000 (names, decoded configs)."""
    ctx = context([*bookinfo_registry(), *objs], mesh)
    lst = listeners(sidecar("reviews", INBOUND_PORTS="tcp:9000/TCP=9100"), ctx)["inbound_127.0.1.3_9000"]
    out: list[Any] = []
    for f in lst.filter_chains[0].filters:
        if f.name == "envoy.filters.network.rbac":
            r = tcp_rbac_pb2.RBAC()
            assert f.typed_config.Unpack(r)
            out.append(r)
        elif f.name == "envoy.filters.network.ext_authz":
            e = ext_authz_pb2.ExtAuthz()
            assert f.typed_config.Unpack(e)
            out.append(e)
        else:
            out.append(f.name)
    return out


def rule(data: dict[str, Any]) -> istio.Rule:
    return istio.decode(istio.Rule, data)


def test_http_only_fields_on_tcp() -> None:
    methods = rule({"to": [{"operation": {"methods": ["GET"], "ports": ["9000"]}}]})
    # ALLOW: the rule matches nothing on TCP (over HTTP it still applies).
    assert rule_policy(methods, ALLOW, tcp=True) is None
    assert rule_policy(methods, ALLOW) is not None
    # DENY: the HTTP-only field is dropped, the port is kept.
    deny = rule_policy(methods, DENY, tcp=True)
    assert deny is not None and deny.permissions[0].destination_port == 9000
    for data in ({"from": [{"source": {"requestPrincipals": ["*"]}}]}, {"to": [{"operation": {"paths": ["/x"]}}]},
                 {"to": [{"operation": {"notHosts": ["a"]}}]},
                 {"when": [{"key": "request.headers[x-a]", "values": ["b"]}]},
                 {"when": [{"key": "request.auth.claims[groups]", "values": ["b"]}]}):
        assert rule_policy(rule(data), ALLOW, tcp=True) is None, data
        pol = rule_policy(rule(data), DENY, tcp=True)
        assert pol is not None and pol.principals[0].any and pol.permissions[0].any, data
    # Fields a connection has stay.
    tcp = rule({"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}],
                "when": [{"key": "source.ip", "values": ["127.0.0.0/8"]}]})
    kept = rule_policy(tcp, ALLOW, tcp=True)
    assert kept is not None and len(kept.principals[0].and_ids.ids) == 2


def test_tcp_filters_order_and_the_istio_task() -> None:
    assert _tcp_filters([]) == ["envoy.filters.network.tcp_proxy"]
    allow_ports = ap("tcp-policy", {"action": "ALLOW", "rules": [{"to": [{"operation": {"ports": ["9000", "9001"]}}]}]})
    allow, proxy = _tcp_filters([allow_ports])
    assert proxy == "envoy.filters.network.tcp_proxy"
    assert allow.rules.action == rbac_pb2.RBAC.ALLOW and allow.stat_prefix == "tcp."
    assert list(allow.rules.policies) == ["ns[default]-policy[tcp-policy]-rule[0]"]
    allow_get = ap("tcp-policy", {"action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"],
                                                                                     "ports": ["9000"]}}]}]})
    allow, _ = _tcp_filters([allow_get])
    assert allow.rules.action == rbac_pb2.RBAC.ALLOW and not allow.rules.policies  # denies the port
    deny_get = ap("tcp-policy", {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"],
                                                                                   "ports": ["9000"]}}]}]})
    deny, _ = _tcp_filters([deny_get])
    assert deny.rules.action == rbac_pb2.RBAC.DENY
    assert deny.rules.policies["ns[default]-policy[tcp-policy]-rule[0]"].permissions[0].destination_port == 9000
    audit = ap("audit", {"action": "AUDIT", "rules": [{}]})
    dry = ap("dry", {"action": "DENY", "rules": [{}]}, annotations={"istio.io/dry-run": "T"})
    deny, allow, logged, _ = _tcp_filters([deny_get, allow_ports, audit, dry])
    assert [deny.rules.action, allow.rules.action, logged.rules.action] == [
        rbac_pb2.RBAC.DENY, rbac_pb2.RBAC.ALLOW, rbac_pb2.RBAC.LOG]
    assert list(deny.shadow_rules.policies) == ["ns[default]-policy[dry]-rule[0]"]
    assert deny.shadow_rules_stat_prefix == "istio_dry_run_deny_"


def test_dry_run_is_go_parse_bool() -> None:
    for v in ("1", "t", "T", "TRUE", "true", "True"):
        assert is_dry_run({"istio.io/dry-run": v}), v
    for v in ("0", "f", "false", "yes", "on", "tRuE", ""):
        assert not is_dry_run({"istio.io/dry-run": v}), v  # anything else is enforced (fail closed)
    assert not is_dry_run({})


def test_custom_on_tcp() -> None:
    custom = ap("ext", {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{"to": [{"operation": {
        "ports": ["9000"]}}]}]})
    # Unknown provider: deny what the rules match.
    (deny, _) = _tcp_filters([custom])
    assert deny.rules.action == rbac_pb2.RBAC.DENY and list(deny.rules.policies) == [
        "ns[default]-policy[ext]-rule[0]"]
    mesh = MeshSettings(ext_authz_providers=(ExtAuthzProvider("opa", "127.0.0.1", 9191, fail_open=False),))
    marker, ea, _ = _tcp_filters([custom], mesh)
    assert not marker.HasField("rules") and list(marker.shadow_rules.policies) == [
        "istio-ext-authz-ns[default]-policy[ext]-rule[0]"]
    assert ea.grpc_service.envoy_grpc.cluster_name == "extauthz|opa" and not ea.failure_mode_allow
    assert ea.filter_enabled_metadata.filter == "envoy.filters.network.rbac"


@pytest.mark.parametrize("mode", ["NONE", "REDIRECT"])
def test_tcp_authz_config_validates(mode: str, tmp_path: Path) -> None:
    mesh = MeshSettings(ext_authz_providers=(ExtAuthzProvider("opa", "127.0.0.1", 9191),))
    ctx = context([*bookinfo_registry(),
                   ap("ext", {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{}]}),
                   ap("deny", {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}),
                   ap("allow", {"action": "ALLOW", "rules": [{"to": [{"operation": {"ports": ["9000"]}}]}]}),
                   ap("dry", {"action": "ALLOW", "rules": [{}]}, annotations={"istio.io/dry-run": "true"}),
                   ap("audit", {"action": "AUDIT", "rules": [{}]})], mesh)
    envoy_validate(sidecar("reviews", INTERCEPTION_MODE=mode, INBOUND_PORTS="http:9080,9000/TCP"), ctx, tmp_path)


def test_gateway_tcp_servers_get_the_network_rbac_filter(tmp_path: Path) -> None:
    """A gateway's TCP server (routed by a VirtualService ``tcp`` route) is authorized like a sidecar's TCP port."""
    from _feature_corpus import gw, vs
    from _translate_helpers import gateway

    objs = [*bookinfo_registry(),
            gw("edge", {"selector": {"istio": "ingressgateway"}, "servers": [
                {"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]}]}),
            vs("tcp-route", {"hosts": ["*"], "gateways": ["istio-system/edge"],
                             "tcp": [{"route": [{"destination": {"host": "ratings"}}]}]}),
            {"apiVersion": SEC, "kind": "AuthorizationPolicy",
             "metadata": {"name": "gw-deny", "namespace": "istio-system"},
             "spec": {"selector": {"matchLabels": {"istio": "ingressgateway"}}, "action": "DENY",
                      "rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}],
                                 "to": [{"operation": {"methods": ["GET"]}}]}]}}]
    ctx = context(objs)
    proxy = gateway()
    chains = [c for lst in listeners(proxy, ctx).values() for c in lst.filter_chains
              if any(f.name == "envoy.filters.network.tcp_proxy" for f in c.filters)]
    assert chains
    for chain in chains:
        assert [f.name for f in chain.filters] == ["envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"]
        r = tcp_rbac_pb2.RBAC()
        assert chain.filters[0].typed_config.Unpack(r)
        pol = r.rules.policies["ns[istio-system]-policy[gw-deny]-rule[0]"]
        assert r.rules.action == rbac_pb2.RBAC.DENY and pol.permissions[0].any  # methods: HTTP-only, dropped
    envoy_validate(proxy, ctx, tmp_path)
