"""What proxies share in ``generate``: the same resource tuple (hence the same encoded bytes) for instances that
differ only in their addresses, a small per-instance part otherwise, and the same resources as the builders
produce (the split must never change what a proxy receives). Counted, never timed."""

from __future__ import annotations

from typing import Any

from _translate_helpers import bookinfo_registry, context, fqdn, sidecar, snapshot, workload_entry

from meshplane.model import xdstypes
from meshplane.model.proxy import Locality, Proxy, proxy_from_node
from meshplane.registry import registry_from_config
from meshplane.translate import MeshSettings, build_push_context, generate
from meshplane.translate import context as context_mod
from meshplane.translate.clusters import build_clusters
from meshplane.translate.generate import _ASSIGNMENTS, _EDS_FEW, _EDS_VIEWS
from meshplane.translate.listeners import build_listeners

ALL = (xdstypes.CLUSTER, xdstypes.LISTENER, xdstypes.ROUTE, xdstypes.ENDPOINT)


def client(k: int, **md: Any) -> Proxy:
    """A client-only sidecar (no inbound ports) at its own address, like the xds_scale benchmark's proxies."""
    ip = f"127.0.5.{k + 1}"
    return proxy_from_node(f"sidecar~{ip}~client-{k}.default~default.svc.cluster.local",
                           {"NAMESPACE": "default", "INSTANCE_IPS": ip, **md}, Locality("region1", "zone1", "sub1"))


def _wire(res: Any) -> dict[str, bytes]:
    return {r.name: r.resource.value for r in res}


def test_instances_differing_only_by_address_share_one_tuple_per_type() -> None:
    ctx = context(bookinfo_registry())
    a, b = client(1), client(2)
    for t in (xdstypes.CLUSTER, xdstypes.ROUTE, xdstypes.ENDPOINT):
        assert generate(t, a, ctx) is generate(t, b, ctx), t
    # A subscription naming exactly the view's resources gets the view itself (shared encoded bytes).
    eds = generate(xdstypes.ENDPOINT, a, ctx)
    assert generate(xdstypes.ENDPOINT, b, ctx, {r.name for r in eds}) is eds
    rds = generate(xdstypes.ROUTE, a, ctx)
    assert generate(xdstypes.ROUTE, b, ctx, [r.name for r in rds]) is rds
    # Listeners: the entry listener is bound to the instance's address; the per-port ones are shared objects.
    la, lb = generate(xdstypes.LISTENER, a, ctx), generate(xdstypes.LISTENER, b, ctx)
    assert la[0].name == "127.0.5.2_15001" and lb[0].name == "127.0.5.3_15001"
    assert all(x is y for x, y in zip(la[1:], lb[1:], strict=True))
    # Asking again returns the cached tuple (the ADS encoder caches by identity).
    assert generate(xdstypes.LISTENER, a, ctx) is la


def test_split_views_equal_what_the_builders_produce() -> None:
    ctx = context(bookinfo_registry())
    for p in (sidecar("reviews", "v1"), sidecar("ratings", "v1", INTERCEPTION_MODE="REDIRECT"), client(3)):
        assert _wire(generate(xdstypes.CLUSTER, p, ctx)) == {
            c.name: c.SerializeToString(deterministic=True) for c in build_clusters(p, ctx)}
        assert _wire(generate(xdstypes.LISTENER, p, ctx)) == {
            x.name: x.SerializeToString(deterministic=True) for x in build_listeners(p, ctx)}


def test_instances_with_inbound_ports_share_the_outbound_part() -> None:
    ctx = context(bookinfo_registry())
    v1, v1b = sidecar("reviews", "v1"), sidecar("reviews", "v1", ip="127.0.1.33")
    c1 = {r.name: r for r in generate(xdstypes.CLUSTER, v1, ctx)}
    c2 = {r.name: r for r in generate(xdstypes.CLUSTER, v1b, ctx)}
    assert c1.keys() == c2.keys()
    assert all(c1[n] is c2[n] for n in c1 if n.startswith("outbound|"))
    assert "inbound|9080||" in c1


