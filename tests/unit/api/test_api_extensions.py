"""Admission of the extension kinds: ASMLocalRateLimiter (ASM's documented example passes; what meshplane cannot
make take effect is refused or warned about, naming the field)."""

from __future__ import annotations

from typing import Any

import pytest
from _api_helpers import assert_cause, causes, ok

GATEWAY_EXAMPLE = {  # ASM's field reference, gateway example
    "workloadSelector": {"labels": {"app": "istio-ingressgateway"}},
    "isGateway": True,
    "configs": [
        {"match": {"vhost": {"name": "www.example1.com", "port": 80, "route": {"name_match": "test1"}}},
         "limit": {"fill_interval": {"seconds": 1}, "quota": 10}},
        {"match": {"vhost": {"name": "www.example2.com", "port": 80, "route": {"name_match": "test1"}}},
         "limit": {"fill_interval": {"seconds": 1}, "quota": 100}},
    ],
}


def rule(**extra: Any) -> dict[str, Any]:
    return {"match": {"vhost": {"name": "*", "port": 8000}},
            "limit": {"fill_interval": {"seconds": 60}, "quota": 10}, **extra}


def limiter(*rules: dict[str, Any], gateway: bool = False) -> dict[str, Any]:
    return {"workloadSelector": {"labels": {"app": "httpbin"}}, "isGateway": gateway, "configs": list(rules)}


def test_asm_examples_pass() -> None:
    assert ok("ASMLocalRateLimiter", GATEWAY_EXAMPLE) == []
    overrides = rule(limit_overrides=[{"request_match": {"header_match": [{"name": "x-user", "exact_match": "a"}],
                                                         "query_match": [{"name": "q", "prefix_match": "v"}]},
                                       "limit": {"fill_interval": {"seconds": 1}, "quota": 1}}])
    overrides["limit"] |= {"per_downstream_connection": True, "custom_response_body": "slow down", "status": 503,
                           "response_header_to_add": {"x-limited": "1"}}
    assert ok("ASMLocalRateLimiter", limiter(overrides)) == []


FAILING = [
    ("no-configs", {"workloadSelector": {"labels": {"app": "a"}}}, "spec.configs", "FieldValueRequired", ""),
    ("no-port", limiter({"match": {"vhost": {"name": "*"}}, "limit": {"fill_interval": {"seconds": 1}, "quota": 1}}),
     "spec.configs[0].match.vhost.port", "FieldValueRequired", ""),
    ("gateway-no-host", limiter(rule(match={"vhost": {"port": 80}}), gateway=True),
     "spec.configs[0].match.vhost.name", "FieldValueRequired", "host"),
    ("short-interval", limiter(rule(limit={"fill_interval": {"nanos": 1000}, "quota": 1})),
     "spec.configs[0].limit.fill_interval", "FieldValueInvalid", "50ms"),
    ("route-header-match", limiter(rule(match={"vhost": {"port": 8000, "route": {"header_match": [
        {"name": ":path", "prefix_match": "/"}]}}})),
     "spec.configs[0].match.vhost.route.header_match", "FieldValueForbidden", "limit_overrides"),
    ("override-no-match", limiter(rule(limit_overrides=[{"request_match": {}, "limit": {
        "fill_interval": {"seconds": 1}, "quota": 1}}])),
     "spec.configs[0].limit_overrides[0].request_match", "FieldValueRequired", ""),
    ("override-two-kinds", limiter(rule(limit_overrides=[{"request_match": {"header_match": [
        {"name": "a", "exact_match": "1", "prefix_match": "2"}]}, "limit": {"fill_interval": {"seconds": 1},
                                                                              "quota": 1}}])),
     "spec.configs[0].limit_overrides[0].request_match.header_match[0].prefix_match", "FieldValueForbidden", ""),
    ("bad-status", limiter(rule(limit={"fill_interval": {"seconds": 1}, "quota": 1, "status": 200})),
     "spec.configs[0].limit.status", "FieldValueInvalid", ""),
]


@pytest.mark.parametrize(("spec", "field", "reason", "text"), [c[1:] for c in FAILING], ids=[c[0] for c in FAILING])
def test_local_rate_limiter_refused(spec: dict[str, Any], field: str, reason: str, text: str) -> None:
    assert_cause(causes("ASMLocalRateLimiter", spec), field, reason, text)


def test_unimplemented_fields_are_warned_by_name() -> None:
    spec = limiter(rule())
    spec["applyToTraffic"] = "sidecar_outbound"
    warnings = ok("ASMLocalRateLimiter", spec)
    assert any("applyToTraffic" in w for w in warnings), warnings
    spec = limiter(rule(match={"vhost": {"name": "httpbin", "port": 8000}}))
    assert any("spec.configs[0].match.vhost.name" in w for w in ok("ASMLocalRateLimiter", spec))


WASM = {"selector": {"matchLabels": {"app": "reviews"}}, "url": "file:///opt/plugins/add_header.wasm",
        "phase": "AUTHZ", "priority": 10, "pluginConfig": {"greeting": "hi", "n": [1, 2]}, "pluginName": "root",
        "failStrategy": "FAIL_OPEN", "vmConfig": {"env": [{"name": "A", "value": "1"},
                                                         {"name": "POD_NAME", "valueFrom": "HOST"}]},
        "match": [{"mode": "SERVER", "ports": [{"number": 9080}]}]}


def test_wasm_plugin_from_a_file_passes() -> None:
    assert ok("WasmPlugin", WASM) == []


