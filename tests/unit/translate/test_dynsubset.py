"""ASM's dynamic subsets and label-variable subsets -> Envoy's subset load balancer: the service's plain cluster
gets ``lb_subset_config``, its endpoints carry the keys' values as ``envoy.lb`` metadata, routes write request
headers into ``envoy.lb`` request metadata (header_to_metadata per route); the config passes
``envoy --mode validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from _translate_helpers import clusters, context, decode, envoy_validate, gateway, routes
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2 as h2m

from meshplane.model import xdstypes
from meshplane.translate import dynsubset
from meshplane.translate.trafficlabel import parse_source
from tests.unit.translate.test_fallback import mock_registry, mock_sidecar

ASM_DATA = Path(__file__).resolve().parents[2] / "data" / "asm"
MOCKB = "mockb.default.svc.cluster.local"
PLAIN = f"outbound|8000||{MOCKB}"


def _dr(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "mockb", "namespace": "default"}, "spec": {"host": MOCKB, **spec}}


def _vs(http: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "mockb", "namespace": "default"},
            "spec": {"hosts": [MOCKB], "http": [{"name": "only", **http}]}}


DYNAMIC = _dr({"trafficPolicy": {"loadBalancer": {"dynamicSubset": {
    "subsetSelectors": [{"keys": ["version"]}], "fallbackPolicy": "DEFAULT_SUBSET",
    "defaultSubset": {"version": "v1"}}}}})
BY_HEADER = _vs({"headerToDynamicSubsetKey": [{"header": "x-version", "key": "version", "defaultValue": "v3"}],
                 "route": [{"destination": {"host": MOCKB}}]})


def _route(proxy: Any, ctx: Any, name: str = "only") -> rc.Route:
    for cfg in routes(proxy, ctx):
        for vh in cfg.virtual_hosts:
            if vh.name == f"{MOCKB}:8000":
                return next(r for r in vh.routes if r.name == name)
    raise AssertionError("no mockb route")


def _rules(r: rc.Route) -> list[tuple[str, str, str]]:
    fc = rc.FilterConfig()
    assert r.typed_per_filter_config[dynsubset.HEADER_TO_METADATA].Unpack(fc)
    assert not fc.disabled
    cfg = h2m.Config()
    assert fc.config.Unpack(cfg)
    return [(x.header, x.on_header_present.metadata_namespace + "/" + x.on_header_present.key,
             x.on_header_missing.value) for x in cfg.request_rules]


def test_dynamic_subset_cluster_endpoints_and_route() -> None:
    ctx = context([*mock_registry(), DYNAMIC, BY_HEADER])
    proxy = mock_sidecar("mocka", "v1")
    c = clusters(proxy, ctx)[PLAIN]
    cfg = c.lb_subset_config
    assert [list(s.keys) for s in cfg.subset_selectors] == [["version"]]
    assert cfg.fallback_policy == cluster_pb2.Cluster.LbSubsetConfig.DEFAULT_SUBSET
    assert dict(cfg.default_subset.fields)["version"].string_value == "v1"
    (cla,) = decode(xdstypes.ENDPOINT, proxy, ctx, [PLAIN])
    versions = sorted(lbe.metadata.filter_metadata["envoy.lb"].fields["version"].string_value
                      for loc in cla.endpoints for lbe in loc.lb_endpoints)
    assert versions == ["v1", "v3"]
    assert _rules(_route(proxy, ctx)) == [("x-version", "envoy.lb/version", "v3")]


def test_no_dynamic_subset_no_subset_lb() -> None:
    ctx = context([*mock_registry(), _dr({"subsets": [{"name": "v1", "labels": {"version": "v1"}}]})])
    proxy = mock_sidecar("mocka", "v1")
    assert not clusters(proxy, ctx)[PLAIN].HasField("lb_subset_config")
    (cla,) = decode(xdstypes.ENDPOINT, proxy, ctx, [PLAIN])
    assert all("envoy.lb" not in lbe.metadata.filter_metadata for loc in cla.endpoints for lbe in loc.lb_endpoints)


def test_label_variable_subset_routes_by_the_labels_header() -> None:
    objs = [o for o in yaml.safe_load_all((ASM_DATA / "full-link-canary.yaml").read_text())
            if o["kind"] in ("DestinationRule", "VirtualService") and o["metadata"]["name"] == "mockb"]
    ctx = context([*mock_registry(), *objs])
    proxy = mock_sidecar("mocka", "v2")
    cl = clusters(proxy, ctx)
    assert [list(s.keys) for s in cl[PLAIN].lb_subset_config.subset_selectors] == [["version"]]
    # The default: any endpoint when no subset matches (lane v2 has no mockb).
    assert cl[PLAIN].lb_subset_config.fallback_policy == cluster_pb2.Cluster.LbSubsetConfig.ANY_ENDPOINT
    assert not [n for n in cl if "$" in n], "no cluster per label-variable subset"
    vh = next(vh for cfg in routes(proxy, ctx) for vh in cfg.virtual_hosts if vh.name == f"{MOCKB}:8000")
    r = vh.routes[0]
    assert r.route.cluster == PLAIN
    assert _rules(r) == [("userdefinelabel1", "envoy.lb/version", "")]


def test_v1beta1_value_sources() -> None:
    p = mock_sidecar("mockb", "v3")
    assert parse_source("$localLabel", p) == ("c", "v3")
    assert parse_source("$(localLabel)", p) == ("c", "v3")
    assert parse_source("$(localLabel)", gateway()) is None  # no ASM_TRAFFIC_TAG label: the next source is tried
    assert parse_source("$getContext(x-request-id)", p, "userdefinelabel1") == ("x", "userdefinelabel1",
                                                                                 "x-request-id")
    assert parse_source("$getContext(x-request-id)", gateway(), "userdefinelabel1") == ("h", "userdefinelabel1")


def test_dynamic_subset_config_validates(tmp_path: Path) -> None:
    canary = list(yaml.safe_load_all((ASM_DATA / "full-link-canary.yaml").read_text()))
    ctx = context([*mock_registry(), *canary])
    envoy_validate(mock_sidecar("mocka", "v2"), ctx, tmp_path)
    envoy_validate(gateway(), ctx, tmp_path)
    ctx = context([*mock_registry(), DYNAMIC, BY_HEADER])
    envoy_validate(mock_sidecar("mocka", "v1"), ctx, tmp_path)


def test_label_variable_subset_no_rule_defines_is_a_missing_subset() -> None:
    """As in Istio, a subset nothing defines routes nowhere (not to the whole service, label ignored)."""
    vs = _vs({"route": [{"destination": {"host": MOCKB, "subset": "$userdefinelabel1"}}]})
    ctx = context([*mock_registry(), vs, _dr({"subsets": [{"name": "v1", "labels": {"version": "v1"}}]})])
    assert _route(mock_sidecar("mocka", "v1"), ctx).route.cluster == "BlackHoleCluster"