def test_an_endpoint_push_builds_only_the_named_assignments() -> None:
    objs = bookinfo_registry()
    snap = snapshot(objs)
    ctx = build_push_context(snap, registry_from_config(snap), MeshSettings())
    p = client(1)
    generate(xdstypes.ENDPOINT, p, ctx)  # the whole view, as on connect
    snap2 = snapshot([*objs, workload_entry("reviews-v1b", "127.0.1.9", {"app": "reviews", "version": "v1"})])
    ctx2 = ctx.with_registry(registry_from_config(snap2))
    name = f"outbound|9080||{fqdn('reviews')}"
    (res,) = generate(xdstypes.ENDPOINT, p, ctx2, [name])
    # one assignment built (and the few-names answer memoized), no whole view
    assert [k[0] for k in ctx2.memo.entries(_ASSIGNMENTS)] == [name]
    assert len(ctx2.memo.entries(_EDS_FEW)) == 1 and not ctx2.memo.entries(_EDS_VIEWS)
    assert res.version != next(r for r in generate(xdstypes.ENDPOINT, p, ctx) if r.name == name).version
    # Every proxy with the same view gets the same tuple for the push (encoded once by the ADS layer).
    assert generate(xdstypes.ENDPOINT, client(2), ctx2, [name]) is generate(xdstypes.ENDPOINT, p, ctx2, [name])


def test_a_new_config_version_reparses_only_the_changed_virtual_services(monkeypatch: Any) -> None:
    from meshplane.model.config import ConfigSnapshot
    from meshplane.model.spec import decode_resource
    from meshplane.translate import context as context_mod

    vss = [{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": f"vs{i}", "namespace": "default"},
            "spec": {"hosts": [f"h{i}"], "http": [{"route": [{"destination": {"host": f"h{i}"}}]}]}}
           for i in range(30)]
    snap = snapshot(vss)
    first = context_mod.build_index(snap, MeshSettings())
    parsed: list[str] = []
    real = context_mod._vs_rec

    def counting(obj: Any, suffix: str) -> Any:
        parsed.append(obj.meta.name)
        return real(obj, suffix)

    monkeypatch.setattr(context_mod, "_vs_rec", counting)
    objs = snap.of(context_mod.VIRTUAL_SERVICES)
    raw = objs[4].raw
    changed = decode_resource(context_mod.VIRTUAL_SERVICES, {**raw, "spec": {**raw["spec"], "hosts": ["other"]}})
    snap2 = ConfigSnapshot(2, {context_mod.VIRTUAL_SERVICES: (*objs[:4], changed, *objs[5:])})
    second = context_mod.build_index(snap2, MeshSettings(), first)
    assert parsed == ["vs4"]
    assert fqdn("other") in second.mesh_vs_by_host and fqdn("h4") not in second.mesh_vs_by_host
    assert second.mesh_vs_by_host[fqdn("h5")] == first.mesh_vs_by_host[fqdn("h5")]


def test_an_endpoint_update_with_known_hosts_keeps_every_other_assignment() -> None:
    """``with_registry(registry, changed)``: assignments of hosts outside ``changed`` are the very same resources
    (not rebuilt, same bytes for the encoder), the changed host's are rebuilt with the new endpoints."""
    from dataclasses import replace

    from meshplane.model.service import ShardKey
    from meshplane.registry.aggregate import update_shard

    ctx = context(bookinfo_registry())
    p = client(1)
    before = {r.name: r for r in generate(xdstypes.ENDPOINT, p, ctx)}
    reviews = fqdn("reviews")
    moved = tuple(replace(e, address="127.0.9.9") for e in ctx.registry.endpoints_of(reviews)[:1])
    shard = next(iter(ctx.registry.shards[reviews]))
    assert isinstance(shard, ShardKey)
    registry = update_shard(ctx.registry, shard, {reviews: moved})
    ctx2 = ctx.with_registry(registry, frozenset({reviews}))
    after = {r.name: r for r in generate(xdstypes.ENDPOINT, p, ctx2)}
    assert after.keys() == before.keys()
    changed = {n for n in after if n.endswith(f"|{reviews}")}
    assert changed and all(after[n] is not before[n] for n in changed)
    assert all(after[n] is before[n] for n in after.keys() - changed)
    assert b"127.0.9.9" in after[f"outbound|9080||{reviews}"].resource.value
    # Without the changed hosts nothing endpoint-bound is kept (the caller does not know what moved).
    ctx3 = ctx.with_registry(registry)
    assert not ctx3.memo.entries(_ASSIGNMENTS)
    assert ctx3.memo.entries(context_mod.SCOPES)  # what never depends on endpoints is kept
