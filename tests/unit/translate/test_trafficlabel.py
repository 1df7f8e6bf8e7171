"""TrafficLabel and ASMHeaderPropagation -> Lua scripts per virtual host: who gets a script, what it resolves, and
that the generated config (sidecar inbound + outbound, gateway) passes ``envoy --mode validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import context, envoy_validate, gateway, listeners, routes, sidecar
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.lua.v3 import lua_pb2

from meshplane.model.spec import ConfigObject, decode_object
from meshplane.translate.trafficlabel import (
    LUA,
    inbound_script,
    labels_for,
    outbound_script,
    parse_source,
    propagation_for,
)
from tests.unit.translate.test_fallback import mock_registry, mock_sidecar


def traffic_label(sources: list[str], selector: dict[str, str] | None = None, name: str = "tl") -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": [{"labels": [{"name": "x-lane", "valueFrom": sources}]}]}
    if selector:
        spec["workloadSelector"] = {"labels": selector}
    return {"apiVersion": "istio.alibabacloud.com/v1", "kind": "TrafficLabel",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


PROPAGATION = {"apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "ASMHeaderPropagation",
               "metadata": {"name": "hp", "namespace": "default"}, "spec": {"headers": ["x-asm-prefer-tag"]}}


def typed(*objs: dict[str, Any]) -> list[ConfigObject[Any]]:
    """Stored objects as translation reads them (decoded once, as the config controller does)."""
    return [decode_object(str(o["apiVersion"]).rpartition("/")[0], str(o["kind"]), o) for o in objs]


SOURCES = ["$getExternalInboundRequestHeader(appname, x-request-id)", "$getLabel(ASM_TRAFFIC_TAG)"]


def test_sources_resolve_per_proxy() -> None:
    p = mock_sidecar("mocka", "v2")
    assert parse_source("$getLabel(ASM_TRAFFIC_TAG)", p) == ("c", "v2")
    assert parse_source("$getLabel(missing)", p) is None
    assert parse_source("$getExternalInboundRequestHeader(appname, x-request-id)", p) == ("x", "appname",
                                                                                          "x-request-id")
    assert parse_source("$getExternalInboundRequestHeader(appname, x-request-id)", gateway()) == ("h", "appname")
    assert parse_source("$getLocalOutboundRequestHeader(X-Foo)", p) == ("h", "x-foo")


def test_scripts_only_for_selected_workloads() -> None:
    tl = typed(traffic_label(SOURCES, {"app": "mocka"}))
    script = outbound_script(mock_sidecar("mocka", "v2"), tl, [])
    assert script is not None and '"v2"' in script and "clearRouteCache" in script
    assert outbound_script(mock_sidecar("mockb", "v1"), tl, []) is None
    inbound = inbound_script(mock_sidecar("mocka", "v2"), tl)
    assert inbound is not None and '{"appname", "x-request-id"}' in inbound
    assert inbound_script(mock_sidecar("mocka", "v2"), typed(traffic_label(["$getLabel(version)"]))) is None


def test_routes_and_inbound_carry_scripts() -> None:
    ctx = context([*mock_registry(), traffic_label(SOURCES), PROPAGATION])
    proxy = mock_sidecar("mocka", "v1")
    for rcfg in routes(proxy, ctx):
        for vh in rcfg.virtual_hosts:
            assert '"v1"' in _script(vh)
    # Routes differ per workload now ($getLabel): v2's script says v2.
    other = routes(mock_sidecar("mocka", "v2"), ctx)[0].virtual_hosts[0]
    assert '"v2"' in _script(other)
    assert any(name.startswith("inbound_") for name in listeners(proxy, ctx))


def _script(vh: Any) -> str:
    """The Lua script a virtual host enables (the filter is disabled by default and enabled per virtual host)."""
    wrapper = rc.FilterConfig()
    assert vh.typed_per_filter_config[LUA].Unpack(wrapper) and not wrapper.disabled
    per = lua_pb2.LuaPerRoute()
    assert wrapper.config.Unpack(per)
    return str(per.source_code.inline_string)


@pytest.mark.envoy
def test_trafficlabel_config_validates(tmp_path: Path) -> None:
    gw_label = {**traffic_label(["$getInboundRequestHeader(x-user)"]), "metadata": {"name": "gw",
                                                                                     "namespace": "istio-system"}}
    ctx = context([*mock_registry(), traffic_label(SOURCES), PROPAGATION, gw_label])
    envoy_validate(mock_sidecar("mockb", "v1"), ctx, tmp_path)
    envoy_validate(sidecar("mocka", "v1", ip="127.0.3.1", INTERCEPTION_MODE="REDIRECT", inbound="http:8000"),
                   ctx, tmp_path)
    envoy_validate(gateway(), ctx, tmp_path)


def test_typed_labels_and_propagation() -> None:
    p = mock_sidecar("mocka", "v2")
    b_label = traffic_label(["bogus", "$getLabel(ASM_TRAFFIC_TAG)"], name="b")
    a_label = traffic_label(["$getInboundRequestHeader(X-User)"], {"app": "mocka"}, name="a")
    a_label["spec"]["rules"][0]["labels"][0]["name"] = "X-From-A"
    elsewhere = {**traffic_label(["$getLabel(app)"], name="c"), "metadata": {"name": "c", "namespace": "prod"}}
    assert labels_for(p, typed(b_label, a_label, elsewhere)) == [("x-from-a", [("h", "x-user")]),
                                                               ("x-lane", [("c", "v2")])]
    prefix = {"apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "ASMHeaderPropagation",
              "metadata": {"name": "pre", "namespace": "default"},
              "spec": {"headerPrefix": "X-Pre-", "workloadSelector": {"labels": {"app": "mocka"}}}}
    other = {**prefix, "metadata": {"name": "other", "namespace": "default"},
             "spec": {"headers": ["x-b"], "workloadSelector": {"labels": {"app": "mockb"}}}}
    assert propagation_for(p, typed(PROPAGATION, prefix, other, PROPAGATION)) == (["x-asm-prefer-tag"], ["X-Pre-"])
    script = outbound_script(p, [], typed(prefix))
    assert script is not None and 'local KEY_PREFIXES = {"x-pre-"}' in script


def test_labels_attached_to_opentracing_are_span_tags() -> None:
    from meshplane.translate.trafficlabel import span_tags

    attached = traffic_label(["$getLabel(ASM_TRAFFIC_TAG)"], {"app": "mocka"})
    attached["spec"]["rules"][0]["attachTo"] = ["opentracing"]
    plain = traffic_label(["$getLabel(ASM_TRAFFIC_TAG)"], name="plain")
    plain["spec"]["rules"][0]["labels"][0]["name"] = "x-other"
    objs = typed(attached, plain)
    assert span_tags(mock_sidecar("mocka", "v1"), objs) == ("x-lane",)
    assert span_tags(mock_sidecar("mockb", "v1"), objs) == ()
