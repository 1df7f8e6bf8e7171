"""Checks shared by several Istio kinds: selectors, target references, string matches, destinations, exportTo.

Semantic rules only run on objects that passed structural validation, so field types here are the schema's;
the helpers still tolerate absent fields (``None``) everywhere.
"""

from __future__ import annotations

from typing import Any

from meshplane.api import _formats as fmt
from meshplane.api._meta import check_labels
from meshplane.api._report import Report

J = dict[str, Any]

# Protocols Istio understands on ports (pkg/config/protocol), upper-cased.
PROTOCOLS = {"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "TCP", "TLS", "UDP", "MONGO", "REDIS", "MYSQL"}
HTTP_PROTOCOLS = {"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"}
TLS_PROTOCOLS = {"HTTPS", "TLS"}


def protocol_error(value: str) -> str | None:
    if value.upper() in PROTOCOLS:
        return None
    return "unsupported protocol; supported protocols are " + ", ".join(sorted(PROTOCOLS))


def duration_at(obj: J | None, key: str, path: str, r: Report, *, minimum_ms: int = 1) -> None:
    if not obj:
        return
    value = obj.get(key)
    if isinstance(value, str):
        err = fmt.duration(value, minimum_ms=minimum_ms)
        if err:
            r.invalid(f"{path}.{key}", value, err)


def percent_at(obj: J | None, key: str, path: str, r: Report) -> None:
    """An integer percentage 0..100."""
    if not obj:
        return
    value = obj.get(key)
    if isinstance(value, int | float) and not 0 <= value <= 100:
        r.invalid(f"{path}.{key}", value, "must be in the range 0..100")


def port_at(obj: J | None, key: str, path: str, r: Report) -> None:
    if not obj:
        return
    value = obj.get(key)
    if isinstance(value, int | float):
        err = fmt.port(int(value))
        if err:
            r.invalid(f"{path}.{key}", value, err)


def non_negative(obj: J | None, keys: tuple[str, ...], path: str, r: Report) -> None:
    if not obj:
        return
    for key in keys:
        value = obj.get(key)
        if isinstance(value, int | float) and value < 0:
            r.invalid(f"{path}.{key}", value, "must be greater than or equal to 0")


def workload_selector(selector: J | None, path: str, r: Report, *, key: str = "matchLabels") -> None:
    """Istio's workload selectors: no wildcards, labels well-formed, a warning when empty."""
    if selector is None:
        return
    labels = selector.get(key) or {}
    for k, v in labels.items():
        if "*" in k or (isinstance(v, str) and "*" in v):
            r.invalid(f"{path}.{key}", f"{k}={v}", "wildcard is not supported in selector")
    check_labels(labels, f"{path}.{key}", r)
    if not labels:
        r.warn(f"{path}: workload selector specified without labels: it selects every workload of the namespace")


_ALLOWED_TARGETS = {("", "Service"), ("core", "Service"), ("networking.istio.io", "ServiceEntry"),
                    ("gateway.networking.k8s.io", "Gateway")}


def target_ref(ref: J | None, path: str, r: Report) -> None:
    if ref is None:
        return
    if not ref.get("name"):
        r.required(f"{path}.name")
    if ref.get("namespace"):
        r.forbidden(f"{path}.namespace", "cross namespace referencing is not supported")
    group, kind = ref.get("group") or "", ref.get("kind") or ""
    if (group, kind) not in _ALLOWED_TARGETS:
        r.not_supported(f"{path}.kind", f"{group}/{kind}" if group else kind,
                        ["Service", "networking.istio.io/ServiceEntry", "gateway.networking.k8s.io/Gateway"])


def selector_or_targets(spec: J, r: Report, *, selector_key: str = "selector") -> None:
    """At most one of the workload selector, targetRef and targetRefs; each well-formed."""
    present = [k for k in (selector_key, "targetRef", "targetRefs") if spec.get(k)]
    for extra in present[1:]:
        r.forbidden(f"spec.{extra}", f"only one of {selector_key}, targetRef or targetRefs may be set")
    workload_selector(spec.get(selector_key), f"spec.{selector_key}", r)
    target_ref(spec.get("targetRef"), "spec.targetRef", r)
    for i, ref in enumerate(spec.get("targetRefs") or []):
        target_ref(ref, f"spec.targetRefs[{i}]", r)


def string_match(sm: J | None, path: str, r: Report, *, allow_empty: bool) -> None:
    """Istio's StringMatch: at most one (or exactly one, unless ``allow_empty``) of exact, prefix, regex."""
    if sm is None:
        return
    kinds = [k for k in ("exact", "prefix", "regex") if k in sm]
    if len(kinds) > 1:
        r.invalid(path, sm, "exactly one of exact, prefix or regex may be set, found " + ", ".join(kinds))
    elif not kinds and not allow_empty:
        r.required(path, "one of exact, prefix or regex is required")
    regex = sm.get("regex")
    if isinstance(regex, str):
        err = "regex string match should not be empty" if not regex else fmt.re2(regex)
        if err:
            r.invalid(f"{path}.regex", regex, err)


def subset_name(name: str, path: str, r: Report) -> None:
    if not name:
        r.required(path, "subset name cannot be empty")
        return
    err = fmt.dns1123_label(name)
    if err:
        r.invalid(path, name, err)


def destination(dest: J | None, path: str, r: Report) -> None:
    if dest is None:
        return
    host = dest.get("host")
    if host is None:
        r.required(f"{path}.host")
    elif host == "*":
        r.invalid(f"{path}.host", host, "invalid destination host: '*' is not a service")
    else:
        err = fmt.wildcard_domain(host)
        if err:
            r.invalid(f"{path}.host", host, err)
    subset = dest.get("subset")
    if subset is not None:
        subset_name(subset, f"{path}.subset", r)
    port = dest.get("port")
    if port is not None:
        port_at(port, "number", f"{path}.port", r)


def export_to(values: list[str] | None, path: str, r: Report, *, namespace: str, service_entry: bool) -> None:
    if not values:
        return
    seen: set[str] = set()
    for i, value in enumerate(values):
        key = namespace if value == "." and namespace else value
        if key in seen:
            r.duplicate(f"{path}[{i}]", value)
            continue
        seen.add(key)
        if value in (".", "*") or (value == "~" and service_entry):
            continue
        err = fmt.dns1123_label(value)
        if err:
            r.invalid(f"{path}[{i}]", value, "must be '.', '*'" + (", '~'" if service_entry else "")
                      + " or a namespace name")
    if "*" in values and len(values) > 1:
        r.invalid(path, values, "cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in values and len(values) > 1 and service_entry:
        r.invalid(path, values, "cannot export service entry to no one (~) and someone")


def _header_op_name(name: str, path: str, r: Report, *, allow_authority: bool) -> None:
    lower = name.lower()
    if not name:
        r.invalid(path, name, "header name cannot be empty")
    elif lower == "host" and not allow_authority:
        r.invalid(path, name, "cannot set Host header")
    elif name.startswith(":") and not (allow_authority and lower == ":authority"):
        r.invalid(path, name, 'header cannot have ":" prefix')


def header_operations(headers: J | None, path: str, r: Report) -> None:
    """``headers: {request|response: {set, add, remove}}`` of routes and destinations."""
    if not headers:
        return
    for side in ("request", "response"):
        ops = headers.get(side)
        if not ops:
            continue
        base = f"{path}.{side}"
        for op in ("set", "add"):
            for name, value in (ops.get(op) or {}).items():
                _header_op_name(name, f"{base}.{op}[{name}]", r, allow_authority=side == "request")
                err = fmt.header_value(value)
                if err:
                    r.invalid(f"{base}.{op}[{name}]", value, err)
        for i, name in enumerate(ops.get("remove") or []):
            _header_op_name(name, f"{base}.remove[{i}]", r, allow_authority=False)


def gateway_names(names: list[str] | None, path: str, r: Report) -> None:
    for i, name in enumerate(names or []):
        p = f"{path}[{i}]"
        if name == "mesh":
            continue
        ns, slash, gw = name.partition("/")
        if slash:
            if not ns or not gw:
                r.invalid(p, name, "config namespace and gateway name cannot be empty")
                continue
            if fmt.dns1123_label(ns):
                r.invalid(p, name, f"invalid value for namespace: {ns!r}")
            if fmt.dns1123_label(gw):
                r.invalid(p, name, f"invalid value for gateway name: {gw!r}")
            continue
        if "." in name:
            short, _, rest = name.partition(".")
            r.warn(f'{p}: using legacy gatewayName format "{name}"; prefer the <namespace>/<name> format: '
                   f'"{rest.split(".")[0]}/{short}"')
        err = fmt.fqdn(name)
        if err:
            r.invalid(p, name, err)


def ip_list(values: list[str] | None, path: str, r: Report) -> None:
    for i, value in enumerate(values or []):
        err = fmt.ip_or_cidr(value)
        if err:
            r.invalid(f"{path}[{i}]", value, err)


def non_empty_strings(values: list[str] | None, path: str, r: Report) -> None:
    for i, value in enumerate(values or []):
        if value == "":
            r.invalid(f"{path}[{i}]", value, "empty value not allowed")
