"""Checks shared by several Istio kinds, on the typed spec: selectors, string matches, destinations, exportTo.

The rules read the objects :func:`meshplane.model.spec.decode` made (absent = ``None``/``()``/``{}``, durations in
nanoseconds, enums as :class:`~meshplane.model.spec.SpecEnum`), so they check meaning only: the decode already
refused values of the wrong shape. Every helper takes the field's full path for its messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshplane.api import _formats as fmt
from meshplane.api._meta import check_labels
from meshplane.api._report import Report
from meshplane.model.spec import (
    Destination,
    Headers,
    PolicyTargetReference,
    StringMatch,
    WorkloadSelector,
    format_duration,
)

# Protocols Istio understands on ports (pkg/config/protocol), upper-cased.
PROTOCOLS = {"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "TCP", "TLS", "UDP", "MONGO", "REDIS", "MYSQL"}
HTTP_PROTOCOLS = {"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"}
TLS_PROTOCOLS = {"HTTPS", "TLS"}


def protocol_error(value: str) -> str | None:
    if value.upper() in PROTOCOLS:
        return None
    return "unsupported protocol; supported protocols are " + ", ".join(sorted(PROTOCOLS))


def duration(ns: int | None, path: str, r: Report, *, minimum_ms: int = 1) -> None:
    """A decoded duration of at least ``minimum_ms``, in whole milliseconds (Istio's CRD rules)."""
    if ns is None:
        return
    err = fmt.duration_ns(ns, minimum_ms=minimum_ms)
    if err:
        r.invalid(path, duration_text(ns, path, r), err)


def duration_text(ns: int, path: str, r: Report) -> str:
    """The duration at ``path`` as the user wrote it, for messages (normalised if admission did not decode it)."""
    return r.durations.get(path) or format_duration(ns)


def percent(value: int | float | None, path: str, r: Report) -> None:
    """An integer percentage 0..100."""
    if value is not None and not 0 <= value <= 100:
        r.invalid(path, value, "must be in the range 0..100")


def port(value: int | None, path: str, r: Report) -> None:
    if value is None:
        return
    err = fmt.port(value)
    if err:
        r.invalid(path, value, err)


def non_negative(path: str, r: Report, **values: int | None) -> None:
    """Each keyword (the field's JSON name) must be absent or >= 0."""
    for key, value in values.items():
        if value is not None and value < 0:
            r.invalid(f"{path}.{key}", value, "must be greater than or equal to 0")


def workload_selector(labels: Mapping[str, str] | None, path: str, r: Report) -> None:
    """Istio's workload selectors (``path`` names the label map): no wildcards, labels well-formed, a warning when
    empty. ``labels`` is None when there is no selector at all."""
    if labels is None:
        return
    for k, v in labels.items():
        if "*" in k or "*" in v:
            r.invalid(path, f"{k}={v}", "wildcard is not supported in selector")
    check_labels(labels, path, r)
    if not labels:
        r.warn(f"{path.rsplit('.', 1)[0]}: workload selector specified without labels: it selects every workload "
               "of the namespace")


def string_match(sm: StringMatch | None, path: str, r: Report, *, allow_empty: bool) -> None:
    """Istio's StringMatch: at most one (or exactly one, unless ``allow_empty``) of exact, prefix, regex."""
    if sm is None:
        return
    kinds = [k for k, v in (("exact", sm.exact), ("prefix", sm.prefix), ("regex", sm.regex)) if v is not None]
    if len(kinds) > 1:
        r.invalid(path, sm, "exactly one of exact, prefix or regex may be set, found " + ", ".join(kinds))
    elif not kinds and not allow_empty:
        r.required(path, "one of exact, prefix or regex is required")
    if sm.regex is not None:
        err = "regex string match should not be empty" if not sm.regex else fmt.re2(sm.regex)
        if err:
            r.invalid(f"{path}.regex", sm.regex, err)


def label_variable(name: str) -> str | None:
    """``v`` for ASM's ``$v`` (a subset named by a traffic label: the value of request header ``v``), else None."""
    if name.startswith("$") and not fmt.header_name(name[1:]):
        return name[1:]
    return None


def subset_name(name: str, path: str, r: Report) -> None:
    if not name:
        r.required(path, "subset name cannot be empty")
        return
    if label_variable(name) is not None:
        return
    err = fmt.dns1123_label(name)
    if err:
        r.invalid(path, name, err)


def destination_host(host: str | None, path: str, r: Report) -> None:
    """A destination's ``host`` (``path`` names the field): required, a (wildcard) domain, not ``*``."""
    if host is None:
        r.required(path)
    elif host == "*":
        r.invalid(path, host, "invalid destination host: '*' is not a service")
    else:
        err = fmt.wildcard_domain(host)
        if err:
            r.invalid(path, host, err)


def destination(dest: Destination | None, path: str, r: Report, *, label_variables: bool = False) -> None:
    """``label_variables``: whether ASM's traffic-label subset (``$name``) may be used here (HTTP route
    destinations only: elsewhere nothing would pick the endpoints by the header)."""
    if dest is None:
        return
    destination_host(dest.host, f"{path}.host", r)
    if dest.subset is not None:
        subset_name(dest.subset, f"{path}.subset", r)
        if not label_variables and label_variable(dest.subset) is not None:
            r.forbidden(f"{path}.subset", f"a traffic-label subset ({dest.subset}) is only supported in "
                        "http[].route[].destination")
    if dest.port is not None:
        port(dest.port.number, f"{path}.port.number", r)


def export_to(values: Sequence[str], path: str, r: Report, *, namespace: str, service_entry: bool) -> None:
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
        r.invalid(path, list(values), "cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in values and len(values) > 1 and service_entry:
        r.invalid(path, list(values), "cannot export service entry to no one (~) and someone")


def _header_op_name(name: str, path: str, r: Report, *, allow_authority: bool) -> None:
    lower = name.lower()
    if not name:
        r.invalid(path, name, "header name cannot be empty")
    elif lower == "host" and not allow_authority:
        r.invalid(path, name, "cannot set Host header")
    elif name.startswith(":") and not (allow_authority and lower == ":authority"):
        r.invalid(path, name, 'header cannot have ":" prefix')


def header_operations(headers: Headers | None, path: str, r: Report) -> None:
    """``headers: {request|response: {set, add, remove}}`` of routes and destinations."""
    if headers is None:
        return
    for side, ops in (("request", headers.request), ("response", headers.response)):
        if ops is None:
            continue
        base = f"{path}.{side}"
        for op, values in (("set", ops.set), ("add", ops.add)):
            for name, value in values.items():
                _header_op_name(name, f"{base}.{op}[{name}]", r, allow_authority=side == "request")
                err = fmt.header_value(value)
                if err:
                    r.invalid(f"{base}.{op}[{name}]", value, err)
        for i, name in enumerate(ops.remove):
            _header_op_name(name, f"{base}.remove[{i}]", r, allow_authority=False)


def gateway_names(names: Sequence[str], path: str, r: Report) -> None:
    for i, name in enumerate(names):
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


def ip_list(values: Sequence[str], path: str, r: Report) -> None:
    for i, value in enumerate(values):
        err = fmt.ip_or_cidr(value)
        if err:
            r.invalid(f"{path}[{i}]", value, err)


def non_empty_strings(values: Sequence[str], path: str, r: Report) -> None:
    for i, value in enumerate(values):
        if value == "":
            r.invalid(f"{path}[{i}]", value, "empty value not allowed")


def present(values: object, path: str, r: Report) -> bool:
    """Whether the list or map at ``path`` was in the object: not empty, or given empty (``rules: []``)."""
    return bool(values) or path in r.empty


def given(message: object | None) -> bool:
    """Whether a message field is set and not empty: what the truthiness of its JSON object said (``{}`` is not
    given; a decoded message equals a default-constructed one exactly when every field is absent)."""
    return message is not None and message != type(message)()


_ALLOWED_TARGETS = {("", "Service"), ("core", "Service"), ("networking.istio.io", "ServiceEntry"),
                    ("gateway.networking.k8s.io", "Gateway")}


def target_ref(ref: PolicyTargetReference | None, path: str, r: Report) -> None:
    if ref is None:
        return
    if not ref.name:
        r.required(f"{path}.name")
    if ref.namespace:
        r.forbidden(f"{path}.namespace", "cross namespace referencing is not supported")
    group, kind = ref.group or "", ref.kind or ""
    if (group, kind) not in _ALLOWED_TARGETS:
        r.not_supported(f"{path}.kind", f"{group}/{kind}" if group else kind,
                        ["Service", "networking.istio.io/ServiceEntry", "gateway.networking.k8s.io/Gateway"])
    elif kind != "Gateway":
        # Istio accepts these and applies them to the target's waypoint proxy (ambient mode) only.
        r.warn(f"{path}: a {kind} target applies to waypoint proxies (Istio's ambient mode), which this mesh does "
               "not run: no sidecar or gateway is selected; use a selector for sidecars")


def selector_or_targets(selector: WorkloadSelector | None, ref: PolicyTargetReference | None,
                        refs: Sequence[PolicyTargetReference], r: Report, *, selector_key: str = "selector") -> None:
    """At most one of the workload selector, targetRef and targetRefs; each well-formed."""
    has_selector = given(selector) or f"spec.{selector_key}.matchLabels" in r.empty  # matchLabels: {} counts
    present = [k for k, v in ((selector_key, has_selector), ("targetRef", given(ref)), ("targetRefs", bool(refs)))
               if v]
    for extra in present[1:]:
        r.forbidden(f"spec.{extra}", f"only one of {selector_key}, targetRef or targetRefs may be set")
    workload_selector(None if selector is None else selector.match_labels, f"spec.{selector_key}.matchLabels", r)
    target_ref(ref, "spec.targetRef", r)
    for i, one in enumerate(refs):
        target_ref(one, f"spec.targetRefs[{i}]", r)
