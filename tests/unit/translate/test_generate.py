"""The generator contract the xDS server relies on: packed resources with content versions, name filters,
sharing between proxies with the same view, endpoint-only context updates, and proxy_affected scoping."""

from __future__ import annotations

from _feature_corpus import sidecar_cr
from _translate_helpers import (
    bookinfo_file,
    bookinfo_registry,
    context,
    fqdn,
    gateway,
    sidecar,
    snapshot,
    workload_entry,
)

from meshplane.model import xdstypes
from meshplane.model.config import ConfigKey
from meshplane.model.push import PushRequest
from meshplane.registry import diff_endpoints, registry_from_config
from meshplane.translate import MeshSettings, build_push_context, generate, proxy_affected
from meshplane.translate.context import DESTINATION_RULES, GATEWAYS, SIDECARS, VIRTUAL_SERVICES

REVIEWS = fqdn("reviews")


def test_resources_are_packed_with_matching_type_url_and_stable_versions() -> None:
    ctx = context(bookinfo_registry())
    for t in (xdstypes.CLUSTER, xdstypes.ENDPOINT, xdstypes.LISTENER, xdstypes.ROUTE):
        res = generate(t, sidecar(), ctx)
        assert res, t
        assert all(r.resource.type_url == t for r in res)
        assert len({r.name for r in res}) == len(res)
    again = context(bookinfo_registry())
    v1 = {r.name: r.version for r in generate(xdstypes.CLUSTER, sidecar(), ctx)}
    v2 = {r.name: r.version for r in generate(xdstypes.CLUSTER, sidecar(), again)}
    assert v1 == v2


def test_names_filter_for_eds_and_rds() -> None:
    ctx = context(bookinfo_registry())
    eds = generate(xdstypes.ENDPOINT, sidecar(), ctx, [f"outbound|9080||{REVIEWS}"])
    assert [r.name for r in eds] == [f"outbound|9080||{REVIEWS}"]
    rds = generate(xdstypes.ROUTE, sidecar(INTERCEPTION_MODE="REDIRECT"), ctx, ["9080"])
    assert [r.name for r in rds] == ["9080"]
    assert [r.name for r in generate(xdstypes.ROUTE, sidecar(), ctx)] == ["http_proxy"]


def test_every_listener_rds_and_cluster_eds_name_is_served() -> None:
    ctx = context(bookinfo_registry() + bookinfo_file("bookinfo-gateway.yaml"))
    for p in (sidecar(), gateway(ns="default")):
        from _translate_helpers import static_bootstrap

        static_bootstrap(p, ctx)  # asserts every RDS/EDS name exists


def test_proxies_with_same_view_share_resources() -> None:
    ctx = context(bookinfo_registry())
    a = generate(xdstypes.CLUSTER, sidecar("reviews", "v1"), ctx)
    b = generate(xdstypes.CLUSTER, sidecar("reviews", "v1"), ctx)
    assert all(x.resource is y.resource for x, y in zip(a, b, strict=True))
    # Outbound clusters are shared even between different workloads; inbound ones are not.
    c = {r.name: r for r in generate(xdstypes.CLUSTER, sidecar("ratings", "v1"), ctx)}
    for r in a:
        if r.name.startswith("outbound|"):
            assert c[r.name].version == r.version


def test_with_registry_reuses_config_indexes_and_changes_only_endpoints() -> None:
    objs = bookinfo_registry()
    snap = snapshot(objs)
    ctx = build_push_context(snap, registry_from_config(snap), MeshSettings())
    snap2 = snapshot([*objs, workload_entry("reviews-v1b", "127.0.1.9", {"app": "reviews", "version": "v1"})])
    reg2 = registry_from_config(snap2)
    ctx2 = ctx.with_registry(reg2)
    assert ctx2.index is ctx.index and ctx2.version != ctx.version
    assert diff_endpoints(ctx.registry, reg2) == {REVIEWS}
    old = {r.name: r.version for r in generate(xdstypes.ENDPOINT, sidecar(), ctx)}
    new = {r.name: r.version for r in generate(xdstypes.ENDPOINT, sidecar(), ctx2)}
    assert {n for n in new if new[n] != old.get(n)} == {f"outbound|9080||{REVIEWS}"}


def test_proxy_affected_by_sidecar_scope() -> None:
    objs = bookinfo_registry() + bookinfo_file("virtual-service-all-v1.yaml") + bookinfo_file(
        "destination-rule-all.yaml") + [
        sidecar_cr("default", {"egress": [{"hosts": ["./reviews.default.svc.cluster.local"]}]})]
    ctx = context(objs)
    p = sidecar()
    assert proxy_affected(p, ctx, PushRequest(full=False, endpoints_updated=frozenset({REVIEWS})))
    assert not proxy_affected(p, ctx, PushRequest(full=False, endpoints_updated=frozenset({fqdn("ratings")})))
    vs_ratings = ConfigKey(VIRTUAL_SERVICES, "default", "ratings")
    vs_reviews = ConfigKey(VIRTUAL_SERVICES, "default", "reviews")
    assert not proxy_affected(p, ctx, PushRequest(full=True, config_updated=frozenset({vs_ratings})))
    assert proxy_affected(p, ctx, PushRequest(full=True, config_updated=frozenset({vs_reviews})))
    assert proxy_affected(p, ctx, PushRequest(full=True, config_updated=frozenset({
        ConfigKey(DESTINATION_RULES, "default", "deleted-one")})))
    assert not proxy_affected(p, ctx, PushRequest(full=True, config_updated=frozenset({
        ConfigKey(GATEWAYS, "default", "gw")})))
    assert proxy_affected(gateway(), ctx, PushRequest(full=True, config_updated=frozenset({
        ConfigKey(GATEWAYS, "default", "gw")})))
    assert proxy_affected(p, ctx, PushRequest(full=True, config_updated=frozenset({
        ConfigKey(SIDECARS, "default", "default")})))
    assert proxy_affected(p, ctx, PushRequest(full=True))


def test_a_proxy_without_sds_gets_no_auto_mtls_and_shares_nothing_with_one_that_has_it() -> None:
    """A TLS context whose secret never comes would hold the cluster in warming for Envoy's 15 s fetch timeout."""
    ctx = context(bookinfo_registry())
    name = f"outbound|9080||{fqdn('reviews')}"
    with_sds = {r.name: r for r in generate(xdstypes.CLUSTER, sidecar(), ctx)}
    without = {r.name: r for r in generate(xdstypes.CLUSTER, sidecar(SDS="false"), ctx)}
    from envoy.config.cluster.v3 import cluster_pb2

    def matches(r: object) -> list[str]:
        c = cluster_pb2.Cluster()
        assert r.resource.Unpack(c)  # type: ignore[attr-defined]
        return [m.name for m in c.transport_socket_matches]

    assert matches(with_sds[name]) == ["tlsMode-istio", "tlsMode-disabled"]
    assert matches(without[name]) == []
    assert set(with_sds) == set(without)
