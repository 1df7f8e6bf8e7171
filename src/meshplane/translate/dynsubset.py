"""ASM's dynamic subsets: endpoints grouped by their label values, a route picking the group from request headers.
Pure.

Two ASM forms reach the same Envoy mechanism, the subset load balancer:

* a DestinationRule ``trafficPolicy.loadBalancer.dynamicSubset`` (``subsetSelectors: [{keys: [version]}]``,
  ``fallbackPolicy``, ``defaultSubset``) with VirtualService routes naming headers
  (``headerToDynamicSubsetKey: [{header: x-version, key: version}]``);
* the full-link canary sample's label-variable subset: a DestinationRule subset ``{name: $v, labels: {version:
  $v}}`` and a route destination ``subset: $v``, i.e. "the subset whose version equals request header ``v``"
  (the header a TrafficLabel sets).

Why Envoy's subset load balancer and not one cluster per label value: the groups follow the endpoints with no
configuration change (a version deployed tomorrow is routable by its header as soon as its endpoints arrive by
EDS), which is the point of the feature. So the service's plain cluster (``outbound|port||host``) gets
``lb_subset_config`` with the selectors, its EDS endpoints carry the selector keys' label values as ``envoy.lb``
metadata, and each route that uses a dynamic subset enables the (chain-wide, disabled by default)
``header_to_metadata`` filter with rules writing header values into ``envoy.lb`` request metadata, which the
router merges into the route's metadata match. A request without the header, or whose value has no endpoints,
meets the fallback policy: ``ANY_ENDPOINT`` (default: the whole service), ``NO_FALLBACK`` (503) or
``DEFAULT_SUBSET``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2 as h2m
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import struct_pb2

from meshplane.model import spec as istio
from meshplane.translate.common import pack

# A header_to_metadata filter of its own name: telemetry has another one (the identity exchange), and per-route
# configuration is keyed by the filter's name in the chain.
HEADER_TO_METADATA = "meshplane.dynamic_subset"
LB_NAMESPACE = "envoy.lb"

_FALLBACK = {
    "ANY_ENDPOINT": cluster_pb2.Cluster.LbSubsetConfig.ANY_ENDPOINT,
    "NO_FALLBACK": cluster_pb2.Cluster.LbSubsetConfig.NO_FALLBACK,
    "DEFAULT_SUBSET": cluster_pb2.Cluster.LbSubsetConfig.DEFAULT_SUBSET,
}
_SELECTOR = cluster_pb2.Cluster.LbSubsetConfig.LbSubsetSelector
_SELECTOR_FALLBACK = {
    "INHERIT": _SELECTOR.NOT_DEFINED,
    "NO_FALLBACK": _SELECTOR.NO_FALLBACK,
    "ANY_ENDPOINT": _SELECTOR.ANY_ENDPOINT,
    "DEFAULT_SUBSET": _SELECTOR.DEFAULT_SUBSET,
}


def label_variable(subset: str | None) -> str | None:
    """The header a label-variable subset name (``$v``) stands for, lower-cased; None for an ordinary name."""
    if subset and subset.startswith("$") and len(subset) > 1:
        return subset[1:].lower()
    return None


@dataclass(frozen=True, slots=True)
class DynamicSubsets:
    """What one DestinationRule asks of the subset load balancer."""

    selectors: tuple[tuple[tuple[str, ...], str], ...]  # (label keys, selector fallback policy)
    fallback: str
    default_subset: Mapping[str, str]
    variables: Mapping[str, tuple[str, ...]]  # label-variable header -> the label keys it gives the value of

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(k for keys, _ in self.selectors for k in keys)


def of(dr_spec: istio.DestinationRule | None) -> DynamicSubsets | None:
    """The dynamic subsets ``dr_spec`` defines, None when it defines none."""
    if dr_spec is None:
        return None
    variables: dict[str, tuple[str, ...]] = {}
    for s in dr_spec.subsets:
        var = label_variable(s.name)
        if var is not None and s.labels:
            variables[var] = tuple(sorted(s.labels))
    tp = dr_spec.traffic_policy
    ds = tp.load_balancer.dynamic_subset if tp is not None and tp.load_balancer is not None else None
    selectors: list[tuple[tuple[str, ...], str]] = []
    if ds is not None:
        selectors += [(tuple(sel.keys), sel.fallback_policy or "INHERIT") for sel in ds.subset_selectors if sel.keys]
    for keys in variables.values():
        if (keys, "INHERIT") not in selectors:
            selectors.append((keys, "INHERIT"))
    if not selectors:
        return None
    return DynamicSubsets(selectors=tuple(selectors),
                          fallback=(ds.fallback_policy if ds is not None else None) or "ANY_ENDPOINT",
                          default_subset=dict(ds.default_subset) if ds is not None else {},
                          variables=variables)


def lb_subset_config(dyn: DynamicSubsets) -> cluster_pb2.Cluster.LbSubsetConfig:
    cfg = cluster_pb2.Cluster.LbSubsetConfig(fallback_policy=_FALLBACK.get(dyn.fallback, _FALLBACK["ANY_ENDPOINT"]))
    if dyn.default_subset:
        cfg.default_subset.CopyFrom(struct_pb2.Struct(fields={
            k: struct_pb2.Value(string_value=v) for k, v in sorted(dyn.default_subset.items())}))
    for keys, fallback in dyn.selectors:
        cfg.subset_selectors.add(keys=list(keys), fallback_policy=_SELECTOR_FALLBACK.get(fallback,
                                                                                        _SELECTOR.NOT_DEFINED))
    return cfg


def endpoint_metadata(dyn: DynamicSubsets, labels: Mapping[str, str]) -> dict[str, str]:
    """The ``envoy.lb`` metadata of an endpoint with ``labels``: its values of the selectors' keys."""
    return {k: labels[k] for k in sorted(dyn.keys) if k in labels}


