"""meshplane's own analyzers for ASM kinds (codes ``MPL0xxx``; Istio has none for them).

Why: a lane group is compiled into VirtualServices and DestinationRules (``meshplane.lanes``), so a mistake in it
shows up only as traffic that goes to the wrong place. These name the cause: a lane group whose ingress Gateway
does not exist (no ingress route is generated), a ``fallbackTarget`` that is no lane of the group (no base lane to
fall back to), a service of the group the registry does not know, a TrafficLabel whose ``workloadSelector``
selects no workload instance (it labels nothing), and an EnvoyFilterTemplateBinding whose template, or that
template's value for its ``istioVersion``, does not exist (it patches nothing until it does).
"""

from __future__ import annotations

from meshplane.analysis import messages as m
from meshplane.analysis.context import Context, selector_string
from meshplane.model.resources import (
    ENVOY_FILTER_TEMPLATE_BINDINGS,
    ENVOY_FILTER_TEMPLATES,
    LANE_GROUPS,
    LANES,
    TRAFFIC_LABELS,
)
from meshplane.translate.envoyfiltertemplate import unresolved

GROUP_LINK_LABEL = "swimlane-group"  # how ASM links a lane to its group (as meshplane.lanes reads it)


def check_lane_groups(ctx: Context) -> None:
    lanes = ctx.of(LANES)
    for group in ctx.of(LANE_GROUPS):
        ns, spec = group.meta.namespace, group.spec
        gw = spec.ingress.gateway if spec.ingress is not None else None
        if gw is not None and gw.name:
            key = f"{gw.namespace or ns}/{gw.name}"
            if key not in ctx.gateways:
                ctx.report(group, m.LANE_GROUP_GATEWAY_NOT_FOUND, key)
        names = sorted(lane.meta.name for lane in lanes
                       if lane.meta.namespace == ns and lane.meta.labels.get(GROUP_LINK_LABEL) == group.meta.name)
        pmc = spec.permissive_mode_configuration
        fallback = (pmc.fallback_target if pmc is not None else None) or ""
        if fallback and fallback not in names:
            ctx.report(group, m.LANE_FALLBACK_NOT_A_LANE, fallback, names)
        for svc in spec.services:
            if not svc.name:
                continue
            host = f"{svc.name}.{svc.namespace or ns}.svc.cluster.local"
            if not ctx.service_exists(host, ns):
                ctx.report(group, m.LANE_GROUP_SERVICE_NOT_FOUND, host)


def check_traffic_labels(ctx: Context, root_namespace: str) -> None:
    for tl in ctx.of(TRAFFIC_LABELS):
        sel = tl.spec.workload_selector
        if sel is None or not sel.labels:
            continue
        ns = None if tl.meta.namespace == root_namespace else tl.meta.namespace
        if not ctx.selected(dict(sel.labels), ns):
            ctx.report(tl, m.TRAFFIC_LABEL_SELECTS_NOTHING, selector_string(dict(sel.labels)), tl.meta.namespace)


def check_template_bindings(ctx: Context, root_namespace: str) -> None:
    for binding, why in unresolved(ctx.of(ENVOY_FILTER_TEMPLATES), ctx.of(ENVOY_FILTER_TEMPLATE_BINDINGS),
                                   root_namespace):
        ctx.report(binding, m.TEMPLATE_BINDING_UNRESOLVED, why)


def analyze(ctx: Context, root_namespace: str) -> None:
    check_lane_groups(ctx)
    check_traffic_labels(ctx, root_namespace)
    check_template_bindings(ctx, root_namespace)


__all__ = ["GROUP_LINK_LABEL", "analyze"]
