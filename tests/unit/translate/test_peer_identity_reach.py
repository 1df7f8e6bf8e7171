"""Where a proxy's identity header (``x-meshplane-peer``) may go: only to mesh workloads.

The outbound connection managers remove what the application sent and carry the sender switched off; the route
configurations switch it on where every upstream is a mesh service. These tests read the generated config the way
Envoy resolves it (a weighted cluster's setting, else its route's, else its virtual host's) for an in-mesh host,
a ``MESH_EXTERNAL`` ServiceEntry, the PassthroughCluster and the BlackHoleCluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import (
    bookinfo_registry,
    context,
    envoy_validate,
    fqdn,
    gateway,
    hcm_of,
    istio_object,
    listeners,
    routes,
    service_entry,
    sidecar,
)
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from google.protobuf import any_pb2

from meshplane.model.mesh import MeshSettings
from meshplane.model.peer import PEER_HEADER
from meshplane.translate import telemetry
from meshplane.translate.routes import identity_reach, in_mesh_cluster

EXTERNAL = "api.example.com"
EXT_CLUSTER = f"outbound|80||{EXTERNAL}"


def _external() -> dict[str, Any]:
    return service_entry("ext", hosts=[EXTERNAL], resolution="DNS", location="MESH_EXTERNAL",
                         ports=[{"number": 80, "name": "http", "protocol": "HTTP"}])


def _vs(name: str, host: str, http: list[dict[str, Any]], gateways: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": [host], "http": http}
    if gateways:
        spec["gateways"] = gateways
    return istio_object("VirtualService", name, "default", spec)


def _dest(host: str, weight: int | None = None, port: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": host, **({"port": {"number": port}} if port else {})}}
    if weight is not None:
        d["weight"] = weight
    return d


def _objects() -> list[dict[str, Any]]:
    return [
        *bookinfo_registry(), _external(),
        # ratings: split between the mesh and the outside world
        _vs("ratings", fqdn("ratings"), [{"route": [_dest(fqdn("ratings"), 50), _dest(EXTERNAL, 50, 80)]}]),
        # reviews: one path leaves the mesh, the rest stays
        _vs("reviews", fqdn("reviews"), [{"match": [{"uri": {"prefix": "/ext"}}], "route": [_dest(EXTERNAL, port=80)]},
                                         {"route": [_dest(fqdn("reviews"))]}]),
        # productpage: a direct response next to an in-mesh route (no upstream: it changes nothing)
        _vs("productpage", fqdn("productpage"), [
            {"match": [{"uri": {"prefix": "/health"}}], "directResponse": {"status": 200}},
            {"route": [_dest(fqdn("productpage"))]}]),
    ]


def _enables(msg: Any) -> bool | None:
    """The sender's setting at one level: True (on), False (off), None (inherited)."""
    raw = msg.typed_per_filter_config.get(telemetry.PEER_SENDER)
    if raw is None:
        return None
    fc = rc.FilterConfig()
    assert raw.Unpack(fc)
    if fc.disabled:
        return False
    assert fc.HasField("config") and fc.config == any_pb2.Any()  # present and empty: Envoy's "on"
    return True


def _sends(cfg: route_pb2.RouteConfiguration, vh: rc.VirtualHost, route: rc.Route,
           cluster: rc.WeightedCluster.ClusterWeight | None = None) -> bool:
    """As Envoy resolves it: the most specific level that says anything, else the HCM's default (off)."""
    for level in (cluster, route, vh, cfg):
        if level is not None and (on := _enables(level)) is not None:
            return on
    return False


def _reach(cfg: route_pb2.RouteConfiguration) -> dict[str, bool]:
    """upstream cluster -> whether a request sent there carries our identity (every route and weight to it
    must agree)."""
    out: dict[str, set[bool]] = {}
    for vh in cfg.virtual_hosts:
        for r in vh.routes:
            if not r.HasField("route"):
                continue
            if r.route.HasField("weighted_clusters"):
                for c in r.route.weighted_clusters.clusters:
                    out.setdefault(c.name, set()).add(_sends(cfg, vh, r, c))
            else:
                out.setdefault(r.route.cluster, set()).add(_sends(cfg, vh, r))
    assert all(len(v) == 1 for v in out.values()), out
    return {k: next(iter(v)) for k, v in out.items()}


def _settings(cfg: route_pb2.RouteConfiguration) -> int:
    """How many times the route configuration states the sender's setting."""
    levels: list[Any] = [cfg]
    for vh in cfg.virtual_hosts:
        levels.append(vh)
        for r in vh.routes:
            levels.append(r)
            levels.extend(r.route.weighted_clusters.clusters)
    return sum(telemetry.PEER_SENDER in level.typed_per_filter_config for level in levels)


def _route_config(rs: list[route_pb2.RouteConfiguration], name: str) -> route_pb2.RouteConfiguration:
    (cfg,) = [r for r in rs if r.name == name]
    return cfg


