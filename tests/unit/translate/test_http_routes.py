"""VirtualService HTTP routing decisions, checked with the routing simulation over generated RDS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _feature_corpus import dr, feature_objects, vs
from _translate_helpers import bookinfo_file, bookinfo_registry, context, fqdn, routes, sidecar
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2

from meshplane.model.proxy import Proxy
from meshplane.translate.simulate import simulate

REVIEWS = fqdn("reviews")
RATINGS = fqdn("ratings")


def _bookinfo(*files: str) -> list:
    objs = bookinfo_registry() + bookinfo_file("destination-rule-all.yaml")
    for f in files:
        objs += bookinfo_file(f)
    return objs


def k8s_sidecar(*args: Any, **kwargs: Any) -> Proxy:
    """A sidecar with Kubernetes-style capture: it has the per-port route configurations ("9080", ...)."""
    return sidecar(*args, INTERCEPTION_MODE="REDIRECT", **kwargs)


def test_header_match_routes_jason_to_v2_everyone_else_to_v1() -> None:
    rs = routes(k8s_sidecar(), context(_bookinfo("virtual-service-reviews-test-v2.yaml")))
    jason = simulate(rs, "9080", "reviews:9080", "/reviews/0", {"end-user": "jason"})
    other = simulate(rs, "9080", "reviews:9080", "/reviews/0", {"end-user": "alice"})
    assert jason is not None and jason.cluster == f"outbound|9080|v2|{REVIEWS}"
    assert other is not None and other.cluster == f"outbound|9080|v1|{REVIEWS}"


def test_all_v1_for_every_host_form() -> None:
    rs = routes(sidecar(), context(_bookinfo("virtual-service-all-v1.yaml")))
    for host in ("reviews", "reviews:9080", "reviews.default", "reviews.default.svc:9080", REVIEWS):
        d = simulate(rs, "http_proxy", host, "/")
        assert d is not None and d.cluster == f"outbound|9080|v1|{REVIEWS}", host


def test_short_name_only_in_own_namespace() -> None:
    rs = routes(sidecar(ns="other"), context(_bookinfo("virtual-service-all-v1.yaml")))
    d = simulate(rs, "http_proxy", "reviews:9080", "/")
    assert d is not None and d.cluster == "PassthroughCluster"
    d = simulate(rs, "http_proxy", "reviews.default:9080", "/")
    assert d is not None and d.cluster.startswith("outbound|9080|")


def test_weights_80_20() -> None:
    rs = routes(k8s_sidecar(), context(_bookinfo("virtual-service-reviews-80-20.yaml")))
    d = simulate(rs, "9080", "reviews", "/")
    assert d is not None
    assert dict(d.weighted) == {f"outbound|9080|v1|{REVIEWS}": 80, f"outbound|9080|v2|{REVIEWS}": 20}


def test_abort_fault_for_jason_only() -> None:
    rs = routes(k8s_sidecar("reviews", "v2"), context(_bookinfo("virtual-service-ratings-test-abort.yaml")))
    d = simulate(rs, "9080", "ratings:9080", "/ratings/0", {"end-user": "jason"})
    assert d is not None and d.route_proto is not None
    fault = fault_pb2.HTTPFault()
    assert d.route_proto.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert fault.abort.http_status == 500
    pct = fault.abort.percentage
    scale = {percent_pb2.FractionalPercent.HUNDRED: 100, percent_pb2.FractionalPercent.MILLION: 1_000_000}
    assert pct.numerator / scale[pct.denominator] == 1.0
    plain = simulate(rs, "9080", "ratings:9080", "/ratings/0")
    assert plain is not None and plain.route_proto is not None
    assert "envoy.filters.http.fault" not in plain.route_proto.typed_per_filter_config


def test_delay_fault_7s() -> None:
    rs = routes(k8s_sidecar("reviews", "v2"), context(_bookinfo("virtual-service-ratings-test-delay.yaml")))
    d = simulate(rs, "9080", "ratings", "/", {"end-user": "jason"})
    assert d is not None and d.route_proto is not None
    fault = fault_pb2.HTTPFault()
    d.route_proto.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert fault.delay.fixed_delay.seconds == 7
    assert d.cluster == f"outbound|9080|v1|{RATINGS}"


def test_deprecated_percent_is_accepted(cert_dir: Path) -> None:
    rs = routes(k8s_sidecar(), context(bookinfo_registry() + feature_objects(str(cert_dir))))
    d = simulate(rs, "8000", "httpbin:8000", "/x?q=1&r=x",
                 {"x-a": "1", "x-b": "pq", "x-c": "cc", ":method": "POST"})
    assert d is not None and d.route == "matches" and d.route_proto is not None
    fault = fault_pb2.HTTPFault()
    d.route_proto.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert (fault.delay.percentage.numerator, fault.delay.percentage.denominator) == (
        50, percent_pb2.FractionalPercent.HUNDRED)
    assert fault.abort.percentage.numerator == 125000


def test_match_features_and_actions(cert_dir: Path) -> None:
    rs = routes(k8s_sidecar(), context(bookinfo_registry() + feature_objects(str(cert_dir))))
    host = "httpbin:8000"
    full = {"x-a": "1", "x-b": "pq", "x-c": "cc", ":method": "POST"}
    d = simulate(rs, "8000", host, "/x?q=1&r=x", full)
    assert d is not None and d.route == "matches"
    r = d.route_proto
    assert r is not None
    assert dict(d.weighted) == {f"outbound|8000|v2|{fqdn('httpbin')}": 30, f"outbound|8000|v1|{fqdn('httpbin')}": 70}
    assert r.route.prefix_rewrite == "/anything" and r.route.host_rewrite_literal == "httpbin.local"
    assert r.route.timeout.seconds == 2 and r.route.timeout.nanos == 500_000_000
    assert r.route.retry_policy.num_retries.value == 3
    assert r.route.retry_policy.retry_on == "5xx,gateway-error,retriable-status-codes"
    assert list(r.route.retry_policy.retriable_status_codes) == [503]
    assert r.route.retry_policy.per_try_timeout.seconds == 1
    assert r.route.request_mirror_policies[0].cluster == f"outbound|8000|v2|{fqdn('httpbin')}"
    assert r.route.request_mirror_policies[0].runtime_fraction.default_value.numerator == 250000
    assert {h.header.key for h in r.request_headers_to_add} == {"x-set", "x-add"}
    assert list(r.request_headers_to_remove) == ["x-rm"]
    assert list(r.response_headers_to_remove) == ["server"]
    assert r.route.weighted_clusters.clusters[0].request_headers_to_add[0].header.key == "x-dest"
    cors = cors_pb2.CorsPolicy()
    r.typed_per_filter_config["envoy.filters.http.cors"].Unpack(cors)
    assert cors.allow_methods == "GET,POST" and cors.allow_credentials.value and cors.max_age == "86400"
    # Each condition missing sends the request elsewhere (the VirtualService's last route).
    for drop in ("x-a", "x-b", "x-c", ":method"):
        h = {k: v for k, v in full.items() if k != drop}
        d2 = simulate(rs, "8000", host, "/x?q=1&r=x", h)
        assert d2 is not None and d2.route == "default", drop
    assert simulate(rs, "8000", host, "/x?q=1&r=x", {**full, "x-no": "1"}).route == "default"  # type: ignore[union-attr]
    assert simulate(rs, "8000", host, "/x?q=2&r=x", full).route == "default"  # type: ignore[union-attr]


def test_source_labels_restrict_routes(cert_dir: Path) -> None:
    ctx = context(bookinfo_registry() + feature_objects(str(cert_dir)))
    full = {"x-a": "1", "x-b": "pq", "x-c": "cc", ":method": "POST"}
    d = simulate(routes(k8s_sidecar("reviews", "v1"), ctx), "8000", "httpbin.default:8000", "/x?q=1&r=x", full)
    assert d is not None and d.route == "default"


def test_redirect_direct_response_regex_rewrite_and_unknown(cert_dir: Path) -> None:
    rs = routes(sidecar(), context(bookinfo_registry() + feature_objects(str(cert_dir))))
    d = simulate(rs, "http_proxy", "httpbin:8000", "/old")
    assert d is not None and d.redirect.startswith("httpbin.org /new")
    d = simulate(rs, "http_proxy", "httpbin:8000", "/teapot")
    assert d is not None and d.direct_status == 418
    d = simulate(rs, "http_proxy", "httpbin:8000", "/status/200")
    assert d is not None and d.route == "regex" and d.route_proto is not None
    assert d.route_proto.route.regex_rewrite.substitution == "/code/\\1"
    assert d.route_proto.match.case_sensitive.value is False
    d = simulate(rs, "http_proxy", "httpbin:8000", "/nowhere")
    assert d is not None and set(d.clusters) == {"BlackHoleCluster"}


def test_delegate_merges_parent_match(cert_dir: Path) -> None:
    rs = routes(sidecar(), context(bookinfo_registry() + feature_objects(str(cert_dir))))
    a = simulate(rs, "http_proxy", "httpbin:8000", "/team/a/1")
    b = simulate(rs, "http_proxy", "httpbin:8000", "/team/b")
    assert a is not None and a.cluster == f"outbound|8000|v1|{fqdn('httpbin')}"
    assert b is not None and b.cluster == f"outbound|8000|v2|{fqdn('httpbin')}"


def test_default_retries_and_no_timeout() -> None:
    rs = routes(k8s_sidecar(), context(bookinfo_registry()))
    d = simulate(rs, "9080", "details", "/")
    assert d is not None and d.route_proto is not None
    assert d.route_proto.route.retry_policy.num_retries.value == 2
    assert d.route_proto.route.timeout.seconds == 0
    assert d.cluster == f"outbound|9080||{fqdn('details')}"


def test_retries_zero_disables(cert_dir: Path) -> None:
    rs = routes(k8s_sidecar(), context(bookinfo_registry() + feature_objects(str(cert_dir))))
    d = simulate(rs, "8443", "httpbin:8443", "/grpc/x")
    assert d is not None and d.route_proto is not None
    assert not d.route_proto.route.HasField("retry_policy")
    assert d.cluster == f"outbound|8443||{fqdn('httpbin')}"


def test_consistent_hash_on_route(cert_dir: Path) -> None:
    rs = routes(k8s_sidecar(), context(bookinfo_registry() + feature_objects(str(cert_dir))))
    d = simulate(rs, "8000", "httpbin:8000", "/status/1")
    assert d is not None and d.route_proto is not None
    assert d.route_proto.route.hash_policy[0].header.header_name == "x-user"


def test_registry_only_blocks_unknown_hosts() -> None:
    from meshplane.translate import MeshSettings

    rs = routes(sidecar(), context(bookinfo_registry(), MeshSettings(outbound_traffic_policy="REGISTRY_ONLY")))
    d = simulate(rs, "http_proxy", "example.org", "/")
    assert d is not None and d.cluster == "BlackHoleCluster"


def test_first_virtual_service_wins_for_duplicate_host() -> None:
    objs = [*_bookinfo("virtual-service-all-v1.yaml"),
        vs("reviews-late", {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews",
                                                                                       "subset": "v3"}}]}]})]
    d = simulate(routes(k8s_sidecar(), context(objs)), "9080", "reviews", "/")
    assert d is not None and d.cluster == f"outbound|9080|v1|{REVIEWS}"


def test_export_to_dot_hides_virtual_service_from_other_namespaces() -> None:
    objs = [*bookinfo_registry(), *bookinfo_file("destination-rule-all.yaml"),
        vs("reviews", {"hosts": ["reviews"], "exportTo": ["."],
                       "http": [{"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}]})]
    ctx = context(objs)
    mine = simulate(routes(k8s_sidecar(), ctx), "9080", "reviews", "/")
    other = simulate(routes(k8s_sidecar(ns="other"), ctx), "9080", "reviews.default", "/")
    assert mine is not None and mine.cluster == f"outbound|9080|v3|{REVIEWS}"
    assert other is not None and other.cluster == f"outbound|9080||{REVIEWS}"


def test_connect_tunnels_through_the_http_proxy(cert_dir: Path) -> None:
    rs = routes(sidecar(), context(bookinfo_registry() + feature_objects(str(cert_dir))))
    d = simulate(rs, "http_proxy", "api.example.com:443", "", {":method": "CONNECT"})
    assert d is not None and d.cluster == "outbound|443||api.example.com"
    d = simulate(rs, "http_proxy", "elsewhere.org:443", "", {":method": "CONNECT"})
    assert d is not None and d.cluster == "PassthroughCluster" and d.route == "connect"


def _route(rs: list, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    d = simulate(rs, "9080", "reviews", path, headers, **kw)
    assert d is not None and d.route_proto is not None, path
    return d.route_proto


def _to(subset: str) -> list[dict[str, Any]]:
    return [{"destination": {"host": "reviews", "subset": subset}}]


def _prefix(p: str) -> list[dict[str, Any]]:
    return [{"uri": {"prefix": p}}]


def test_deprecated_mirror_percents_redirect_parts_bytes_body_and_default_fault_percentage() -> None:
    mirror = {"host": "reviews", "subset": "v2"}
    objs = [*_bookinfo(), vs("reviews", {"hosts": ["reviews"], "http": [
        {"match": _prefix("/m1"), "route": _to("v1"), "mirror": mirror, "mirrorPercent": 30},
        {"match": _prefix("/m2"), "route": _to("v1"), "mirror": mirror, "mirror_percent": 40},
        {"match": _prefix("/m3"), "route": _to("v1"), "mirror": mirror},
        {"match": _prefix("/redir"), "redirect": {"scheme": "https", "port": 8443, "redirectCode": 302}},
        {"match": _prefix("/bytes"), "directResponse": {"status": 503, "body": {"bytes": "aGVsbG8="}}},
        {"match": _prefix("/abort"), "route": _to("v1"), "fault": {"abort": {"httpStatus": 503}}},
    ]})]
    rs = routes(k8s_sidecar(), context(objs))
    for path, share in (("/m1", 300_000), ("/m2", 400_000), ("/m3", 1_000_000)):
        (policy,) = _route(rs, path).route.request_mirror_policies
        assert policy.cluster == f"outbound|9080|v2|{REVIEWS}", path
        assert policy.runtime_fraction.default_value.numerator == share, path
    redirect = _route(rs, "/redir").redirect
    assert (redirect.scheme_redirect, redirect.port_redirect, redirect.response_code) == (
        "https", 8443, redirect.FOUND)
    direct = _route(rs, "/bytes").direct_response
    assert (direct.status, direct.body.inline_bytes) == (503, b"hello")
    fault = fault_pb2.HTTPFault()
    assert _route(rs, "/abort").typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert (fault.abort.percentage.numerator, fault.abort.percentage.denominator) == (
        1_000_000, percent_pb2.FractionalPercent.MILLION)


def test_source_namespace_and_port_conditions_pick_the_proxies_and_ports_a_route_is_for() -> None:
    objs = [*_bookinfo(), vs("reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"sourceNamespace": "other"}], "route": _to("v3")},
        {"match": [{"port": 9999}], "route": _to("v2")},
        {"route": _to("v1")},
    ]})]
    ctx = context(objs)
    mine = simulate(routes(k8s_sidecar(), ctx), "9080", "reviews", "/")
    theirs = simulate(routes(k8s_sidecar(ns="other"), ctx), "9080", "reviews.default", "/")
    assert mine is not None and mine.cluster == f"outbound|9080|v1|{REVIEWS}"
    assert theirs is not None and theirs.cluster == f"outbound|9080|v3|{REVIEWS}"


def test_delegation_one_level_deep_and_only_to_delegates_exported_to_the_parent() -> None:
    objs = [*_bookinfo(), vs("reviews", {"hosts": ["reviews"], "http": [
        {"match": _prefix("/hidden"), "delegate": {"name": "hidden", "namespace": "team"}},
        {"delegate": {"name": "child"}},  # no match of its own: the child's matches stand as they are
    ]}), vs("child", {"http": [
        {"match": _prefix("/again"), "delegate": {"name": "grandchild"}},
        {"match": [{"uri": {"prefix": "/a"}, "headers": {"x-c": {"exact": "1"}}}], "route": _to("v2")},
        {"route": _to("v3")},
    ]}), vs("grandchild", {"http": [{"route": _to("v1")}]}),
        vs("hidden", {"exportTo": ["."], "http": [{"route": _to("v1")}]}, ns="team")]
    rs = routes(k8s_sidecar(), context(objs))
    assert simulate(rs, "9080", "reviews", "/a", {"x-c": "1"}).cluster == f"outbound|9080|v2|{REVIEWS}"  # type: ignore[union-attr]
    for path in ("/again", "/hidden", "/"):  # neither the grandchild nor the unexported delegate routes anything
        assert simulate(rs, "9080", "reviews", path).cluster == f"outbound|9080|v3|{REVIEWS}", path  # type: ignore[union-attr]


def test_hash_policies_of_every_consistent_hash_kind() -> None:
    def subset(name: str, ch: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "labels": {"version": "v1"}, "trafficPolicy": {"loadBalancer": {"consistentHash": ch}}}

    rule = dr("reviews", {"host": "reviews", "subsets": [
        subset("cookie", {"httpCookie": {"name": "c", "path": "/p", "ttl": "1.5s"}}),
        subset("ip", {"useSourceIp": True}), subset("query", {"httpQueryParameterName": "u"}),
        subset("ring", {"ringHash": {"minimumRingSize": 1024}})]})
    objs = [*bookinfo_registry(), rule, vs("reviews", {"hosts": ["reviews"], "http": [
        {"match": _prefix(f"/{s}"), "route": _to(s)} for s in ("cookie", "ip", "query", "ring")]})]
    rs = routes(k8s_sidecar(), context(objs))
    (cookie,) = _route(rs, "/cookie").route.hash_policy
    assert (cookie.cookie.name, cookie.cookie.path, cookie.cookie.ttl.seconds, cookie.cookie.ttl.nanos) == (
        "c", "/p", 1, 500_000_000)
    (ip,) = _route(rs, "/ip").route.hash_policy
    assert ip.connection_properties.source_ip is True
    (query,) = _route(rs, "/query").route.hash_policy
    assert query.query_parameter.name == "u"
    assert not _route(rs, "/ring").route.hash_policy  # a ring without a hash key: nothing to hash on


def test_destination_without_port_on_a_service_of_several_ports(cert_dir: Path) -> None:
    """The route's own port when the service has it, else the service's first port."""
    objs = [*bookinfo_registry(), *feature_objects(str(cert_dir)), vs("reviews", {"hosts": ["reviews"], "http": [
        {"route": [{"destination": {"host": "httpbin"}}]}]})]
    d = simulate(routes(k8s_sidecar(), context(objs)), "9080", "reviews", "/")
    assert d is not None and d.cluster == f"outbound|8000||{fqdn('httpbin')}"
