"""MeshConfig documents -> MeshSettings: Istio's field names applied, kept with a warning, or refused naming the
field; and the ext_authz filter every CUSTOM provider field becomes (HTTP and gRPC), validated by Envoy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import bookinfo_registry, clusters, context, envoy_validate, hcm_of, listeners, sidecar
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2

from meshplane.translate import MeshSettings
from meshplane.translate.meshconfig import MeshConfigError, parse_mesh_config, parse_mesh_yaml

# Istio's ext-authz task, as written there (ports as strings).
TASK = """
extensionProviders:
- name: "sample-ext-authz-grpc"
  envoyExtAuthzGrpc:
    service: "ext-authz.foo.svc.cluster.local"
    port: "9000"
- name: "sample-ext-authz-http"
  envoyExtAuthzHttp:
    service: "ext-authz.foo.svc.cluster.local"
    port: "8000"
    includeRequestHeadersInCheck: ["x-ext-authz"]
"""

FULL_HTTP: dict[str, Any] = {
    "service": "127.0.0.1", "port": 8000, "timeout": "250ms", "pathPrefix": "/check", "failOpen": True,
    "clearRouteCache": True, "statusOnError": "503", "includeRequestHeadersInCheck": ["x-ext-authz", "x-b3-*"],
    "includeAdditionalHeadersInCheck": {"x-added": "yes"}, "headersToUpstreamOnAllow": ["x-user"],
    "headersToDownstreamOnAllow": ["x-ok"], "headersToDownstreamOnDeny": ["x-why", "*-reason"],
    "includeRequestBodyInCheck": {"maxRequestBytes": 4096, "allowPartialMessage": True, "packAsBytes": True},
}


def test_the_istio_task_mesh_config() -> None:
    cfg = parse_mesh_yaml(TASK)
    grpc, http = cfg.settings.ext_authz_providers
    assert (grpc.name, grpc.service, grpc.port, grpc.http) == ("sample-ext-authz-grpc",
                                                               "ext-authz.foo.svc.cluster.local", 9000, False)
    assert (http.port, http.http, http.include_request_headers) == (8000, True, ("x-ext-authz",))
    assert http.timeout_s == 600.0 and not http.fail_open  # Istio's defaults
    assert cfg.warnings == ()


def test_applied_kept_and_ignored_fields() -> None:
    base = MeshSettings(inbound_mtls=True)
    cfg = parse_mesh_config({
        "rootNamespace": "mesh-root", "trustDomain": "example.org", "connectTimeout": "2.5s",
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}, "enableAutoMtls": False,
        "localityLbSetting": {"enabled": False}, "defaultHttpRetryPolicy": {"attempts": 0},
        "accessLogFile": "/dev/stdout", "accessLogEncoding": "JSON", "enableTracing": True,
        "defaultConfig": {"discoveryAddress": "istiod:15012", "concurrency": 2},
        "ingressClass": "istio",
        "extensionProviders": [{"name": "otel", "opentelemetry": {"service": "otel.obs", "port": 4317}},
                               {"name": "log", "envoyFileAccessLog": {"path": "/dev/stdout"}},
                               {"name": "prom", "prometheus": {}}],
    }, base)
    s = cfg.settings
    assert (s.root_namespace, s.trust_domain, s.connect_timeout_s, s.outbound_traffic_policy) == (
        "mesh-root", "example.org", 2.5, "REGISTRY_ONLY")
    assert (s.auto_mtls, s.locality_lb_enabled, s.default_retry_attempts, s.inbound_mtls) == (False, False, 0, True)
    assert (s.access_log_file, s.access_log_encoding, s.enable_tracing) == ("/dev/stdout", "JSON", True)
    assert dict(s.default_config) == {"discoveryAddress": "istiod:15012", "concurrency": "2"}
    assert [(p.name, p.kind) for p in s.telemetry_providers] == [
        ("otel", "opentelemetry"), ("log", "envoyFileAccessLog"), ("prom", "prometheus")]
    assert dict(s.telemetry_providers[0].fields) == {"service": "otel.obs", "port": "4317"}
    fields = {w.split(":")[0] for w in cfg.warnings}
    assert {"defaultConfig", "ingressClass"} <= fields
    # Applied now (tracing): no "not applied" warning for enableTracing or the opentelemetry provider.
    assert not fields & {"enableTracing", "extensionProviders[0].opentelemetry"}
    # Applied now (the mesh-wide access log, file access-log providers): no "not applied" warning.
    assert not fields & {"accessLogFile", "accessLogEncoding", "extensionProviders[1].envoyFileAccessLog"}


@pytest.mark.parametrize(("doc", "field"), [
    ({"noSuchField": 1}, "noSuchField"),
    ({"connectTimeout": "soon"}, "connectTimeout"),
    ({"outboundTrafficPolicy": {"mode": "OPEN"}}, "outboundTrafficPolicy.mode"),
    ({"extensionProviders": [{"name": "a", "envoyExtAuthzHttp": {"service": "s"}}]},
     "extensionProviders[0].envoyExtAuthzHttp.port"),
    ({"extensionProviders": [{"name": "a", "envoyExtAuthzGrpc": {"service": "s", "port": 70000}}]},
     "extensionProviders[0].envoyExtAuthzGrpc.port"),
    ({"extensionProviders": [{"name": "a", "envoyExtAuthzGrpc": {"service": "s", "port": 1, "pathPrefix": "/x"}}]},
     "extensionProviders[0].envoyExtAuthzGrpc.pathPrefix"),
    ({"extensionProviders": [{"name": "a", "envoyExtAuthzHttp": {"service": "s", "port": 1,
                                                                  "includeHeadersInCheck": ["a"]}}]},
     "extensionProviders[0].envoyExtAuthzHttp.includeHeadersInCheck"),
    ({"extensionProviders": [{"name": "a", "envoyExtAuthzHttp": {"service": "s", "port": 1,
                                                                  "statusOnError": "299"}}]},
     "extensionProviders[0].envoyExtAuthzHttp.statusOnError"),
    ({"extensionProviders": [{"name": "a", "envoyExtAuthzHttp": {"service": "s", "port": 1, "timeout": "x"}}]},
     "extensionProviders[0].envoyExtAuthzHttp.timeout"),
    ({"extensionProviders": [{"name": "a", "zipkin": {"port": 9411}}]}, "extensionProviders[0].zipkin.service"),
    ({"extensionProviders": [{"name": "a", "prometheus": {}}, {"name": "a", "prometheus": {}}]},
     "extensionProviders[1].name"),
    ({"extensionProviders": [{"name": "a", "magic": {}}]}, "extensionProviders[0].magic"),
    ({"extensionProviders": [{"name": "a"}]}, "extensionProviders[0]"),
    ({"defaultConfig": {"image": {}}}, "defaultConfig.image"),
])
def test_refused_fields_are_named(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(MeshConfigError) as e:
        parse_mesh_config(doc)
    assert e.value.field == field, str(e.value)
    assert str(e.value).startswith(f"{field}: ")


def test_not_yaml_or_not_a_map() -> None:
    with pytest.raises(MeshConfigError, match="not YAML"):
        parse_mesh_yaml("a: [")
    with pytest.raises(MeshConfigError, match="must be an object"):
        parse_mesh_yaml("- 1")
    assert parse_mesh_yaml("").settings == MeshSettings()


SEC = "security.istio.io/v1"


def _custom(provider: str, name: str = "ext-authz") -> dict[str, Any]:
    return {"apiVersion": SEC, "kind": "AuthorizationPolicy", "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "reviews"}}, "action": "CUSTOM",
                     "provider": {"name": provider}, "rules": [{"to": [{"operation": {"paths": ["/headers"]}}]}]}}


def _http_filters(ctx: Any) -> list[Any]:
    h = hcm_of(listeners(sidecar("reviews"), ctx)["inbound_127.0.1.3_9080"].filter_chains[0])
    assert h is not None
    out: list[Any] = []
    for f in h.http_filters:
        if f.name == "envoy.filters.http.ext_authz":
            e = ext_authz_pb2.ExtAuthz()
            assert f.typed_config.Unpack(e)
            out.append(e)
        elif f.name == "envoy.filters.http.rbac":
            r = http_rbac_pb2.RBAC()
            assert f.typed_config.Unpack(r)
            out.append(r)
    return out


def test_every_http_provider_field_reaches_envoy(tmp_path: Path) -> None:
    mesh = parse_mesh_config({"extensionProviders": [{"name": "http", "envoyExtAuthzHttp": FULL_HTTP}]}).settings
    ctx = context([*bookinfo_registry(), _custom("http")], mesh)
    marker, ea = _http_filters(ctx)
    assert list(marker.shadow_rules.policies) == ["istio-ext-authz-ns[default]-policy[ext-authz]-rule[0]"]
    hs = ea.http_service
    assert hs.server_uri.cluster == "extauthz|http" and hs.server_uri.timeout.ToMilliseconds() == 250
    assert hs.path_prefix == "/check"
    assert [(h.key, h.value) for h in hs.authorization_request.headers_to_add] == [("x-added", "yes")]
    assert [p.exact for p in hs.authorization_response.allowed_upstream_headers.patterns] == ["x-user"]
    assert [p.exact for p in hs.authorization_response.allowed_client_headers_on_success.patterns] == ["x-ok"]
    deny = hs.authorization_response.allowed_client_headers.patterns
    assert (deny[0].exact, deny[1].suffix) == ("x-why", "-reason")
    assert [(p.exact, p.prefix, p.ignore_case) for p in ea.allowed_headers.patterns] == [
        ("x-ext-authz", "", True), ("", "x-b3-", True)]
    assert ea.failure_mode_allow and ea.clear_route_cache and ea.status_on_error.code == 503
    assert (ea.with_request_body.max_request_bytes, ea.with_request_body.allow_partial_message,
            ea.with_request_body.pack_as_bytes) == (4096, True, True)
    proxy = sidecar("reviews")
    assert "extauthz|http" in clusters(proxy, ctx)
    envoy_validate(proxy, ctx, tmp_path)


def test_grpc_provider_on_a_mesh_service_and_fail_closed_cases(tmp_path: Path) -> None:
    mesh = parse_mesh_yaml(TASK.replace("ext-authz.foo.svc.cluster.local", "ratings.default.svc.cluster.local")
                           .replace('"9000"', '"9080"')).settings
    ctx = context([*bookinfo_registry(), _custom("sample-ext-authz-grpc")], mesh)
    _, ea = _http_filters(ctx)
    assert ea.grpc_service.envoy_grpc.cluster_name == "outbound|9080||ratings.default.svc.cluster.local"
    assert ea.grpc_service.timeout.seconds == 600 and not ea.failure_mode_allow
    envoy_validate(sidecar("reviews"), ctx, tmp_path)
    # The task's HTTP provider names only includeRequestHeadersInCheck: the other header lists stay unset.
    http = parse_mesh_yaml(TASK.replace("ext-authz.foo.svc.cluster.local", "127.0.0.1")).settings
    envoy_validate(sidecar("reviews"), context([*bookinfo_registry(), _custom("sample-ext-authz-http")], http),
                   tmp_path)
    # Undeclared provider, unknown service (port 8000 is not a ratings port), two providers: deny (fail closed).
    for objs in ([_custom("nobody")], [_custom("sample-ext-authz-http")],
                 [_custom("sample-ext-authz-grpc"), _custom("other", name="second")]):
        (deny,) = _http_filters(context([*bookinfo_registry(), *objs], mesh))
        assert deny.rules.action == rbac_pb2.RBAC.DENY and deny.rules.policies, objs