def test_in_mesh_clusters_are_mesh_internal_services_only() -> None:
    ctx = context(_objects())
    assert in_mesh_cluster(f"outbound|9080||{fqdn('reviews')}", ctx)
    assert in_mesh_cluster(f"outbound|9080|v1|{fqdn('reviews')}", ctx)
    assert not in_mesh_cluster(EXT_CLUSTER, ctx)
    assert not in_mesh_cluster("PassthroughCluster", ctx) and not in_mesh_cluster("BlackHoleCluster", ctx)
    assert not in_mesh_cluster("outbound|9080||nowhere.default.svc.cluster.local", ctx)
    assert not in_mesh_cluster(f"inbound|9080||{fqdn('reviews')}", ctx)
    pair = f"outbound|9080|v2|{fqdn('reviews')}|outbound|9080|v1|{fqdn('reviews')}"
    assert in_mesh_cluster(f"fallback|{pair}", ctx)
    assert not in_mesh_cluster(f"fallback|outbound|9080|v2|{fqdn('reviews')}|{EXT_CLUSTER}", ctx)


@pytest.mark.parametrize(("mode", "rds"), [("NONE", "http_proxy"), ("REDIRECT", None)])
def test_identity_goes_to_mesh_routes_only(mode: str, rds: str | None, tmp_path: Path) -> None:
    ctx = context(_objects())
    proxy = sidecar("productpage", INTERCEPTION_MODE=mode)
    rs = routes(proxy, ctx)
    reach: dict[str, bool] = {}
    for cfg in rs if rds is None else [_route_config(rs, rds)]:
        for cluster, sends in _reach(cfg).items():
            assert reach.setdefault(cluster, sends) == sends, cluster
    assert reach[f"outbound|9080||{fqdn('details')}"] is True  # a plain in-mesh host
    assert reach[f"outbound|9080||{fqdn('productpage')}"] is True  # next to a direct response
    assert reach[f"outbound|9080||{fqdn('reviews')}"] is True  # next to a route leaving the mesh
    assert reach[f"outbound|9080||{fqdn('ratings')}"] is True  # one weight of a split
    assert reach[EXT_CLUSTER] is False  # the ServiceEntry's own host, the split's other half, the /ext route
    assert reach["PassthroughCluster"] is False  # ALLOW_ANY
    envoy_validate(proxy, ctx, tmp_path)


def _mesh(extra_hosts: int = 10) -> list[dict[str, Any]]:
    """``_objects`` and more in-mesh hosts: a mesh, where most hosts are inside."""
    return [*_objects(), *(service_entry(f"svc{i}", selector={"app": f"svc{i}"}) for i in range(extra_hosts))]


def test_the_sender_is_set_where_it_costs_least() -> None:
    """On once for the route configuration (most of its hosts are in the mesh), off for the hosts outside it,
    and on or off again only where a route or a weight differs from its host or route."""
    ctx = context(_mesh())
    cfg = _route_config(routes(sidecar("productpage"), ctx), "http_proxy")
    assert _enables(cfg) is True
    by_name = {vh.name: vh for vh in cfg.virtual_hosts}
    details = by_name[f"{fqdn('details')}:9080"]
    assert _enables(details) is None and all(_enables(r) is None for r in details.routes)
    assert _enables(by_name[f"{fqdn('productpage')}:9080"]) is None
    assert _enables(by_name[f"{EXTERNAL}:80"]) is False and _enables(by_name["allow_any"]) is False
    reviews = by_name[f"{fqdn('reviews')}:9080"]  # /ext leaves, the rest stays: not most of it
    assert _enables(reviews) is False and [_enables(r) for r in reviews.routes] == [None, True]
    ratings = by_name[f"{fqdn('ratings')}:9080"]  # one weight each: not most, so off but the one inside
    (split,) = ratings.routes
    assert _enables(ratings) is False and _enables(split) is None
    assert [(c.name, _enables(c)) for c in split.route.weighted_clusters.clusters] == [
        (f"outbound|9080||{fqdn('ratings')}", True), (EXT_CLUSTER, None)]
    assert _settings(cfg) == 7
    # Idempotent: computed again (after EnvoyFilter patches) it writes the same.
    again = route_pb2.RouteConfiguration()
    again.CopyFrom(cfg)
    identity_reach([again], ctx)
    assert again == cfg


def test_a_route_configuration_mostly_outside_is_off_by_default() -> None:
    cfg = _route_config(routes(sidecar("productpage"), context(_objects())), "http_proxy")
    by_name = {vh.name: vh for vh in cfg.virtual_hosts}
    assert _enables(cfg) is None  # 2 of its 6 hosts are wholly in the mesh
    assert _enables(by_name[f"{fqdn('details')}:9080"]) is True and _enables(by_name["allow_any"]) is None


def test_a_mesh_of_many_hosts_states_it_a_few_times() -> None:
    cfg = _route_config(routes(sidecar("productpage"), context(_mesh(50))), "http_proxy")
    assert len(cfg.virtual_hosts) > 50 and _settings(cfg) == 7


