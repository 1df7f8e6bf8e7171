"""EnvoyFilter patches on generated config (``translate.envoyfilter``): Istio's selection, order, contexts, matches and
operations, checked on the protos a proxy receives; the patched config passes ``envoy --mode validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import (
    bookinfo_registry,
    clusters,
    context,
    envoy_validate,
    fqdn,
    gateway,
    hcm_of,
    listeners,
    routes,
    sidecar,
)
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshplane.model import envoyproto
from meshplane.translate import MeshSettings, PushContext
from meshplane.translate.envoyfilter import patches_for

HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
LUA_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"


def ef(name: str, patches: list[dict[str, Any]], *, ns: str = "default", selector: dict[str, str] | None = None,
       priority: int | None = None, created: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"configPatches": patches, **spec}
    if selector is not None:
        s["workloadSelector"] = {"labels": selector}
    if priority is not None:
        s["priority"] = priority
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "spec": s}


def lua(name: str = "envoy.lua", code: str = "function envoy_on_request(h) end") -> dict[str, Any]:
    return {"name": name, "typed_config": {"@type": LUA_TYPE, "inlineCode": code}}


def http_filter(op: str, value: dict[str, Any] | None, *, context: str = "SIDECAR_INBOUND", port: int | None = None,
                sub: str | None = ROUTER) -> dict[str, Any]:
    listener: dict[str, Any] = {"filterChain": {"filter": {"name": HCM}}}
    if sub is not None:
        listener["filterChain"]["filter"]["subFilter"] = {"name": sub}
    if port is not None:
        listener["portNumber"] = port
    patch: dict[str, Any] = {"operation": op}
    if value is not None:
        patch["value"] = value
    return {"applyTo": "HTTP_FILTER", "match": {"context": context, "listener": listener}, "patch": patch}


def inbound_http_filters(proxy: Any, ctx: Any, port: int = 9080) -> list[str]:
    lst = listeners(proxy, ctx)[f"inbound_{proxy.listen_address}_{port}"]
    h = hcm_of(lst.filter_chains[0])
    assert h is not None
    return [f.name for f in h.http_filters]


def outbound_http_filters(proxy: Any, ctx: Any) -> list[str]:
    lst = listeners(proxy, ctx)[f"{proxy.listen_address}_15001"]
    h = hcm_of(lst.filter_chains[0])
    assert h is not None
    return [f.name for f in h.http_filters]


REVIEWS = sidecar("reviews", "v1", inbound="http:9080")


def ctx_with(objs: list[dict[str, Any]], mesh: MeshSettings | None = None) -> PushContext:
    return context([*bookinfo_registry(), *objs], mesh)


def test_lua_insert_before_router_on_the_selected_inbound_port_only() -> None:
    ctx = ctx_with([ef("reviews-lua", [http_filter("INSERT_BEFORE", lua(), port=9080)],
                                            selector={"app": "reviews"})])
    names = inbound_http_filters(REVIEWS, ctx)
    assert names.index("envoy.lua") == names.index(ROUTER) - 1
    assert "envoy.lua" not in outbound_http_filters(REVIEWS, ctx)  # SIDECAR_INBOUND only
    other = sidecar("ratings", "v1", inbound="http:9080")
    assert "envoy.lua" not in inbound_http_filters(other, ctx)  # workloadSelector
    wrong_port = ctx_with([ef("x", [http_filter("INSERT_BEFORE", lua(), port=9999)])])
    assert "envoy.lua" not in inbound_http_filters(REVIEWS, wrong_port)


def test_operations_on_http_filters() -> None:
    def filters(*patches: dict[str, Any]) -> list[str]:
        return inbound_http_filters(REVIEWS, ctx_with([ef("f", list(patches))]))

    base = filters()
    assert filters(http_filter("ADD", lua("a"), sub=None))[-1] == "a"
    assert filters(http_filter("INSERT_FIRST", lua("a"), sub=None))[0] == "a"
    assert filters(http_filter("INSERT_AFTER", lua("a")))[-1] == "a"  # after the router
    assert filters(http_filter("INSERT_BEFORE", lua("a"), sub=None))[0] == "a"  # no subFilter: first
    replaced = filters(http_filter("REPLACE", lua("a"), sub="envoy.filters.http.fault"))
    assert "envoy.filters.http.fault" not in replaced and replaced.index("a") == base.index("envoy.filters.http.fault")
    assert "envoy.filters.http.cors" not in filters(http_filter("REMOVE", None, sub="envoy.filters.http.cors"))
    # Deprecated names in matches still find the filters (Istio's docs use them).
    assert filters(http_filter("INSERT_BEFORE", lua("a"), sub="envoy.router")).index("a") == len(base) - 1


def test_order_root_namespace_then_priority_creation_time_name() -> None:
    objs = [
        ef("b-late", [http_filter("ADD", lua("late"), sub=None)], created="2026-02-01T00:00:00Z"),
        ef("a-early", [http_filter("ADD", lua("early"), sub=None)], created="2026-01-01T00:00:00Z"),
        ef("root", [http_filter("ADD", lua("root"), sub=None)], ns="istio-system", created="2026-03-01T00:00:00Z"),
        ef("first", [http_filter("ADD", lua("first"), sub=None)], priority=-1, created="2026-04-01T00:00:00Z"),
        ef("elsewhere", [http_filter("ADD", lua("elsewhere"), sub=None)], ns="other"),
    ]
    names = inbound_http_filters(REVIEWS, ctx_with(objs))
    assert names[-4:] == ["first", "root", "early", "late"]
    assert patches_for(REVIEWS, ctx_with(objs)).sources == (
        "default/first", "istio-system/root", "default/a-early", "default/b-late")


def test_root_namespace_selector_applies_in_every_namespace() -> None:
    obj = ef("root", [http_filter("ADD", lua("r"), sub=None)], ns="istio-system", selector={"app": "reviews"})
    ctx = ctx_with([obj])
    assert "r" in inbound_http_filters(REVIEWS, ctx)
    assert "r" not in inbound_http_filters(sidecar("ratings", "v1", inbound="http:9080"), ctx)


def test_proxy_version_and_metadata_match() -> None:
    def applies(match: dict[str, Any], **md: Any) -> bool:
        patch = http_filter("ADD", lua("v"), sub=None)
        patch["match"]["proxy"] = match
        proxy = sidecar("reviews", "v1", inbound="http:9080", **md)
        return "v" in inbound_http_filters(proxy, ctx_with([ef("v", [patch])]))

    assert applies({"proxyVersion": "^1\\.40"}, ENVOY_VERSION="1.40.0")
    assert not applies({"proxyVersion": "^1\\.2"}, ENVOY_VERSION="1.40.0")
    assert applies({"proxyVersion": "^1\\.24"}, ISTIO_VERSION="1.24.1", ENVOY_VERSION="1.40.0")  # Istio's first
    assert not applies({"proxyVersion": ".*"})  # no version known: a version match fails (as Istio's)
    assert applies({"metadata": {"TEAM": "a"}}, TEAM="a")
    assert not applies({"metadata": {"TEAM": "a"}}, TEAM="b")


def test_network_filter_merge_in_gateway_context_only() -> None:
    patch = {"applyTo": "NETWORK_FILTER", "match": {"context": "GATEWAY", "listener": {"filterChain": {"filter": {
        "name": HCM}}}}, "patch": {"operation": "MERGE", "value": {"name": HCM, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                     "HttpConnectionManager", "common_http_protocol_options": {"idle_timeout": "30s"}}}}}
    from _translate_helpers import bookinfo_file

    ctx = ctx_with([*bookinfo_file("bookinfo-gateway.yaml"), ef("gw", [patch], ns="istio-system")])
    gw = gateway(ns="default")
    seen = 0
    for lst in listeners(gw, ctx).values():
        for fc in lst.filter_chains:
            h = hcm_of(fc)
            if h is not None:
                seen += 1
                assert h.common_http_protocol_options.idle_timeout.seconds == 30
                assert h.http_filters, "the rest of the connection manager is kept"
    assert seen
    h2 = hcm_of(listeners(REVIEWS, ctx)[f"{REVIEWS.listen_address}_15001"].filter_chains[0])
    assert h2 is not None and h2.common_http_protocol_options.idle_timeout.seconds != 30


def test_cluster_merge_remove_add() -> None:
    host = fqdn("reviews")
    merge = {"applyTo": "CLUSTER", "match": {"context": "SIDECAR_OUTBOUND", "cluster": {"service": host,
                                                                                         "portNumber": 9080}},
             "patch": {"operation": "MERGE", "value": {"connect_timeout": "0.5s"}}}
    remove = {"applyTo": "CLUSTER", "match": {"cluster": {"name": f"outbound|9080||{fqdn('ratings')}"}},
              "patch": {"operation": "REMOVE"}}
    add = {"applyTo": "CLUSTER", "patch": {"operation": "ADD", "value": {
        "name": "lua_cluster", "type": "STRICT_DNS", "connect_timeout": "0.5s", "load_assignment": {
            "cluster_name": "lua_cluster", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "internal.org.net", "port_value": 8888}}}}]}]}}}}
    before = clusters(REVIEWS, context(bookinfo_registry()))
    cs = clusters(REVIEWS, ctx_with([ef("c", [merge, remove, add])]))
    c = cs[f"outbound|9080||{host}"]
    assert (c.connect_timeout.seconds, c.connect_timeout.nanos) == (0, 500_000_000)  # replaced, not 10.5 s
    assert c.lb_policy == before[f"outbound|9080||{host}"].lb_policy
    assert f"outbound|9080||{fqdn('ratings')}" not in cs
    assert "lua_cluster" in cs
    inbound = [n for n in cs if n.startswith("inbound|")]
    assert inbound and all(cs[n].connect_timeout == before[n].connect_timeout for n in inbound)


def test_listener_and_filter_chain_remove() -> None:
    remove = {"applyTo": "LISTENER", "match": {"context": "SIDECAR_INBOUND", "listener": {"portNumber": 9080}},
              "patch": {"operation": "REMOVE"}}
    lst = listeners(REVIEWS, ctx_with([ef("l", [remove])]))
    assert f"inbound_{REVIEWS.listen_address}_9080" not in lst and f"{REVIEWS.listen_address}_15001" in lst
    chain = {"applyTo": "FILTER_CHAIN", "match": {"context": "SIDECAR_INBOUND", "listener": {
        "filterChain": {"transportProtocol": "raw_buffer"}}}, "patch": {"operation": "REMOVE"}}
    mesh = MeshSettings(inbound_mtls=True)
    before = listeners(REVIEWS, context(bookinfo_registry(), mesh))[f"inbound_{REVIEWS.listen_address}_9080"]
    after = listeners(REVIEWS, ctx_with([ef("c", [chain])], mesh))[
        f"inbound_{REVIEWS.listen_address}_9080"]
    protocols = [fc.filter_chain_match.transport_protocol for fc in before.filter_chains]
    assert protocols.count("raw_buffer") == 1, protocols  # PERMISSIVE: an mTLS and a plaintext chain
    assert [fc.filter_chain_match.transport_protocol for fc in after.filter_chains] == [
        p for p in protocols if p != "raw_buffer"]


def test_routes_virtual_host_and_http_route_patches() -> None:
    vh = {"applyTo": "VIRTUAL_HOST", "match": {"context": "SIDECAR_OUTBOUND", "routeConfiguration": {
        "portNumber": 9080}}, "patch": {"operation": "MERGE", "value": {"response_headers_to_add": [
            {"header": {"key": "x-patched", "value": "1"}}]}}}
    route = {"applyTo": "HTTP_ROUTE", "match": {"context": "SIDECAR_OUTBOUND", "routeConfiguration": {
        "vhost": {"name": f"{fqdn('ratings')}:9080"}}}, "patch": {"operation": "INSERT_FIRST", "value": {
            "name": "maintenance", "match": {"prefix": "/down"}, "direct_response": {"status": 503}}}}
    (rc,) = routes(REVIEWS, ctx_with([ef("r", [vh, route])]))
    for v in rc.virtual_hosts:
        patched = any(h.header.key == "x-patched" for h in v.response_headers_to_add)
        assert patched == v.name.endswith(":9080"), v.name
        assert (v.routes[0].name == "maintenance") == (v.name == f"{fqdn('ratings')}:9080")
    # Inline inbound route configurations are SIDECAR_INBOUND.
    inbound = {"applyTo": "HTTP_ROUTE", "match": {"context": "SIDECAR_INBOUND", "routeConfiguration": {
        "vhost": {"route": {"name": "default"}}}}, "patch": {"operation": "MERGE", "value": {
            "route": {"timeout": "7s"}}}}
    lst = listeners(REVIEWS, ctx_with([ef("i", [inbound])]))[
        f"inbound_{REVIEWS.listen_address}_9080"]
    h = hcm_of(lst.filter_chains[0])
    assert h is not None and h.route_config.virtual_hosts[0].routes[0].route.timeout.seconds == 7


def test_envoy_filter_of_another_namespace_or_selector_does_not_apply() -> None:
    ctx = ctx_with([ef("x", [http_filter("ADD", lua("x"), sub=None)], ns="other"),
                                         ef("y", [http_filter("ADD", lua("y"), sub=None)], selector={"app": "nope"})])
    names = inbound_http_filters(REVIEWS, ctx)
    assert "x" not in names and "y" not in names
    assert not patches_for(REVIEWS, ctx).by_level


def test_target_ref_gateway() -> None:
    obj = ef("t", [{"applyTo": "NETWORK_FILTER", "match": {"context": "GATEWAY", "listener": {"filterChain": {
        "filter": {"name": HCM}}}}, "patch": {"operation": "MERGE", "value": {"name": HCM}}}],
        ns="default", targetRefs=[{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "gw"}])
    ctx = ctx_with([obj])
    assert patches_for(gateway({"gateway.networking.k8s.io/gateway-name": "gw"}, ns="default"), ctx).sources
    assert not patches_for(gateway({"gateway.networking.k8s.io/gateway-name": "other"}, ns="default"), ctx).sources


@pytest.mark.envoy
def test_patched_config_validates(tmp_path: Path) -> None:
    lua_cluster = {"applyTo": "CLUSTER", "match": {"context": "SIDECAR_OUTBOUND"}, "patch": {"operation": "ADD",
        "value": {"name": "lua_cluster", "type": "STRICT_DNS", "connect_timeout": "0.5s", "load_assignment": {
            "cluster_name": "lua_cluster", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "localhost", "port_value": 8888}}}}]}]}}}}
    ctx = ctx_with([ef("v", [http_filter("INSERT_BEFORE", lua(), port=9080), lua_cluster])])
    envoy_validate(REVIEWS, ctx, tmp_path)


def test_merge_replaces_durations_and_appends_lists() -> None:
    dst = hcm_pb2.HttpConnectionManager(stat_prefix="a")
    dst.common_http_protocol_options.idle_timeout.seconds = 10
    dst.http_filters.add(name="one")
    src = envoyproto.parse({"common_http_protocol_options": {"idle_timeout": "0.5s"},
                            "http_filters": [{"name": "two"}]}, hcm_pb2.HttpConnectionManager)
    envoyproto.merge(dst, src)
    assert (dst.common_http_protocol_options.idle_timeout.seconds,
            dst.common_http_protocol_options.idle_timeout.nanos) == (0, 500_000_000)
    assert [f.name for f in dst.http_filters] == ["one", "two"] and dst.stat_prefix == "a"


def test_registry_resolves_types_lazily_and_refuses_unknown() -> None:
    assert envoyproto.resolve(LUA_TYPE).DESCRIPTOR.full_name == "envoy.extensions.filters.http.lua.v3.Lua"
    with pytest.raises(envoyproto.UnknownType):
        envoyproto.resolve("type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope")
    with pytest.raises(envoyproto.BadValue, match="bogus"):
        envoyproto.patch_value("HTTP_FILTER", {"name": "x", "typed_config": {"@type": LUA_TYPE, "bogus": 1}})
