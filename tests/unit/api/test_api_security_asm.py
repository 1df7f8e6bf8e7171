"""Rules of the security and telemetry kinds, ASM's kinds and MemberCluster."""

from __future__ import annotations

from typing import Any

import pytest
from _api_helpers import assert_cause, causes, ok


def ap(*rules: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"rules": list(rules), **spec} if rules else spec


SEL = {"matchLabels": {"app": "httpbin"}}

FAILING: list[tuple[str, str, dict[str, Any], str, str, str]] = [
    # AuthorizationPolicy
    ("ap-action", "AuthorizationPolicy", {"action": "ALLOW_ALL"}, "spec.action", "FieldValueNotSupported", ""),
    ("ap-custom-provider", "AuthorizationPolicy", ap({}, action="CUSTOM"), "spec.provider.name", "FieldValueRequired",
     "extension provider"),
    ("ap-custom-no-rules", "AuthorizationPolicy", {"action": "CUSTOM", "provider": {"name": "opa"}}, "spec.rules",
     "FieldValueRequired", ""),
    ("ap-provider-not-custom", "AuthorizationPolicy", ap({}, action="DENY", provider={"name": "opa"}),
     "spec.provider", "FieldValueForbidden", "CUSTOM"),
    ("ap-deny-no-rules", "AuthorizationPolicy", {"action": "DENY"}, "spec.rules", "FieldValueRequired", ""),
    ("ap-selector-and-target", "AuthorizationPolicy", ap({}, selector=SEL, targetRef={"kind": "Service", "name": "a"}),
     "spec.targetRef", "FieldValueForbidden", "only one of"),
    ("ap-target-kind", "AuthorizationPolicy", ap({}, targetRef={"kind": "Deployment", "name": "a"}),
     "spec.targetRef.kind", "FieldValueNotSupported", ""),
    ("ap-target-ns", "AuthorizationPolicy", ap({}, targetRef={"kind": "Service", "name": "a", "namespace": "b"}),
     "spec.targetRef.namespace", "FieldValueForbidden", ""),
    ("ap-from-empty", "AuthorizationPolicy", ap({"from": []}), "spec.rules[0].from", "FieldValueRequired", ""),
    ("ap-source-empty", "AuthorizationPolicy", ap({"from": [{"source": {}}]}), "spec.rules[0].from[0].source",
     "FieldValueRequired", "at least one of"),
    ("ap-source-value-empty", "AuthorizationPolicy", ap({"from": [{"source": {"principals": [""]}}]}),
     "spec.rules[0].from[0].source.principals[0]", "FieldValueInvalid", "empty value"),
    ("ap-source-ip", "AuthorizationPolicy", ap({"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}),
     "spec.rules[0].from[0].source.ipBlocks[0]", "FieldValueInvalid", "CIDR"),
    ("ap-operation-empty", "AuthorizationPolicy", ap({"to": [{"operation": {}}]}), "spec.rules[0].to[0].operation",
     "FieldValueRequired", ""),
    ("ap-port", "AuthorizationPolicy", ap({"to": [{"operation": {"ports": ["http"]}}]}),
     "spec.rules[0].to[0].operation.ports[0]", "FieldValueInvalid", "port number"),
    ("ap-path-middle-star", "AuthorizationPolicy", ap({"to": [{"operation": {"paths": ["/api/*/items"]}}]}),
     "spec.rules[0].to[0].operation.paths[0]", "FieldValueInvalid", "prefix or suffix"),
    ("ap-path-template", "AuthorizationPolicy", ap({"to": [{"operation": {"notPaths": ["/{*}/x/{name}"]}}]}),
     "spec.rules[0].to[0].operation.notPaths[0]", "FieldValueInvalid", "path template"),
    ("ap-when-key", "AuthorizationPolicy", ap({"when": [{"key": "request.color", "values": ["blue"]}]}),
     "spec.rules[0].when[0].key", "FieldValueInvalid", "unknown attribute"),
    ("ap-when-header-form", "AuthorizationPolicy", ap({"when": [{"key": "request.headers", "values": ["x"]}]}),
     "spec.rules[0].when[0].key", "FieldValueInvalid", "a[b]"),
    ("ap-when-no-values", "AuthorizationPolicy", ap({"when": [{"key": "source.ip"}]}),
     "spec.rules[0].when[0].values", "FieldValueRequired", ""),
    ("ap-when-empty-value", "AuthorizationPolicy", ap({"when": [{"key": "source.namespace", "values": [""]}]}),
     "spec.rules[0].when[0].values[0]", "FieldValueInvalid", ""),
    ("ap-when-ip", "AuthorizationPolicy", ap({"when": [{"key": "destination.ip", "values": ["not-an-ip"]}]}),
     "spec.rules[0].when[0].values[0]", "FieldValueInvalid", ""),
    ("ap-when-port", "AuthorizationPolicy", ap({"when": [{"key": "destination.port", "notValues": ["99999"]}]}),
     "spec.rules[0].when[0].notValues[0]", "FieldValueInvalid", ""),
    ("ap-when-dest-ns", "AuthorizationPolicy", ap({"when": [{"key": "destination.namespace", "values": ["a"]}]}),
     "spec.rules[0].when[0].key", "FieldValueInvalid", "metadata.namespace"),
    ("ap-custom-principals", "AuthorizationPolicy", ap({"from": [{"source": {"principals": ["a"]}}]},
                                                       action="CUSTOM", provider={"name": "opa"}),
     "spec.rules[0].from[0].source.principals", "FieldValueForbidden", "CUSTOM"),
    ("ap-selector-wildcard", "AuthorizationPolicy", ap({}, selector={"matchLabels": {"app": "*"}}),
     "spec.selector.matchLabels", "FieldValueInvalid", "wildcard"),
    # PeerAuthentication
    ("pa-mode", "PeerAuthentication", {"mtls": {"mode": "ON"}}, "spec.mtls.mode", "FieldValueNotSupported",
     "STRICT"),
    ("pa-port-level-no-selector", "PeerAuthentication", {"portLevelMtls": {"8080": {"mode": "DISABLE"}}},
     "spec.portLevelMtls", "FieldValueForbidden", "workload selector"),
    ("pa-port-level-port", "PeerAuthentication", {"selector": SEL, "portLevelMtls": {"0": {"mode": "DISABLE"}}},
     "spec.portLevelMtls[0]", "FieldValueInvalid", "1..65535"),
    ("pa-port-level-empty", "PeerAuthentication", {"selector": SEL, "portLevelMtls": {}}, "spec.portLevelMtls",
     "FieldValueRequired", ""),
    # RequestAuthentication
    ("ra-issuer", "RequestAuthentication", {"jwtRules": [{"jwksUri": "https://a.example.com/jwks"}]},
     "spec.jwtRules[0].issuer", "FieldValueRequired", ""),
    ("ra-jwks-and-uri", "RequestAuthentication", {"jwtRules": [{"issuer": "i", "jwksUri": "https://a.example.com/k",
                                                                "jwks": '{"keys": []}'}]},
     "spec.jwtRules[0].jwks", "FieldValueForbidden", "jwksUri"),
    ("ra-jwks-json", "RequestAuthentication", {"jwtRules": [{"issuer": "i", "jwks": "{not json"}]},
     "spec.jwtRules[0].jwks", "FieldValueInvalid", "jwks parse error"),
    ("ra-jwks-uri", "RequestAuthentication", {"jwtRules": [{"issuer": "i", "jwksUri": "ftp://a.example.com/k"}]},
     "spec.jwtRules[0].jwksUri", "FieldValueInvalid", "http or https"),
    ("ra-output-header", "RequestAuthentication", {"jwtRules": [{"issuer": "i", "outputClaimToHeaders": [
        {"header": "x y", "claim": "sub"}]}]}, "spec.jwtRules[0].outputClaimToHeaders[0].header", "FieldValueInvalid",
     ""),
    ("ra-timeout", "RequestAuthentication", {"jwtRules": [{"issuer": "i", "timeout": "5"}]},
     "spec.jwtRules[0].timeout", "FieldValueInvalid", "duration"),
    # Telemetry
    ("tel-custom-tag", "Telemetry", {"tracing": [{"customTags": {"t": {}}}]}, "spec.tracing[0].customTags[t]",
     "FieldValueInvalid", "exactly one of"),
    ("tel-upsert", "Telemetry", {"metrics": [{"overrides": [{"tagOverrides": {"t": {"operation": "UPSERT"}}}]}]},
     "spec.metrics[0].overrides[0].tagOverrides[t].value", "FieldValueRequired", ""),
    ("tel-remove", "Telemetry", {"metrics": [{"overrides": [{"tagOverrides": {"t": {"operation": "REMOVE",
                                                                                    "value": "x"}}}]}]},
     "spec.metrics[0].overrides[0].tagOverrides[t].value", "FieldValueForbidden", ""),
    ("tel-selector-and-target", "Telemetry", {"selector": SEL, "targetRefs": [{"kind": "Service", "name": "a"}]},
     "spec.targetRefs", "FieldValueForbidden", ""),
    # ASM TrafficLabel
    ("tl-rules", "TrafficLabel", {"workloadSelector": {"labels": {"app": "r"}}}, "spec.rules", "FieldValueRequired",
     ""),
    ("tl-name", "TrafficLabel", {"rules": [{"labels": [{"name": "bad name", "valueFrom": ["$getLabel(v)"]}]}]},
     "spec.rules[0].labels[0].name", "FieldValueInvalid", "header name"),
    ("tl-value-from-empty", "TrafficLabel", {"rules": [{"labels": [{"name": "tag"}]}]},
     "spec.rules[0].labels[0].valueFrom", "FieldValueRequired", ""),
    ("tl-unknown-variable", "TrafficLabel", {"rules": [{"labels": [{"name": "tag", "valueFrom": ["$getColor(x)"]}]}]},
     "spec.rules[0].labels[0].valueFrom[0]", "FieldValueInvalid", "must be one of"),
    ("tl-not-a-variable", "TrafficLabel", {"rules": [{"labels": [{"name": "tag", "valueFrom": ["version"]}]}]},
     "spec.rules[0].labels[0].valueFrom[0]", "FieldValueInvalid", "$getLabel(x)"),
    ("tl-arg-count", "TrafficLabel", {"rules": [{"labels": [{"name": "tag", "valueFrom": [
        "$getLabel(version)", "$getExternalInboundRequestHeader(appname)"]}]}]},
     "spec.rules[0].labels[0].valueFrom[1]", "FieldValueInvalid", "takes 2 arguments, found 1"),
    ("tl-arg-count-extra", "TrafficLabel", {"rules": [{"labels": [{"name": "tag", "valueFrom": [
        "$getInboundRequestHeader(a, b)"]}]}]}, "spec.rules[0].labels[0].valueFrom[0]", "FieldValueInvalid",
     "takes 1 argument, found 2"),
    ("tl-arg-empty", "TrafficLabel", {"rules": [{"labels": [{"name": "tag", "valueFrom": ["$getLabel()"]}]}]},
     "spec.rules[0].labels[0].valueFrom[0]", "FieldValueInvalid", "found 0"),
    # ASMSwimLaneGroup
    ("slg-services", "ASMSwimLaneGroup", {"ingress": {"gateway": {"name": "gw"}}}, "spec.services",
     "FieldValueRequired", ""),
    ("slg-service-ns", "ASMSwimLaneGroup", {"services": [{"name": "mocka"}]}, "spec.services[0].namespace",
     "FieldValueRequired", ""),
    ("slg-service-dup", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d"},
                                                          {"name": "a", "namespace": "d"}]},
     "spec.services[1]", "FieldValueDuplicate", ""),
    ("slg-cluster-id-only", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d",
                                                               "cluster": {"id": "c0f2"}}]},
     "spec.services[0].cluster.id", "FieldValueForbidden", "cluster.name"),
    ("slg-gateway-name", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d"}],
                                              "ingress": {"gateway": {"namespace": "istio-system"}}},
     "spec.ingress.gateway.name", "FieldValueRequired", ""),
    ("slg-permissive-header", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d"}],
                                                   "isPermissive": True,
                                                   "permissiveModeConfiguration": {"fallbackTarget": "s1"}},
     "spec.permissiveModeConfiguration.routeHeader", "FieldValueRequired", ""),
    ("slg-permissive-fallback", "ASMSwimLaneGroup", {
        "services": [{"name": "a", "namespace": "d"}], "isPermissive": True,
        "permissiveModeConfiguration": {"routeHeader": "x-asm-prefer-tag"}},
     "spec.permissiveModeConfiguration.fallbackTarget", "FieldValueRequired", ""),
    ("slg-permissive-missing", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d"}],
                                                    "isPermissive": True},
     "spec.permissiveModeConfiguration.routeHeader", "FieldValueRequired", ""),
    ("slg-strategy", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d"}],
                                          "ingressRoutingStrategy": "random"},
     "spec.ingressRoutingStrategy", "FieldValueNotSupported", "weighted"),
    ("slg-weighted-rule-missing", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d"}],
                                                       "ingressRoutingStrategy": "weighted"},
     "spec.weightedIngressRule", "FieldValueRequired", "ingressWeight"),
    ("slg-weighted-rule-dest", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d"}],
                                                    "ingressRoutingStrategy": "weighted",
                                                    "weightedIngressRule": {"hosts": ["*"]}},
     "spec.weightedIngressRule.route.destination", "FieldValueRequired", ""),
    ("slg-weighted-rule-forbidden", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d"}],
                                                         "weightedIngressRule": {"hosts": ["*"]}},
     "spec.weightedIngressRule", "FieldValueForbidden", "weighted"),
    ("slg-weighted-rule-header", "ASMSwimLaneGroup", {"services": [{"name": "a", "namespace": "d"}],
                                                      "ingressRoutingStrategy": "weighted",
                                                      "weightedIngressRule": {
                                                          "match": {"headers": {"test": {}}},
                                                          "route": {"destination": {"host": "a"}}}},
     "spec.weightedIngressRule.match.headers[test]", "FieldValueRequired", ""),
    # ASMSwimLane
    ("sl-rule-header-name", "ASMSwimLane", {"labelSelector": {"version": "v2"}, "ingressRules": [
        {"match": {"headers": {"bad header": {"exact": "1"}}}}]}, "spec.ingressRules[0].match.headers",
     "FieldValueInvalid", ""),
    ("sl-selector", "ASMSwimLane", {"ingressRules": []}, "spec.labelSelector", "FieldValueRequired", ""),
    ("sl-weight", "ASMSwimLane", {"labelSelector": {"version": "v2"}, "ingressWeight": 120}, "spec.ingressWeight",
     "FieldValueInvalid", "less than or equal to 100"),
    ("sl-rule-weight", "ASMSwimLane", {"labelSelector": {"version": "v2"}, "ingressRules": [{"weight": -1}]},
     "spec.ingressRules[0].weight", "FieldValueInvalid", "greater than or equal to 0"),
    ("sl-rule-uri", "ASMSwimLane", {"labelSelector": {"version": "v2"}, "ingressRules": [
        {"match": {"uri": {"exact": "/a", "prefix": "/"}}}]}, "spec.ingressRules[0].match.uri", "FieldValueInvalid",
     ""),
    ("sl-rule-dest", "ASMSwimLane", {"labelSelector": {"version": "v2"}, "ingressRules": [
        {"route": {"destination": {"host": "bad host"}}}]}, "spec.ingressRules[0].route.destination.host",
     "FieldValueInvalid", ""),
    # ASMHeaderPropagation
    ("hp-nothing", "ASMHeaderPropagation", {"workloadSelector": {"labels": {"app": "a"}}}, "spec.headers",
     "FieldValueRequired", ""),
    ("hp-both", "ASMHeaderPropagation", {"headers": ["x-a"], "headerPrefix": "x-"}, "spec.headerPrefix",
     "FieldValueForbidden", ""),
    ("hp-header", "ASMHeaderPropagation", {"headers": ["x a"]}, "spec.headers[0]", "FieldValueInvalid", ""),
    ("hp-dup", "ASMHeaderPropagation", {"headers": ["x-a", "X-A"]}, "spec.headers[1]", "FieldValueDuplicate", ""),
    # ASMOPAPolicy
    ("opa-no-policy", "ASMOPAPolicy", {"workloadSelector": {"labels": {"app": "a"}}}, "spec.policy",
     "FieldValueRequired", ""),
    ("opa-not-rego", "ASMOPAPolicy", {"policy": "package x\nallow if {{{"}, "spec.policy", "FieldValueInvalid",
     "does not compile"),
    ("opa-selector", "ASMOPAPolicy", {"policy": "package x\ndefault allow := false",
                                      "workloadSelector": {"labels": {"a b": "c"}}},
     "spec.workloadSelector.labels", "FieldValueInvalid", ""),
    ("opa-rego-id", "ASMOPAPolicy", {"policyRegoID": "Not_A_Name"}, "spec.policyRegoID", "FieldValueInvalid", ""),
    # MemberCluster
    ("mc-neither", "MemberCluster", {"network": "n1"}, "spec.kubeconfig", "FieldValueRequired",
     "one of kubeconfig or local"),
    ("mc-both", "MemberCluster", {"local": True, "kubeconfig": "apiVersion: v1"}, "spec.kubeconfig",
     "FieldValueForbidden", "local"),
    ("mc-local-false", "MemberCluster", {"local": False}, "spec.kubeconfig", "FieldValueRequired", ""),
    ("mc-zone", "MemberCluster", {"local": True, "zone": "zone 1"}, "spec.zone", "FieldValueInvalid", ""),
    ("mc-region-long", "MemberCluster", {"local": True, "region": "r" * 64}, "spec.region", "FieldValueInvalid", ""),
    ("mc-selector-values", "MemberCluster", {"local": True, "discoverySelectors": [
        {"matchExpressions": [{"key": "env", "operator": "In"}]}]},
     "spec.discoverySelectors[0].matchExpressions[0].values", "FieldValueRequired", ""),
    ("mc-selector-op", "MemberCluster", {"local": True, "discoverySelectors": [
        {"matchExpressions": [{"key": "env", "operator": "Has"}]}]},
     "spec.discoverySelectors[0].matchExpressions[0].operator", "FieldValueNotSupported", ""),
    ("mc-selector-label", "MemberCluster", {"local": True, "discoverySelectors": [{"matchLabels": {"a b": "c"}}]},
     "spec.discoverySelectors[0].matchLabels", "FieldValueInvalid", ""),
    ("mc-kubeconfig-type", "MemberCluster", {"kubeconfig": {"clusters": []}}, "spec.kubeconfig",
     "FieldValueTypeInvalid", "string"),
]