def test_an_envoyfilter_route_to_the_outside_gets_no_identity() -> None:
    """An EnvoyFilter that adds a virtual host routing to a MESH_EXTERNAL host (it would inherit the route
    configuration's "on") is settled like the rest."""
    ef = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
          "metadata": {"name": "extra", "namespace": "default"},
          "spec": {"configPatches": [{"applyTo": "VIRTUAL_HOST", "match": {"context": "SIDECAR_OUTBOUND"},
                                      "patch": {"operation": "ADD", "value": {
                                          "name": "extra", "domains": ["extra.example.com"],
                                          "routes": [{"match": {"prefix": "/"},
                                                      "route": {"cluster": EXT_CLUSTER}}]}}}]}}
    rs = routes(sidecar("productpage"), context([*_mesh(), ef]))
    cfg = _route_config(rs, "http_proxy")
    (extra,) = [vh for vh in cfg.virtual_hosts if vh.name == "extra"]
    assert _enables(cfg) is True and _enables(extra) is False
    assert _reach(cfg)[EXT_CLUSTER] is False


def test_registry_only_blackhole_gets_no_identity() -> None:
    ctx = context(_objects(), MeshSettings(outbound_traffic_policy="REGISTRY_ONLY"))
    reach = _reach(_route_config(routes(sidecar("productpage"), ctx), "http_proxy"))
    assert reach["BlackHoleCluster"] is False and reach[EXT_CLUSTER] is False
    assert reach[f"outbound|9080||{fqdn('details')}"] is True


def test_a_mirror_outside_the_mesh_keeps_the_route_out() -> None:
    """A mirrored request carries the original's headers: the identity would reach the mirror too."""
    vs = _vs("details", fqdn("details"), [{"route": [_dest(fqdn("details"))], "mirror": {"host": EXTERNAL,
                                                                                          "port": {"number": 80}}}])
    rs = routes(sidecar("productpage"), context([*_objects(), vs]))
    reach = _reach(_route_config(rs, "http_proxy"))
    assert reach[f"outbound|9080||{fqdn('details')}"] is False
    inside = _vs("details", fqdn("details"), [{"route": [_dest(fqdn("details"))],
                                               "mirror": {"host": fqdn("reviews")}}])
    rs = routes(sidecar("productpage"), context([*_objects(), inside]))
    assert _reach(_route_config(rs, "http_proxy"))[f"outbound|9080||{fqdn('details')}"] is True


def _peer_filters(h: Any) -> list[Any]:
    return [f for f in h.http_filters if f.name in (telemetry.HEADER_TO_METADATA, telemetry.HEADER_MUTATION,
                                                      telemetry.PEER_SENDER)]


def test_outbound_hcm_strips_then_sends_only_where_enabled() -> None:
    proxy = sidecar("productpage")
    h = hcm_of(listeners(proxy, context(_objects()))["127.0.1.1_15001"].filter_chains[0])
    assert h is not None
    take, strip, send = _peer_filters(h)
    assert (take.name, strip.name, send.name) == (telemetry.HEADER_TO_METADATA, telemetry.HEADER_MUTATION,
                                                  telemetry.PEER_SENDER)
    assert not strip.disabled and send.disabled  # the sender runs only where a route turns it on
    cfg = header_mutation_pb2.HeaderMutation()
    assert strip.typed_config.Unpack(cfg)
    assert [m.remove for m in cfg.mutations.request_mutations] == [PEER_HEADER]  # what the application sent
    assert send.typed_config.Unpack(cfg)
    (setting,) = cfg.mutations.request_mutations
    assert setting.append.header.key == PEER_HEADER and ";default;productpage;v1;" in setting.append.header.value


def test_gateway_sends_to_the_mesh_not_to_an_external_host(tmp_path: Path) -> None:
    gw = istio_object("Gateway", "gw", "istio-system", {
        "selector": {"istio": "ingressgateway"},
        "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]})
    objs = [*_objects(), gw,
            _vs("in", "bookinfo.example.com", [{"route": [_dest(fqdn("productpage"), port=9080)]}],
                gateways=["istio-system/gw"]),
            _vs("out", EXTERNAL, [{"route": [_dest(EXTERNAL, port=80)]}], gateways=["istio-system/gw"])]
    ctx = context(objs)
    proxy = gateway()
    reach: dict[str, bool] = {}
    for cfg in routes(proxy, ctx):
        reach.update(_reach(cfg))
    assert reach[f"outbound|9080||{fqdn('productpage')}"] is True
    assert reach[EXT_CLUSTER] is False
    h = hcm_of(listeners(proxy, ctx)["127.0.2.1_8080"].filter_chains[0])
    assert h is not None and [f.name for f in _peer_filters(h)] == [
        telemetry.HEADER_TO_METADATA, telemetry.HEADER_MUTATION, telemetry.PEER_SENDER]
    envoy_validate(proxy, ctx, tmp_path)