WASM_FAILING = [
    ("oci", {"url": "oci://ghcr.io/x/plugin:1"}, "spec.url", "FieldValueNotSupported", "file://"),
    ("https", {"url": "https://example.com/p.wasm"}, "spec.url", "FieldValueNotSupported", ""),
    ("bare", {"url": "ghcr.io/x/plugin:1"}, "spec.url", "FieldValueNotSupported", ""),
    ("relative", {"url": "file://plugins/p.wasm"}, "spec.url", "FieldValueInvalid", ""),
    ("network", {"type": "NETWORK"}, "spec.type", "FieldValueForbidden", "network"),
    ("target-service", {"selector": None, "targetRefs": [{"kind": "Service", "name": "reviews"}]},
     "spec.targetRefs[0].kind", "FieldValueNotSupported", ""),
    ("selector-and-target", {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io",
                                             "name": "gw"}]}, "spec.selector", "FieldValueForbidden", ""),
    ("host-env-value", {"vmConfig": {"env": [{"name": "A", "valueFrom": "HOST", "value": "x"}]}},
     "spec.vmConfig.env[0].value", "FieldValueForbidden", ""),
    ("bad-sha", {"sha256": "abc"}, "spec.sha256", "FieldValueInvalid", ""),
]


@pytest.mark.parametrize(("patch", "field", "reason", "text"), [c[1:] for c in WASM_FAILING],
                         ids=[c[0] for c in WASM_FAILING])
def test_wasm_plugin_refused(patch: dict[str, Any], field: str, reason: str, text: str) -> None:
    spec = {k: v for k, v in {**WASM, **patch}.items() if v is not None}
    assert_cause(causes("WasmPlugin", spec), field, reason, text)


def test_wasm_plugin_pull_fields_are_warned() -> None:
    warnings = ok("WasmPlugin", {**WASM, "sha256": "a" * 64, "imagePullPolicy": "Always", "imagePullSecret": "s"})
    for field in ("spec.sha256", "spec.imagePullPolicy", "spec.imagePullSecret"):
        assert any(w.startswith(field) for w in warnings), (field, warnings)


EF_VALUE = """apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
spec:
  configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: ANY
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
        portNumber: 80
    patch:
      operation: MERGE
      value:
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          http2_protocol_options:
            initial_connection_window_size: 65536
            initial_stream_window_size: 65536
  priority: 0
"""


def test_asm_template_example_passes() -> None:  # ASM's field reference example
    spec = {"templates": [{"istioVersion": "1.19-MAX_VERSION", "value": EF_VALUE}]}
    assert ok("EnvoyFilterTemplate", spec, namespace="istio-system") == []
    assert ok("EnvoyFilterTemplateBinding", {"templateRef": {"istioVersion": "1.20", "name": "seth2windows"}},
              namespace="istio-system") == []


TEMPLATE_FAILING = [
    ("bad-range", {"templates": [{"istioVersion": "1.21-1.19", "value": EF_VALUE}]},
     "spec.templates[0].istioVersion", "FieldValueInvalid", "MAJOR.MINOR"),
    ("overlap", {"templates": [{"istioVersion": "1.19-MAX_VERSION", "value": EF_VALUE},
                               {"istioVersion": "1.20", "value": EF_VALUE}]},
     "spec.templates[1].istioVersion", "FieldValueInvalid", "overlaps spec.templates[0]"),
    ("not-yaml", {"templates": [{"istioVersion": "1.20", "value": "a: [b"}]},
     "spec.templates[0].value", "FieldValueInvalid", "YAML"),
    ("other-kind", {"templates": [{"istioVersion": "1.20", "value": "apiVersion: v1\nkind: ConfigMap\nspec: {}"}]},
     "spec.templates[0].value", "FieldValueInvalid", "EnvoyFilter"),
    ("bad-envoy-filter", {"templates": [{"istioVersion": "1.20", "value": EF_VALUE.replace(
        "initial_stream_window_size", "initial_stream_window_sighs")}]},
     "spec.templates[0].value: spec.configPatches[0].patch.value", "FieldValueInvalid", "initial_stream_window_sighs"),
]


@pytest.mark.parametrize(("spec", "field", "reason", "text"), [c[1:] for c in TEMPLATE_FAILING],
                         ids=[c[0] for c in TEMPLATE_FAILING])
def test_envoy_filter_template_refused(spec: dict[str, Any], field: str, reason: str, text: str) -> None:
    assert_cause(causes("EnvoyFilterTemplate", spec), field, reason, text)


def test_binding_refused() -> None:
    assert_cause(causes("EnvoyFilterTemplateBinding", {"templateRef": {"istioVersion": "1.20.1", "name": "t"}}),
                 "spec.templateRef.istioVersion", "FieldValueInvalid", "MAJOR.MINOR")
    assert_cause(causes("EnvoyFilterTemplateBinding", {"templateRef": {"istioVersion": "1.20"}}),
                 "spec.templateRef.name", "FieldValueRequired")


def test_template_value_metadata_is_warned() -> None:
    value = EF_VALUE.replace("kind: EnvoyFilter\n", "kind: EnvoyFilter\nmetadata:\n  name: x\n")
    warnings = ok("EnvoyFilterTemplate", {"templates": [{"istioVersion": "1.20", "value": value}]})
    assert any(w.startswith("spec.templates[0].value: metadata is not used") for w in warnings), warnings
