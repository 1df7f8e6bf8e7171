"""Semantic validation of ASM's kinds (istio.alibabacloud.com) and meshplane's MemberCluster.

ASM documents these kinds by example; the rules below are the ones a user would expect from those examples:
a TrafficLabel's value sources must be one of ASM's four variables with the right number of arguments, a
permissive lane group needs the header it routes on and the lane it falls back to, a MemberCluster is reached
either through a kubeconfig or run locally, never both.
"""

from __future__ import annotations

import re
from typing import Any

from meshplane.api import _common_json as c
from meshplane.api import _formats as fmt
from meshplane.api._meta import check_labels
from meshplane.api._report import Report

J = dict[str, Any]

# ASM's value sources: name -> number of arguments.
TRAFFIC_LABEL_VARIABLES = {
    "getInboundRequestHeader": 1,
    "getExternalInboundRequestHeader": 2,
    "getLocalOutboundRequestHeader": 1,
    "getLabel": 1,
}
_VARIABLE = re.compile(r"^\$(\w+)\((.*)\)$")


def _value_from(entry: str, path: str, r: Report) -> None:
    m = _VARIABLE.match(entry.strip())
    supported = ", ".join(f"${name}({', '.join(['x'] * n)})" for name, n in TRAFFIC_LABEL_VARIABLES.items())
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


