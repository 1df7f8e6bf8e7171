"""ASM's VirtualService ``fallback``: an aggregate cluster of [subset, fallback subset] where both exist, the plain
cluster otherwise; the lanes compiler's output translates and passes ``envoy --mode validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import (
    clusters,
    context,
    envoy_validate,
    gateway,
    routes,
    service_entry,
    sidecar,
    workload_entry,
)
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2

from tests.unit.lanes.lane_objects import compiled, group, permissive_lanes

MOCKS = {("mocka", "v1"): "127.0.3.1", ("mockb", "v1"): "127.0.3.2", ("mockc", "v1"): "127.0.3.3",
         ("mocka", "v2"): "127.0.3.4", ("mockc", "v2"): "127.0.3.5", ("mocka", "v3"): "127.0.3.6",
         ("mockb", "v3"): "127.0.3.7", ("mockc", "v3"): "127.0.3.8"}
PORTS = [{"number": 8000, "name": "http", "protocol": "HTTP"}]


def mock_registry() -> list[dict[str, Any]]:
    objs = [service_entry(s, selector={"app": s}, ports=PORTS) for s in ("mocka", "mockb", "mockc")]
    for (svc, v), ip in MOCKS.items():
        objs.append(workload_entry(f"{svc}-{v}", ip, {"app": svc, "version": v, "ASM_TRAFFIC_TAG": v}))
    return objs


def lane_objects(**kw: Any) -> list[dict[str, Any]]:
    return [g.obj for g in compiled(group(permissive=True, **kw), permissive_lanes((80, 10, 10)))]


def mock_sidecar(svc: str, v: str) -> Any:
    return sidecar(svc, v, ip=MOCKS[(svc, v)], inbound="http:8000=18000",
                   LABELS={"app": svc, "version": v, "ASM_TRAFFIC_TAG": v})


def _vhost_route(proxy: Any, ctx: Any, host: str, name: str) -> Any:
    for rc in routes(proxy, ctx):
        for vh in rc.virtual_hosts:
            if vh.name == f"{host}:8000":
                return next(r for r in vh.routes if r.name == name)
    raise AssertionError(f"no route {name} for {host}")


def test_fallback_is_an_aggregate_cluster() -> None:
    ctx = context(mock_registry() + lane_objects())
    proxy = mock_sidecar("mocka", "v3")
    host = "mockb.default.svc.cluster.local"
    r = _vhost_route(proxy, ctx, host, "lane-v3")
    primary, fb = f"outbound|8000|v3|{host}", f"outbound|8000|v1|{host}"
    assert r.route.cluster == f"fallback|{primary}|{fb}"
    agg = clusters(proxy, ctx)[r.route.cluster]
    cfg = aggregate_pb2.ClusterConfig()
    agg.cluster_type.typed_config.Unpack(cfg)
    assert list(cfg.clusters) == [primary, fb]
    # Lane v2 has no mockb: straight to the base lane, no aggregate.
    assert _vhost_route(proxy, ctx, host, "lane-v2").route.cluster == fb


def _one_fallback(primary: str, target: str) -> list[dict[str, Any]]:
    """mockb's route "only" to subset ``primary`` falling back to ``target``; the rule defines v1 only."""
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
          "metadata": {"name": "b", "namespace": "default"},
          "spec": {"hosts": ["mockb"], "http": [{"name": "only", "route": [
              {"destination": {"host": "mockb", "subset": primary},
               "fallback": {"target": {"host": "mockb", "subset": target}}}]}]}}
    dr = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
          "metadata": {"name": "b", "namespace": "default"},
          "spec": {"host": "mockb", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}}
    return [*mock_registry(), vs, dr]


def test_fallback_without_primary_subset_uses_target() -> None:
    ctx = context(_one_fallback("v9", "v1"))
    r = _vhost_route(mock_sidecar("mocka", "v1"), ctx, "mockb.default.svc.cluster.local", "only")
    assert r.route.cluster == "outbound|8000|v1|mockb.default.svc.cluster.local"


@pytest.mark.envoy
@pytest.mark.parametrize("trace", ["", "baggage", "my-request-id"])
def test_lane_config_validates(trace: str, tmp_path: Path) -> None:
    ctx = context(mock_registry() + lane_objects(trace_header=trace))
    envoy_validate(mock_sidecar("mocka", "v2"), ctx, tmp_path)
    envoy_validate(gateway(), ctx, tmp_path)


def test_fallback_to_a_subset_no_rule_defines_keeps_the_primary() -> None:
    ctx = context(_one_fallback("v1", "v9"))
    proxy = mock_sidecar("mocka", "v1")
    r = _vhost_route(proxy, ctx, "mockb.default.svc.cluster.local", "only")
    assert r.route.cluster == "outbound|8000|v1|mockb.default.svc.cluster.local"
    assert not [n for n in clusters(proxy, ctx) if n.startswith("fallback|")]