@pytest.mark.parametrize(("kind", "spec", "field", "reason", "text"), [c[1:] for c in FAILING],
                         ids=[c[0] for c in FAILING])
def test_rule_fails(kind: str, spec: dict[str, Any], field: str, reason: str, text: str) -> None:
    assert_cause(causes(kind, spec), field, reason, text)


PASSING: list[tuple[str, str, dict[str, Any]]] = [
    ("ap-allow-nothing", "AuthorizationPolicy", {}),
    ("ap-allow", "AuthorizationPolicy", ap(
        {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"], "namespaces": ["test"],
                              "ipBlocks": ["10.0.0.0/8", "192.168.1.1"]}}],
         "to": [{"operation": {"methods": ["GET"], "paths": ["/info*", "*/private", "/api/{*}/items/{**}", "*"],
                               "ports": ["8000"], "hosts": ["*.example.com"]}}],
         "when": [{"key": "request.auth.claims[iss]", "values": ["https://accounts.google.com"]},
                  {"key": "request.headers[version]", "values": ["v1", "v2"]},
                  {"key": "source.ip", "notValues": ["10.1.2.3"]},
                  {"key": "destination.port", "values": ["8000"]},
                  {"key": "experimental.envoy.filters.network.mysql_proxy[db.table]", "values": ["[update]"]}]},
        selector=SEL, action="ALLOW")),
    ("ap-deny-all", "AuthorizationPolicy", ap({}, action="DENY")),
    ("ap-custom", "AuthorizationPolicy", ap({"to": [{"operation": {"paths": ["/admin"]}}]}, action="CUSTOM",
                                            provider={"name": "opa-ext-authz"})),
    ("ap-target-ref", "AuthorizationPolicy", ap({}, targetRef={"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                                                "name": "waypoint"})),
    ("ap-audit", "AuthorizationPolicy", ap({"to": [{"operation": {"methods": ["POST"]}}]}, action="AUDIT")),
    ("pa-strict", "PeerAuthentication", {"mtls": {"mode": "STRICT"}}),
    ("pa-port-level", "PeerAuthentication", {"selector": SEL, "mtls": {"mode": "STRICT"},
                                             "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
    ("ra", "RequestAuthentication", {"selector": SEL, "jwtRules": [
        {"issuer": "testing@secure.istio.io", "jwksUri": "https://raw.example.com/jwks.json",
         "audiences": ["app"], "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}], "fromParams": ["token"],
         "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}], "forwardOriginalToken": True,
         "timeout": "5s"}]}),
    ("ra-inline-jwks", "RequestAuthentication", {"jwtRules": [{"issuer": "i", "jwks": '{"keys": [{"kty": "RSA"}]}'}]}),
    ("tel", "Telemetry", {"tracing": [{"randomSamplingPercentage": 10, "providers": [{"name": "zipkin"}],
                                       "customTags": {"env": {"literal": {"value": "prod"}}}}],
                          "accessLogging": [{"providers": [{"name": "envoy"}]}],
                          "metrics": [{"overrides": [{"tagOverrides": {"request_host": {"operation": "REMOVE"}}}]}]}),
    ("tl", "TrafficLabel", {"workloadSelector": {"labels": {"app": "reviews"}}, "rules": [{"labels": [
        {"name": "userdefinelabel1", "valueFrom": ["$getExternalInboundRequestHeader(appname, x-request-id)",
                                                   "$getLabel(version)"]},
        {"name": "asm-tag", "valueFrom": ["$getInboundRequestHeader(x-asm-prefer-tag)",
                                          "$getLocalOutboundRequestHeader(x-tag)", "$getLabel(ASM_TRAFFIC_TAG)"]}]}]}),
    ("slg-strict", "ASMSwimLaneGroup", {"ingress": {"gateway": {"name": "ingressgateway", "namespace": "istio-system",
                                                                "type": "ASM"}},
                                        "services": [{"name": "mocka", "namespace": "default"},
                                                     {"name": "mockb", "namespace": "default",
                                                      "cluster": {"name": "c1", "id": "c1"}}]}),
    ("slg-permissive", "ASMSwimLaneGroup", {"services": [{"name": "mocka", "namespace": "default"}],
                                            "isPermissive": True, "permissiveModeConfiguration": {
                                                "routeHeader": "x-asm-prefer-tag", "traceHeader": "baggage",
                                                "fallbackTarget": "s1"}}),
    ("sl", "ASMSwimLane", {"labelSelector": {"version": "v2"}, "ingressWeight": 20, "ingressRules": [
        {"name": "r1", "hosts": ["*"], "match": {"uri": {"exact": "/mock"}}, "online": True,
         "route": {"destination": {"host": "mocka.default.svc.cluster.local"}}, "weight": 60}]}),
    ("hp", "ASMHeaderPropagation", {"workloadSelector": {"labels": {"app": "a"}}, "headers": ["x-asm-prefer-tag"]}),
    ("hp-prefix", "ASMHeaderPropagation", {"headerPrefix": "x-asm-"}),
    ("opa-v1", "ASMOPAPolicy", {"workloadSelector": {"labels": {"app": "a"}}, "policy": (
        "package asm.authz\nimport rego.v1\ndefault allow := false\n"
        "allow if input.attributes.request.http.method == \"GET\"\n")}),
    ("opa-shared-publish", "ASMOPAPolicy", {"policyRegoID": "only-good", "policy": (
        "package asm.authz\nimport rego.v1\ndefault allow := false\n")}),
    ("opa-shared-use", "ASMOPAPolicy", {"workloadSelector": {"labels": {"app": "a"}}, "policyRegoID": "only-good"}),
    ("opa-v0-asm-example", "ASMOPAPolicy", {"policy": (
        "package istio.authz\ndefault allow = false\nallow {\n  input.attributes.request.http.path == \"/\"\n}\n")}),
    ("mc-local", "MemberCluster", {"local": True, "network": "network1", "region": "us-east", "zone": "us-east-1a"}),
    ("mc-kubeconfig", "MemberCluster", {"kubeconfig": "apiVersion: v1\nkind: Config\n", "network": "n2",
                                        "discoverySelectors": [{"matchLabels": {"istio-discovery": "enabled"}},
                                                               {"matchExpressions": [{"key": "env", "operator": "In",
                                                                                      "values": ["prod"]}]}]}),
]


@pytest.mark.parametrize(("kind", "spec"), [c[1:] for c in PASSING], ids=[c[0] for c in PASSING])
def test_rule_passes(kind: str, spec: dict[str, Any]) -> None:
    kw: dict[str, Any] = {"labels": {"swimlane-group": "mock"}} if kind == "ASMSwimLane" else {}
    ok(kind, spec, **kw)


def test_deny_with_only_http_attributes_warns() -> None:
    warnings = ok("AuthorizationPolicy", ap({"to": [{"operation": {"methods": ["GET"]}}]}, action="DENY"))
    assert any("TCP ports" in w for w in warnings)
    assert not any("TCP" in w for w in ok("AuthorizationPolicy", ap({"to": [{"operation": {"ports": ["80"]}}]},
                                                                    action="DENY")))


def test_dry_run_annotation_rules() -> None:
    found = causes("AuthorizationPolicy", ap({}, action="CUSTOM", provider={"name": "opa"}),
                   annotations={"istio.io/dry-run": "true"})
    assert_cause(found, "metadata.annotations[istio.io/dry-run]", "FieldValueInvalid", "ALLOW or DENY")
    found = causes("AuthorizationPolicy", ap({}), annotations={"istio.io/dry-run": "maybe"})
    assert_cause(found, "metadata.annotations[istio.io/dry-run]", "FieldValueInvalid", "true or false")


def test_lane_without_group_label_warns() -> None:
    warnings = ok("ASMSwimLane", {"labelSelector": {"version": "v2"}})
    assert any("swimlane-group" in w for w in warnings)


def test_lane_group_fields_not_applied_are_warned_about() -> None:
    svc = {"name": "a", "namespace": "d", "cluster": {"name": "c1", "id": "c0f2"}}
    warnings = ok("ASMSwimLaneGroup", {"services": [svc], "ingress": {"gateway": {"name": "gw", "type": "ACK"}}})
    assert sorted(w.split(":")[0] for w in warnings) == ["spec.ingress.gateway.type", "spec.services[0].cluster.id"]


def test_membercluster_needs_no_namespace() -> None:
    assert ok("MemberCluster", {"local": True}, namespace=None) == []


def test_peer_authentication_with_selector_in_root_namespace_warns() -> None:
    """Accepted (Istio accepts it) but it applies to nothing: the warning names the field."""
    spec = {"selector": {"matchLabels": {"app": "httpbin"}}, "mtls": {"mode": "STRICT"}}
    warnings = ok("PeerAuthentication", spec, namespace="istio-system")
    assert any(w.startswith("spec.selector:") and "applies to no workload" in w for w in warnings)
    assert not ok("PeerAuthentication", spec, namespace="foo")
    assert not ok("PeerAuthentication", {"mtls": {"mode": "STRICT"}}, namespace="istio-system")


def test_telemetry_parts_not_carried_out_are_warned_about_by_field() -> None:
    spec = {"metrics": [{"providers": [{"name": "stackdriver"}], "overrides": [
        {"match": {"customMetric": "my_metric"}},
        {"tagOverrides": {"ok": {"value": "request.host"}, "cel": {"value": "request.size > 10"}}}]}],
        "accessLogging": [{"filter": {"expression": "response.code >= 500"}},
                          {"filter": {"expression": "request.method == 'GET'"}}],
        "tracing": [{"randomSamplingPercentage": 10, "useRequestIdForTraceSampling": True}]}
    warnings = ok("Telemetry", spec)
    assert {w.split(":")[0] for w in warnings} == {
        "spec.metrics[0].providers[0]", "spec.metrics[0].overrides[0].match.customMetric",
        "spec.metrics[0].overrides[1].tagOverrides[cel].value", "spec.accessLogging[1].filter.expression",
        "spec.tracing[0].useRequestIdForTraceSampling"}
    assert ok("Telemetry", {"tracing": [{"randomSamplingPercentage": 100, "customTags": {
        "k": {"literal": {"value": "v"}}}}]}) == [], "tracing is applied: no warning"
    applied = {"accessLogging": [{"providers": [{"name": "envoy"}]}],
               "metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT"}, "disabled": True}]}]}
    assert ok("Telemetry", applied) == []


@pytest.mark.parametrize("kind", ["AuthorizationPolicy", "RequestAuthentication", "Telemetry"])
def test_a_service_target_is_warned_about_and_a_gateway_target_is_not(kind: str) -> None:
    gateway = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}
    assert not [w for w in ok(kind, {"targetRefs": [gateway]}) if "targetRef" in w]
    warnings = ok(kind, {"targetRefs": [gateway, {"kind": "Service", "name": "reviews"}]})
    assert [w.split(":")[0] for w in warnings if "waypoint" in w] == ["spec.targetRefs[1]"]