def traffic_label(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    selector = spec.get("workloadSelector")
    if selector is not None:
        c.workload_selector(selector, "spec.workloadSelector", r, key="labels")
    rules = spec.get("rules") or []
    if not rules:
        r.required("spec.rules", "a TrafficLabel needs at least one rule")
    for i, rule in enumerate(rules):
        labels = rule.get("labels") or []
        if not labels:
            r.required(f"spec.rules[{i}].labels")
        for j, label in enumerate(labels):
            p = f"spec.rules[{i}].labels[{j}]"
            err = fmt.header_name(label.get("name", ""))
            if err:
                r.invalid(f"{p}.name", label.get("name", ""), err)
            sources = label.get("valueFrom") or []
            if not sources:
                r.required(f"{p}.valueFrom", "at least one value source is required")
            for k, entry in enumerate(sources):
                _value_from(entry, f"{p}.valueFrom[{k}]", r)


def _service_refs(services: list[J], path: str, r: Report) -> None:
    seen: set[tuple[str, str, str]] = set()
    for i, svc in enumerate(services):
        p = f"{path}[{i}]"
        for key in ("name", "namespace"):
            value = svc.get(key)
            if not value:
                r.required(f"{p}.{key}")
            else:
                err = fmt.dns1123_label(value)
                if err:
                    r.invalid(f"{p}.{key}", value, err)
        ident = (svc.get("name", ""), svc.get("namespace", ""), (svc.get("cluster") or {}).get("name", ""))
        if ident in seen:
            r.duplicate(p, f"{ident[1]}/{ident[0]}")
        seen.add(ident)


def swim_lane_group(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    services = spec.get("services") or []
    if not services:
        r.required("spec.services", "a lane group needs the services of its call chain")
    _service_refs(services, "spec.services", r)
    ingress = spec.get("ingress")
    if ingress is not None:
        gateway = ingress.get("gateway") or {}
        if not gateway.get("name"):
            r.required("spec.ingress.gateway.name", "the ingress gateway routing requests into the lanes")
        ns = gateway.get("namespace")
        if ns:
            err = fmt.dns1123_label(ns)
            if err:
                r.invalid("spec.ingress.gateway.namespace", ns, err)
    pmc = spec.get("permissiveModeConfiguration") or {}
    if spec.get("isPermissive"):
        p = "spec.permissiveModeConfiguration"
        if not pmc.get("routeHeader"):
            r.required(f"{p}.routeHeader", "permissive mode routes on a request header, e.g. x-asm-prefer-tag")
        if not pmc.get("fallbackTarget"):
            r.required(f"{p}.fallbackTarget", "permissive mode needs the base lane to fall back to")
    elif spec.get("permissiveModeConfiguration") is not None:
        r.warn("spec.permissiveModeConfiguration: ignored unless isPermissive is true")
    for key in ("routeHeader", "traceHeader"):
        value = pmc.get(key)
        if value:
            err = fmt.header_name(value)
            if err:
                r.invalid(f"spec.permissiveModeConfiguration.{key}", value, err)
    target = pmc.get("fallbackTarget")
    if target:
        err = fmt.dns1123_subdomain(target)
        if err:
            r.invalid("spec.permissiveModeConfiguration.fallbackTarget", target, "must name a lane: " + err)


def swim_lane(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    selector = spec.get("labelSelector") or {}
    if not selector:
        r.required("spec.labelSelector", "a lane selects its versions by workload labels, e.g. {version: v2}")
    check_labels(selector, "spec.labelSelector", r)
    _service_refs(spec.get("services") or [], "spec.services", r)
    names: set[str] = set()
    for i, rule in enumerate(spec.get("ingressRules") or []):
        p = f"spec.ingressRules[{i}]"
        name = rule.get("name")
        if name:
            if name in names:
                r.duplicate(f"{p}.name", name)
            names.add(name)
        for j, host in enumerate(rule.get("hosts") or []):
            err = fmt.wildcard_domain(host)
            if err:
                r.invalid(f"{p}.hosts[{j}]", host, err)
        uri = (rule.get("match") or {}).get("uri")
        c.string_match(uri, f"{p}.match.uri", r, allow_empty=False)
        route = rule.get("route")
        if route is not None:
            dest = route.get("destination")
            if dest is None:
                r.required(f"{p}.route.destination")
            else:
                c.destination(dest, f"{p}.route.destination", r)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if "swimlane-group" not in labels:
        r.warn("metadata.labels: no swimlane-group label: this lane belongs to no lane group")


def header_propagation(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    selector = spec.get("workloadSelector")
    if selector is not None:
        c.workload_selector(selector, "spec.workloadSelector", r, key="labels")
    headers = spec.get("headers") or []
    prefix = spec.get("headerPrefix")
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


def opa_policy(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    selector = spec.get("workloadSelector")
    if selector is not None:
        c.workload_selector(selector, "spec.workloadSelector", r, key="labels")
    policy = spec.get("policy")
    if not isinstance(policy, str) or not policy.strip():
        r.required("spec.policy", "Rego text is required")
        return
    err = rego_error(policy)
    if err:
        r.invalid("spec.policy", "<rego>", f"does not compile: {err}")


def member_cluster(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    kubeconfig, local = spec.get("kubeconfig"), spec.get("local") is True
    if kubeconfig and local:
        r.forbidden("spec.kubeconfig", "may not be set when local is true: a cluster is either local or reached "
                    "through its kubeconfig")
    elif not kubeconfig and not local:
        r.required("spec.kubeconfig", "one of kubeconfig or local: true is required")
    for key in ("network", "region", "zone"):
        value = spec.get(key)
        if value:
            err = fmt.label_value(value)
            if err:
                r.invalid(f"spec.{key}", value, err)
    for i, selector in enumerate(spec.get("discoverySelectors") or []):
        p = f"spec.discoverySelectors[{i}]"
        check_labels(selector.get("matchLabels"), f"{p}.matchLabels", r)
        for j, expr in enumerate(selector.get("matchExpressions") or []):
            q = f"{p}.matchExpressions[{j}]"
            err = fmt.qualified_name(expr.get("key", ""))
            if err:
                r.invalid(f"{q}.key", expr.get("key", ""), err)
            op, values = expr.get("operator"), expr.get("values") or []
            if op in ("In", "NotIn") and not values:
                r.required(f"{q}.values", "must be specified when `operator` is 'In' or 'NotIn'")
            elif op in ("Exists", "DoesNotExist") and values:
                r.forbidden(f"{q}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
