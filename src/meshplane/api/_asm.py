"""Semantic validation of ASM's kinds (istio.alibabacloud.com) and meshplane's MemberCluster.

ASM documents these kinds by example; the rules below are the ones a user would expect from those examples:
a TrafficLabel's value sources must be one of ASM's four variables with the right number of arguments, a
permissive lane group needs the header it routes on and the lane it falls back to, a MemberCluster is reached
either through a kubeconfig or run locally, never both. Each rule takes the object's metadata and its decoded
spec (:mod:`meshplane.model.spec`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from meshplane.api import _common as c
from meshplane.api import _formats as fmt
from meshplane.api._meta import check_labels
from meshplane.api._report import Report
from meshplane.model.labels import LOCAL_LABEL_FORMS
from meshplane.model.spec import (
    ASMHeaderPropagation,
    ASMOPAPolicy,
    ASMSwimLane,
    ASMSwimLaneGroup,
    ASMSwimLaneGroupIngressGateway,
    ASMSwimLaneGroupPermissiveModeConfiguration,
    ASMSwimLaneGroupServices,
    MemberCluster,
    ObjectMeta,
    ServiceEntryWorkloadSelector,
    SwimLaneIngressRule,
    TrafficLabel,
)

# ASM's value sources: name -> number of arguments.
TRAFFIC_LABEL_VARIABLES = {
    "getInboundRequestHeader": 1,
    "getExternalInboundRequestHeader": 2,
    "getLocalOutboundRequestHeader": 1,
    "getLabel": 1,
    "getContext": 1,
}
# ASM's v1beta1 form without arguments: the workload's ASM_TRAFFIC_TAG label.
LOCAL_LABEL = "$localLabel"
_VARIABLE = re.compile(r"^\$(\w+)\((.*)\)$")


def _value_from(entry: str, path: str, r: Report) -> None:
    if entry.strip() in LOCAL_LABEL_FORMS:
        return
    m = _VARIABLE.match(entry.strip())
    supported = ", ".join(f"${name}({', '.join(['x'] * n)})" for name, n in TRAFFIC_LABEL_VARIABLES.items())
    supported += ", " + LOCAL_LABEL
    if m is None or m.group(1) not in TRAFFIC_LABEL_VARIABLES:
        r.invalid(path, entry, f"must be one of {supported}")
        return
    name, raw = m.group(1), m.group(2)
    args = [a.strip() for a in raw.split(",")] if raw.strip() else []
    want = TRAFFIC_LABEL_VARIABLES[name]
    if len(args) != want:
        r.invalid(path, entry, f"${name} takes {want} argument{'s' if want > 1 else ''}, found {len(args)}")
        return
    for arg in args:
        err = fmt.qualified_name(arg) if name == "getLabel" else fmt.header_name(arg)
        if err:
            r.invalid(path, entry, f"argument {arg!r}: {err}")


def _selector(selector: ServiceEntryWorkloadSelector | None, r: Report) -> None:
    c.workload_selector(None if selector is None else selector.labels, "spec.workloadSelector.labels", r)


_UNSUPPORTED_TRAFFIC_LABEL = ("hosts", "http", "overwrite")


def traffic_label(meta: ObjectMeta, spec: TrafficLabel, r: Report) -> None:
    _selector(spec.workload_selector, r)
    for key in _UNSUPPORTED_TRAFFIC_LABEL:
        if getattr(spec, key) not in (None, (), [], {}):
            r.forbidden(f"spec.{key}", "not supported: labels are computed by spec.rules (labels, valueFrom) only; "
                        "ASM documents no semantics for this field, so it is refused rather than stored unapplied")
    if not spec.rules:
        r.required("spec.rules", "a TrafficLabel needs at least one rule")
    for i, rule in enumerate(spec.rules):
        if not rule.labels:
            r.required(f"spec.rules[{i}].labels")
        for j, target in enumerate(rule.attach_to):
            # opentracing: the labels become span tags of the selected workloads' spans (where they trace).
            if target.lower() != "opentracing":
                r.warn(f"spec.rules[{i}].attachTo[{j}]: {target!r} not applied: labels are recorded in trace spans "
                       "(opentracing) only")
        if rule.protocols not in (None, "", "*", "http", "HTTP"):
            r.warn(f"spec.rules[{i}].protocols: {rule.protocols!r} not applied: labels are set on every HTTP "
                   "request (HTTP/1.1, HTTP/2, gRPC), never on TCP")
        for j, label in enumerate(rule.labels):
            p = f"spec.rules[{i}].labels[{j}]"
            err = fmt.header_name(label.name or "")
            if err:
                r.invalid(f"{p}.name", label.name or "", err)
            if not label.value_from:
                r.required(f"{p}.valueFrom", "at least one value source is required")
            for k, entry in enumerate(label.value_from):
                _value_from(entry, f"{p}.valueFrom[{k}]", r)


def _service_refs(services: Sequence[ASMSwimLaneGroupServices], path: str, r: Report) -> None:
    seen: set[tuple[str, str, str]] = set()
    for i, svc in enumerate(services):
        p = f"{path}[{i}]"
        for key, value in (("name", svc.name), ("namespace", svc.namespace)):
            if not value:
                r.required(f"{p}.{key}")
            else:
                err = fmt.dns1123_label(value)
                if err:
                    r.invalid(f"{p}.{key}", value, err)
        cluster = "" if svc.cluster is None else svc.cluster.name or ""
        if svc.cluster is not None and svc.cluster.id:
            # ASM's cluster ID (the ACK cluster's); meshplane knows member clusters by name (topology.istio.io/cluster).
            if not cluster:
                r.forbidden(f"{p}.cluster.id", "member clusters are identified by cluster.name here: set "
                            "cluster.name (the id alone would not restrict the service to one cluster)")
            else:
                r.warn(f"{p}.cluster.id: not used: the member cluster is identified by cluster.name ({cluster!r})")
        ident = (svc.name or "", svc.namespace or "", cluster)
        if ident in seen:
            r.duplicate(p, f"{ident[1]}/{ident[0]}")
        seen.add(ident)


INGRESS_ROUTING_STRATEGIES = ("rule_based", "rule-based", "weighted")


def _ingress_rule(rule: SwimLaneIngressRule, p: str, r: Report, *, destination_required: bool = False) -> None:
    for j, host in enumerate(rule.hosts):
        err = fmt.wildcard_domain(host)
        if err:
            r.invalid(f"{p}.hosts[{j}]", host, err)
    match = rule.match
    c.string_match(None if match is None else match.uri, f"{p}.match.uri", r, allow_empty=False)
    for name, sm in (match.headers if match is not None else {}).items():
        err = fmt.header_name(name)
        if err:
            r.invalid(f"{p}.match.headers", name, err)
        c.string_match(sm, f"{p}.match.headers[{name}]", r, allow_empty=False)
    dest = rule.route.destination if rule.route is not None else None
    if dest is None:
        if rule.route is not None or destination_required:
            r.required(f"{p}.route.destination", "the service of the group that requests enter")
    else:
        c.destination_host(dest.host, f"{p}.route.destination.host", r)


def swim_lane_group(meta: ObjectMeta, spec: ASMSwimLaneGroup, r: Report) -> None:
    strategy = spec.ingress_routing_strategy
    if strategy is not None and strategy not in INGRESS_ROUTING_STRATEGIES:
        r.not_supported("spec.ingressRoutingStrategy", strategy, INGRESS_ROUTING_STRATEGIES)
    if strategy == "weighted":
        if spec.weighted_ingress_rule is None:
            r.required("spec.weightedIngressRule", "ingressRoutingStrategy weighted splits the requests one rule "
                       "matches across the lanes by their ingressWeight")
        else:
            _ingress_rule(spec.weighted_ingress_rule, "spec.weightedIngressRule", r, destination_required=True)
    elif spec.weighted_ingress_rule is not None:
        r.forbidden("spec.weightedIngressRule", "only with ingressRoutingStrategy: weighted")
    if not spec.services:
        r.required("spec.services", "a lane group needs the services of its call chain")
    _service_refs(spec.services, "spec.services", r)
    if spec.ingress is not None:
        gateway = spec.ingress.gateway or ASMSwimLaneGroupIngressGateway()
        if not gateway.name:
            r.required("spec.ingress.gateway.name", "the ingress gateway routing requests into the lanes")
        ns = gateway.namespace
        if ns:
            err = fmt.dns1123_label(ns)
            if err:
                r.invalid("spec.ingress.gateway.namespace", ns, err)
        if gateway.type not in (None, "", "ASM"):
            r.warn(f"spec.ingress.gateway.type: {gateway.type!r} not applied: the generated entry VirtualService "
                   "binds an Istio Gateway object of spec.ingress.gateway's name (type ASM)")
    pmc = spec.permissive_mode_configuration or ASMSwimLaneGroupPermissiveModeConfiguration()
    if spec.is_permissive:
        p = "spec.permissiveModeConfiguration"
        if not pmc.route_header:
            r.required(f"{p}.routeHeader", "permissive mode routes on a request header, e.g. x-asm-prefer-tag")
        if not pmc.fallback_target:
            r.required(f"{p}.fallbackTarget", "permissive mode needs the base lane to fall back to")
    elif spec.permissive_mode_configuration is not None:
        r.warn("spec.permissiveModeConfiguration: ignored unless isPermissive is true")
    for key, value in (("routeHeader", pmc.route_header), ("traceHeader", pmc.trace_header)):
        if value:
            err = fmt.header_name(value)
            if err:
                r.invalid(f"spec.permissiveModeConfiguration.{key}", value, err)
    target = pmc.fallback_target
    if target:
        err = fmt.dns1123_subdomain(target)
        if err:
            r.invalid("spec.permissiveModeConfiguration.fallbackTarget", target, "must name a lane: " + err)


def swim_lane(meta: ObjectMeta, spec: ASMSwimLane, r: Report) -> None:
    if not spec.label_selector:
        r.required("spec.labelSelector", "a lane selects its versions by workload labels, e.g. {version: v2}")
    check_labels(spec.label_selector, "spec.labelSelector", r)
    _service_refs(spec.services, "spec.services", r)
    names: set[str] = set()
    for i, rule in enumerate(spec.ingress_rules):
        p = f"spec.ingressRules[{i}]"
        name = rule.name
        if name:
            if name in names:
                r.duplicate(f"{p}.name", name)
            names.add(name)
        _ingress_rule(rule, p, r)
    if "swimlane-group" not in meta.labels:
        r.warn("metadata.labels: no swimlane-group label: this lane belongs to no lane group")


def header_propagation(meta: ObjectMeta, spec: ASMHeaderPropagation, r: Report) -> None:
    _selector(spec.workload_selector, r)
    headers, prefix = spec.headers, spec.header_prefix
    if not headers and not prefix:
        r.required("spec.headers", "one of headers or headerPrefix is required")
    if headers and prefix:
        r.forbidden("spec.headerPrefix", "may not be set together with headers")
    seen: set[str] = set()
    for i, name in enumerate(headers):
        err = fmt.header_name(name)
        if err:
            r.invalid(f"spec.headers[{i}]", name, err)
        elif name.lower() in seen:
            r.duplicate(f"spec.headers[{i}]", name)
        seen.add(name.lower())
    if prefix:
        err = fmt.header_name(prefix)
        if err:
            r.invalid("spec.headerPrefix", prefix, err)


def rego_error(policy: str) -> str:
    """Why ``policy`` does not compile as Rego (v1, else v0), "" when it does or when no engine is installed.
    The engine is regorus (``gordon-to-regorus``), the same one the agent evaluates with."""
    try:
        import regorus  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return ""
    errors = []
    for v0 in (False, True):
        engine = regorus.Engine()
        if v0:
            engine.set_rego_v0(True)
        try:
            engine.add_policy("policy.rego", policy)
            return ""
        except RuntimeError as e:
            errors.append(str(e).split("Stack backtrace:")[0].strip())
    return errors[0]


def opa_policy(meta: ObjectMeta, spec: ASMOPAPolicy, r: Report) -> None:
    _selector(spec.workload_selector, r)
    policy = spec.policy
    rego_id = spec.policy_rego_id
    if rego_id is not None:
        err = fmt.dns1123_subdomain(rego_id)
        if err:
            r.invalid("spec.policyRegoID", rego_id, err)
    if policy is None or not policy.strip():
        if not rego_id:
            r.required("spec.policy", "Rego text is required, or policyRegoID naming a shared policy")
        return
    err = rego_error(policy)
    if err:
        r.invalid("spec.policy", "<rego>", f"does not compile: {err}")


def member_cluster(meta: ObjectMeta, spec: MemberCluster, r: Report) -> None:
    kubeconfig, local = spec.kubeconfig, spec.local is True
    if kubeconfig and local:
        r.forbidden("spec.kubeconfig", "may not be set when local is true: a cluster is either local or reached "
                    "through its kubeconfig")
    elif not kubeconfig and not local:
        r.required("spec.kubeconfig", "one of kubeconfig or local: true is required")
    for key, value in (("network", spec.network), ("region", spec.region), ("zone", spec.zone)):
        if value:
            err = fmt.label_value(value)
            if err:
                r.invalid(f"spec.{key}", value, err)
    for i, selector in enumerate(spec.discovery_selectors):
        p = f"spec.discoverySelectors[{i}]"
        check_labels(selector.match_labels, f"{p}.matchLabels", r)
        for j, expr in enumerate(selector.match_expressions):
            q = f"{p}.matchExpressions[{j}]"
            err = fmt.qualified_name(expr.key or "")
            if err:
                r.invalid(f"{q}.key", expr.key or "", err)
            op, values = expr.operator, expr.values
            if op in ("In", "NotIn") and not values:
                r.required(f"{q}.values", "must be specified when `operator` is 'In' or 'NotIn'")
            elif op in ("Exists", "DoesNotExist") and values:
                r.forbidden(f"{q}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