Rule = tuple[str, str, str | None]  # (header, label key, value when the header is missing)


def route_rules(http: istio.HTTPRoute,
                dyn_for: Callable[[istio.Destination], DynamicSubsets | None]) -> list[Rule]:
    """The header -> ``envoy.lb`` key rules of one route: its ``headerToDynamicSubsetKey``, and for each
    destination ``subset: $v``, header ``v`` to the keys the destination's label-variable subset names
    (``dyn_for``: the dynamic subsets of a destination's DestinationRule, as the proxy sees it)."""
    out: list[Rule] = [((hk.header or "").lower(), hk.key or "", hk.default_value)
                       for hk in http.header_to_dynamic_subset_key if hk.header and hk.key]
    for d in http.route:
        dest = d.destination
        var = label_variable(dest.subset if dest is not None else None)
        dyn = dyn_for(dest) if var is not None and dest is not None else None
        if var is None or dyn is None:
            continue
        for key in dyn.variables.get(var, ()):
            if (var, key, None) not in out:
                out.append((var, key, None))
    return out


def header_to_metadata_filter() -> hcm_pb2.HttpFilter:
    """In every chain after the Lua filter (TrafficLabels set the headers it reads), disabled unless a route
    enables it (so it costs nothing elsewhere)."""
    # Envoy refuses a header_to_metadata config without rules, even on a disabled filter: one that never fires.
    cfg = h2m.Config()
    cfg.request_rules.add(header="x-meshplane-unset").on_header_present.CopyFrom(
        h2m.Config.KeyValuePair(metadata_namespace="meshplane.unused", key="unused", type=h2m.Config.STRING))
    return hcm_pb2.HttpFilter(name=HEADER_TO_METADATA, typed_config=pack(cfg), disabled=True)


def attach(route: rc.Route, rules: Sequence[Rule]) -> None:
    if not rules:
        return
    cfg = h2m.Config()
    for header, key, default in rules:
        rule = cfg.request_rules.add(header=header)
        rule.on_header_present.CopyFrom(h2m.Config.KeyValuePair(metadata_namespace=LB_NAMESPACE, key=key,
                                                                  type=h2m.Config.STRING))
        if default:
            rule.on_header_missing.CopyFrom(h2m.Config.KeyValuePair(metadata_namespace=LB_NAMESPACE, key=key,
                                                                      value=default, type=h2m.Config.STRING))
    route.typed_per_filter_config[HEADER_TO_METADATA].CopyFrom(pack(rc.FilterConfig(config=pack(cfg),
                                                                                       disabled=False)))
