"""Semantic validation of networking.istio.io kinds on the typed spec, after the rules of Istio's own webhook.

These are the checks a schema cannot express: exclusive fields, weights that must add up, host names and
wildcards, RE2 regexes, duration bounds, TLS settings that need each other. Each rule takes the object's metadata
and its decoded spec (:mod:`meshplane.model.spec`: the objects translation reads, so admission judges exactly what
will be translated) and names bad fields with their JSON paths and indices (``spec.http[0].route[1].weight``).
Messages follow Istio's where a user would search for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshplane.api import _common as c
from meshplane.api import _formats as fmt
from meshplane.api._meta import check_labels
from meshplane.api._report import Report
from meshplane.model import envoyproto
from meshplane.model.spec import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    CorsPolicy,
    DestinationRule,
    EnvoyFilter,
    Gateway,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
    HTTPRoute,
    HTTPRouteDestination,
    L4MatchAttributes,
    LoadBalancerSettings,
    LocalityLoadBalancerSetting,
    ObjectMeta,
    OutlierDetection,
    Percent,
    Port,
    PortTrafficPolicy,
    RouteDestination,
    ServerTLSSettings,
    ServiceEntry,
    Sidecar,
    SidecarPort,
    TLSMatchAttributes,
    TrafficPolicy,
    VirtualService,
    WorkloadEntry,
    WorkloadGroup,
)

_RETRY_ON = {
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx", "refused-stream",
    "retriable-status-codes", "retriable-headers", "envoy-ratelimited", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
}
_HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"}
_GRPC_STATUS = [
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
]
_KB = 1024


def _set(fields: Mapping[str, object]) -> list[str]:
    """The JSON names of the fields that are set (not None), in order."""
    return [k for k, v in fields.items() if v is not None]


def _truthy(fields: Mapping[str, object]) -> list[str]:
    """The JSON names of the fields that are set and not empty/zero/false, in order."""
    return [k for k, v in fields.items() if v]


# --- VirtualService ------------------------------------------------------------------------------------------


def _hosts_match(a: str, b: str) -> bool:
    """Whether two VirtualService hosts overlap (equal, or one wildcard covers the other)."""
    if a == b or a == "*" or b == "*":
        return True
    if a.startswith("*"):
        return b.endswith(a[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return False


def _percentage(pct: Percent | None, path: str, r: Report) -> None:
    """Istio's fractional Percent: 0, or within [0.0001, 100]."""
    if pct is None:
        return
    value = pct.value
    if value is not None and (value < 0 or value > 100 or 0 < value < 0.0001):
        r.invalid(f"{path}.value", value, "percentage must be 0 or in the range [0.0001, 100]")


def _route_weights(routes: Sequence[HTTPRouteDestination | RouteDestination], path: str, r: Report) -> None:
    weights = [rt.weight for rt in routes]
    for i, w in enumerate(weights):
        if w is not None and w < 0:
            r.invalid(f"{path}[{i}].weight", w, "weight must be greater than or equal to 0")
    if len(routes) == 1:
        w = weights[0]
        if w not in (None, 0, 100):
            r.invalid(f"{path}[0].weight", w, "the weight of a single destination must be omitted, 0 or 100")
    elif len(routes) > 1:
        total = sum(w for w in weights if w is not None)
        if total != 100:
            r.invalid(path, total, f"total destination weight {total:g} != 100: route weights must add up to 100")


def _http_match(match: HTTPMatchRequest, path: str, r: Report, *, delegate: bool, bound_to_gateway: bool) -> None:
    for key, sm in (("uri", match.uri), ("scheme", match.scheme), ("method", match.method),
                    ("authority", match.authority)):
        c.string_match(sm, f"{path}.{key}", r, allow_empty=False)
        if delegate and sm is not None and sm.regex is not None:
            r.forbidden(f"{path}.{key}.regex", "regex matches are not supported in delegate VirtualServices")
    for key, headers in (("headers", match.headers), ("withoutHeaders", match.without_headers)):
        for name, sm in headers.items():
            p = f"{path}.{key}[{name}]"
            if name.startswith("@request.auth.claims"):
                if not bound_to_gateway:
                    r.invalid(p, name, "JWT claim based routing is only supported for gateways")
            else:
                err = fmt.header_name(name)
                if err:
                    r.invalid(p, name, err)
            c.string_match(sm, p, r, allow_empty=True)
    for name, sm in match.query_params.items():
        c.string_match(sm, f"{path}.queryParams[{name}]", r, allow_empty=True)
    if match.port:
        c.port(match.port, f"{path}.port", r)
    check_labels(match.source_labels, f"{path}.sourceLabels", r)
    c.gateway_names(match.gateways, f"{path}.gateways", r)
    ns = match.source_namespace
    if ns:
        err = fmt.dns1123_label(ns)
        if err:
            r.invalid(f"{path}.sourceNamespace", ns, err)


def _fault(fault: HTTPFaultInjection, path: str, r: Report) -> None:
    abort, delay = fault.abort, fault.delay
    if abort is None and delay is None:
        r.required(path, "HTTP fault injection must have an abort and/or a delay")
    for name, part in (("abort", abort), ("delay", delay)):
        if part is None:
            continue
        p = f"{path}.{name}"
        _percentage(part.percentage, f"{p}.percentage", r)
        if part.percent is not None:
            r.deprecated(f"{p}.percent", "percent", "percentage")
            c.percent(part.percent, f"{p}.percent", r)
    if abort is not None:
        p = f"{path}.abort"
        kinds = _set({"httpStatus": abort.http_status, "grpcStatus": abort.grpc_status,
                      "http2Error": abort.http2_error})
        if len(kinds) > 1:
            r.invalid(p, abort, "only one of httpStatus, grpcStatus or http2Error may be set")
        status = abort.http_status
        if status is not None and not 200 <= status <= 599:
            r.invalid(f"{p}.httpStatus", status, f"HTTP status {status:g} is not in range 200-599")
        grpc = abort.grpc_status
        if grpc is not None and grpc not in _GRPC_STATUS and not (grpc.isdigit() and int(grpc) <= 16):
            r.not_supported(f"{p}.grpcStatus", grpc, _GRPC_STATUS)
        if abort.http2_error is not None:
            r.invalid(f"{p}.http2Error", abort.http2_error, "HTTP/2 abort fault injection is not supported")
        if not kinds:
            r.required(f"{p}.httpStatus", "an abort needs httpStatus or grpcStatus")
    if delay is not None:
        p = f"{path}.delay"
        exponential = delay.exponential_delay is not None or f"{p}.exponentialDelay" in r.undecoded
        if delay.fixed_delay is not None and delay.exponential_delay is not None:
            r.invalid(p, delay, "only one of fixedDelay or exponentialDelay may be set")
        c.duration(delay.fixed_delay, f"{p}.fixedDelay", r)
        if delay.exponential_delay is not None:
            r.invalid(f"{p}.exponentialDelay", c.duration_text(delay.exponential_delay, f"{p}.exponentialDelay", r),
                      "exponentialDelay is not supported")
        elif not exponential and delay.fixed_delay is None:
            r.required(f"{p}.fixedDelay")


def _retries(retries: HTTPRetry, path: str, r: Report) -> None:
    attempts = retries.attempts
    if attempts is not None and attempts < 0:
        r.invalid(f"{path}.attempts", attempts, "attempts cannot be negative")
    # Istio's attempts is a plain int32: absent is 0, retries disabled; a policy for no retries is refused (it
    # used to be accepted and then dropped by translation).
    if not attempts and _set({"perTryTimeout": retries.per_try_timeout, "retryOn": retries.retry_on,
                              "retryRemoteLocalities": retries.retry_remote_localities}):
        r.invalid(f"{path}.attempts", 0, "http retry policy configured when attempts are set to 0 (disabled)")
    c.duration(retries.per_try_timeout, f"{path}.perTryTimeout", r)
    retry_on = retries.retry_on
    if retry_on:
        for policy in retry_on.split(","):
            policy = policy.strip()
            if policy in _RETRY_ON or (policy.isdigit() and 100 <= int(policy) <= 599):
                continue
            r.invalid(f"{path}.retryOn", retry_on, f"{policy!r} is not a valid retryOn policy")


def _cors(cors: CorsPolicy, path: str, r: Report) -> None:
    for i, origin in enumerate(cors.allow_origins):
        p = f"{path}.allowOrigins[{i}]"
        c.string_match(origin, p, r, allow_empty=False)
        for k, v in (("exact", origin.exact), ("prefix", origin.prefix)):
            if v == "":
                r.invalid(f"{p}.{k}", "", "allow origin may not be empty")
    if cors.allow_origin:
        r.deprecated(f"{path}.allowOrigin", "allowOrigin", "allowOrigins")
    for i, method in enumerate(cors.allow_methods):
        if method not in _HTTP_METHODS:
            r.not_supported(f"{path}.allowMethods[{i}]", method, sorted(_HTTP_METHODS))
    for key, names in (("allowHeaders", cors.allow_headers), ("exposeHeaders", cors.expose_headers)):
        for i, name in enumerate(names):
            err = None if name == "*" else fmt.header_name(name)
            if err:
                r.invalid(f"{path}.{key}[{i}]", name, err)
    max_age = cors.max_age
    if max_age is not None:
        err = fmt.duration_ns(max_age)
        if err is None and max_age % 1_000_000_000:
            err = "max_age duration is accurate only to seconds precision"
        if err:
            r.invalid(f"{path}.maxAge", c.duration_text(max_age, f"{path}.maxAge", r), err)


def _redirect(redirect: HTTPRedirect, path: str, r: Report) -> None:
    if not _set({"uri": redirect.uri, "authority": redirect.authority, "port": redirect.port,
                 "derivePort": redirect.derive_port, "scheme": redirect.scheme}):
        r.required(path, "redirect must specify uri, authority, scheme, port or derivePort")
    if redirect.port is not None and redirect.derive_port is not None:
        r.invalid(path, redirect, "only one of port or derivePort may be set")
    code = redirect.redirect_code
    if code and not 300 <= code <= 399:
        r.invalid(f"{path}.redirectCode", code, f"{code:g} is not a valid redirect code, must be 3xx")
    scheme = redirect.scheme
    if scheme is not None and scheme not in ("http", "https"):
        r.not_supported(f"{path}.scheme", scheme, ["http", "https"])
    if redirect.port:
        c.port(redirect.port, f"{path}.port", r)


def _direct_response(resp: HTTPDirectResponse, path: str, r: Report) -> None:
    status = resp.status
    if status is not None and not 200 <= status <= 599:
        r.invalid(f"{path}.status", status, f"HTTP status {status:g} is not in range 200-599")
    body = resp.body
    if body is not None and c.given(body):
        if body.string is not None and body.bytes is not None:
            r.invalid(f"{path}.body", body, "only one of string or bytes may be set")
        size = len(body.string or "") + len(body.bytes or "") * 3 // 4
        if size > _KB * _KB:
            r.invalid(f"{path}.body", size, "direct responses must be less than 1MB")
        elif size > 100 * _KB:
            r.warn(f"{path}.body: large direct responses may impact control plane performance")


def _rewrite(rewrite: HTTPRewrite, path: str, r: Report) -> None:
    has_uri, has_regex = rewrite.uri is not None, rewrite.uri_regex_rewrite is not None
    if has_uri and has_regex:
        r.invalid(path, rewrite, "rewrite may only contain one of uri or uriRegexRewrite")
    if not (has_uri or has_regex or rewrite.authority is not None):
        r.required(path, "rewrite must specify at least one of uri, uriRegexRewrite or authority")
    regex = rewrite.uri_regex_rewrite
    if regex is not None:
        p = f"{path}.uriRegexRewrite"
        if not regex.match:
            r.required(f"{p}.match")
        else:
            err = fmt.re2(regex.match)
            if err:
                r.invalid(f"{p}.match", regex.match, err)
        if regex.rewrite is None:
            r.required(f"{p}.rewrite")


def _http_route(http: HTTPRoute, path: str, r: Report, *, delegate_vs: bool, bound_to_gateway: bool,
                aliases: set[str]) -> None:
    actions = [k for k, v in (("route", bool(http.route)), ("redirect", c.given(http.redirect)),
                              ("directResponse", c.given(http.direct_response)),
                              ("delegate", c.given(http.delegate))) if v]
    if not actions:
        r.required(f"{path}.route", "one of route, redirect, directResponse or delegate is required")
    for extra in actions[1:]:
        r.forbidden(f"{path}.{extra}", f"may not be set together with {actions[0]}")
    if http.delegate is not None and c.given(http.delegate):
        if delegate_vs:
            r.forbidden(f"{path}.delegate", "a delegate VirtualService cannot delegate again")
        if not http.delegate.name:
            r.required(f"{path}.delegate.name")
    headers: set[str] = set()
    for j, hk in enumerate(http.header_to_dynamic_subset_key):
        q = f"{path}.headerToDynamicSubsetKey[{j}]"
        err = fmt.header_name(hk.header or "")
        if err:
            r.invalid(f"{q}.header", hk.header or "", err)
        elif (hk.header or "").lower() in headers:
            r.duplicate(f"{q}.header", hk.header)
        headers.add((hk.header or "").lower())
        err = fmt.qualified_name(hk.key or "")
        if err:
            r.invalid(f"{q}.key", hk.key or "", err)
    if http.header_to_dynamic_subset_key and not http.route:
        r.forbidden(f"{path}.headerToDynamicSubsetKey", "only on a route with destinations")
    if c.given(http.redirect):
        if http.rewrite is not None:
            r.forbidden(f"{path}.rewrite", "may not be set together with redirect")
        if http.fault is not None:
            r.forbidden(f"{path}.fault", "may not be set together with redirect")
    for j, match in enumerate(http.match):
        _http_match(match, f"{path}.match[{j}]", r, delegate=delegate_vs, bound_to_gateway=bound_to_gateway)
    for k, route in enumerate(http.route):
        p = f"{path}.route[{k}]"
        c.destination(route.destination, f"{p}.destination", r, label_variables=True)
        if route.fallback is not None:
            sub = route.destination.subset if route.destination is not None else None
            target = route.fallback.target.subset if route.fallback.target is not None else None
            if sub is not None and c.label_variable(sub) is not None:
                r.forbidden(f"{p}.fallback", f"not with a traffic-label subset ({sub}): requests whose label no "
                            "endpoint has meet the subset load balancer's fallback policy (ANY_ENDPOINT, or the "
                            "DestinationRule's dynamicSubset.fallbackPolicy)")
            elif target is not None and c.label_variable(target) is not None:
                r.forbidden(f"{p}.fallback.target.subset", f"a traffic-label subset ({target}) cannot be a fallback "
                            "target")
        c.header_operations(route.headers, f"{p}.headers", r)
    _route_weights(http.route, f"{path}.route", r)
    c.header_operations(http.headers, f"{path}.headers", r)
    c.duration(http.timeout, f"{path}.timeout", r)
    if http.retries is not None and c.given(http.retries):
        _retries(http.retries, f"{path}.retries", r)
    if http.fault is not None:
        _fault(http.fault, f"{path}.fault", r)
    if http.cors_policy is not None and c.given(http.cors_policy):
        _cors(http.cors_policy, f"{path}.corsPolicy", r)
    if http.redirect is not None and c.given(http.redirect):
        _redirect(http.redirect, f"{path}.redirect", r)
    if http.direct_response is not None and c.given(http.direct_response):
        _direct_response(http.direct_response, f"{path}.directResponse", r)
    if http.rewrite is not None:
        _rewrite(http.rewrite, f"{path}.rewrite", r)
    c.destination(http.mirror, f"{path}.mirror", r)
    if c.given(http.mirror) and http.mirrors:
        r.forbidden(f"{path}.mirrors", "may not be set together with mirror")
    _percentage(http.mirror_percentage, f"{path}.mirrorPercentage", r)
    if http.mirror_percent is not None:
        key = "mirror_percent" if f"{path}.mirror_percent" in aliases else "mirrorPercent"
        r.deprecated(f"{path}.{key}", key, "mirrorPercentage")
        c.percent(http.mirror_percent, f"{path}.{key}", r)
    for k, mirror in enumerate(http.mirrors):
        p = f"{path}.mirrors[{k}]"
        c.destination(mirror.destination, f"{p}.destination", r)
        _percentage(mirror.percentage, f"{p}.percentage", r)


def _l4_match(match: L4MatchAttributes | TLSMatchAttributes, path: str, r: Report) -> None:
    c.ip_list(match.destination_subnets, f"{path}.destinationSubnets", r)
    if match.port:
        c.port(match.port, f"{path}.port", r)
    check_labels(match.source_labels, f"{path}.sourceLabels", r)
    c.gateway_names(match.gateways, f"{path}.gateways", r)


def _l4_routes(routes: Sequence[RouteDestination], path: str, r: Report) -> None:
    if not routes:
        r.required(path, "a route is required")
        return
    for k, route in enumerate(routes):
        c.destination(route.destination, f"{path}[{k}].destination", r)
    _route_weights(routes, path, r)


def virtual_service(meta: ObjectMeta, spec: VirtualService, r: Report) -> None:
    hosts, gateways = spec.hosts, spec.gateways
    delegate_vs = not hosts
    if delegate_vs:
        if gateways:
            r.forbidden("spec.gateways", "a delegate VirtualService (one without hosts) must not name gateways")
        if spec.tls:
            r.forbidden("spec.tls", "a delegate VirtualService (one without hosts) cannot have tls routes")
        if spec.tcp:
            r.forbidden("spec.tcp", "a delegate VirtualService (one without hosts) cannot have tcp routes")
    bound_to_gateway = bool(gateways) and "mesh" not in gateways
    applies_to_mesh = not gateways or "mesh" in gateways
    c.gateway_names(gateways, "spec.gateways", r)
    all_valid = True
    for i, host in enumerate(hosts):
        err = fmt.wildcard_domain(host)
        if err and not fmt.is_ip(host):
            r.invalid(f"spec.hosts[{i}]", host, err)
            all_valid = False
        elif host == "*" and applies_to_mesh:
            r.invalid(f"spec.hosts[{i}]", host,
                      "wildcard host * is not allowed for virtual services bound to the mesh gateway")
            all_valid = False
    if all_valid:
        for i in range(len(hosts)):
            for j in range(i + 1, len(hosts)):
                if _hosts_match(hosts[i], hosts[j]):
                    r.duplicate(f"spec.hosts[{j}]", hosts[j])
    if not (spec.http or spec.tcp or spec.tls):
        r.required("spec.http", "http, tcp or tls must be provided in virtual service")
    for i, http in enumerate(spec.http):
        _http_route(http, f"spec.http[{i}]", r, delegate_vs=delegate_vs, bound_to_gateway=bound_to_gateway,
                    aliases=r.aliases)
    for i, tcp in enumerate(spec.tcp):
        for j, l4 in enumerate(tcp.match):
            _l4_match(l4, f"spec.tcp[{i}].match[{j}]", r)
        _l4_routes(tcp.route, f"spec.tcp[{i}].route", r)
    for i, tls in enumerate(spec.tls):
        if not tls.match:
            r.required(f"spec.tls[{i}].match", "TLS route must have at least one match condition")
        for j, tm in enumerate(tls.match):
            p = f"spec.tls[{i}].match[{j}]"
            if not tm.sni_hosts:
                r.required(f"{p}.sniHosts", "TLS match must have at least one SNI host")
            for k, sni in enumerate(tm.sni_hosts):
                err = fmt.wildcard_domain(sni)
                if err:
                    r.invalid(f"{p}.sniHosts[{k}]", sni, err)
                elif not any(_sni_in_host(sni, h) for h in hosts):
                    r.invalid(f"{p}.sniHosts[{k}]", sni,
                              "SNI host is not a compatible subset of any of the virtual service hosts")
            _l4_match(tm, p, r)
        _l4_routes(tls.route, f"spec.tls[{i}].route", r)
    c.export_to(spec.export_to, "spec.exportTo", r, namespace=meta.namespace, service_entry=False)


def _sni_in_host(sni: str, host: str) -> bool:
    if host == "*" or sni == host:
        return True
    if host.startswith("*"):
        return sni.endswith(host[1:])
    return False


# --- DestinationRule -----------------------------------------------------------------------------------------


def _is_prime(x: int) -> bool:
    if x < 2:
        return False
    if x < 4:
        return True
    if x % 2 == 0:
        return False
    f = 3
    while f * f <= x:
        if x % f == 0:
            return False
        f += 2
    return True


def _locality(value: str, path: str, r: Report) -> None:
    if value.count("*") > 1 or ("*" in value and not value.endswith("*")):
        r.invalid(path, value, "locality wildcard '*' may appear once, at the end")
    if any(part == "" for part in value.split("/")[:3]):
        r.invalid(path, value, "locality must not contain empty region/zone/subzone")


def _locality_lb(lb: LocalityLoadBalancerSetting, path: str, r: Report, *, has_outlier: bool) -> None:
    modes = _truthy({"distribute": lb.distribute, "failover": lb.failover, "failoverPriority": lb.failover_priority})
    if len(modes) > 1:
        r.invalid(path, modes, "only one of distribute, failover or failoverPriority may be set")
    for i, dist in enumerate(lb.distribute):
        p = f"{path}.distribute[{i}]"
        if dist.from_:
            _locality(dist.from_, f"{p}.from", r)
        total = 0
        for loc, weight in dist.to.items():
            _locality(loc, f"{p}.to[{loc}]", r)
            if not 1 <= weight <= 100:
                r.invalid(f"{p}.to[{loc}]", weight, "locality weight must be in range [1, 100]")
            total += weight
        if total != 100:
            r.invalid(f"{p}.to", total, f"total locality weight {total} != 100")
    for i, fo in enumerate(lb.failover):
        p = f"{path}.failover[{i}]"
        src, dst = fo.from_ or "", fo.to or ""
        if src == dst:
            r.invalid(p, fo, "locality lb failover settings must specify different regions")
        for key, value in (("from", src), ("to", dst)):
            if "/" in value:
                r.invalid(f"{p}.{key}", value, "locality lb failover only specifies a region")
            if "*" in value:
                r.invalid(f"{p}.{key}", value, "locality lb failover region should not contain '*' wildcard")
    for i, label in enumerate(lb.failover_priority):
        key = label.split("=", 1)[0]
        err = fmt.qualified_name(key)
        if err:
            r.invalid(f"{path}.failoverPriority[{i}]", label, err)
    if (lb.failover or lb.failover_priority) and not has_outlier:
        r.warn(f"{path}: locality failover has no effect without outlierDetection: set outlierDetection in the "
               "same traffic policy so unhealthy endpoints are ejected and traffic fails over")


_SUBSET_FALLBACKS = ("ANY_ENDPOINT", "NO_FALLBACK", "DEFAULT_SUBSET")
_SELECTOR_FALLBACKS = ("INHERIT", "NO_FALLBACK", "ANY_ENDPOINT", "DEFAULT_SUBSET")


def _dynamic_subset(lb: LoadBalancerSettings, path: str, r: Report) -> None:
    ds = lb.dynamic_subset
    if ds is None:
        return
    p = f"{path}.dynamicSubset"
    if path != "spec.trafficPolicy.loadBalancer":
        r.forbidden(p, "only in the DestinationRule's top-level trafficPolicy.loadBalancer")
        return
    if not ds.subset_selectors:
        r.required(f"{p}.subsetSelectors", "the endpoint label keys that form subsets, e.g. [{keys: [version]}]")
    for i, sel in enumerate(ds.subset_selectors):
        q = f"{p}.subsetSelectors[{i}]"
        if not sel.keys:
            r.required(f"{q}.keys")
        for j, key in enumerate(sel.keys):
            err = fmt.qualified_name(key)
            if err:
                r.invalid(f"{q}.keys[{j}]", key, err)
        if sel.fallback_policy is not None and sel.fallback_policy not in _SELECTOR_FALLBACKS:
            r.not_supported(f"{q}.fallbackPolicy", sel.fallback_policy, _SELECTOR_FALLBACKS)
        if sel.fallback_policy == "DEFAULT_SUBSET" and not ds.default_subset:
            r.required(f"{p}.defaultSubset", "fallbackPolicy DEFAULT_SUBSET needs the default subset's labels")
    if ds.fallback_policy is not None and ds.fallback_policy not in _SUBSET_FALLBACKS:
        r.not_supported(f"{p}.fallbackPolicy", ds.fallback_policy, _SUBSET_FALLBACKS)
    if ds.fallback_policy == "DEFAULT_SUBSET" and not ds.default_subset:
        r.required(f"{p}.defaultSubset", "fallbackPolicy DEFAULT_SUBSET needs the default subset's labels")
    check_labels(ds.default_subset, f"{p}.defaultSubset", r)


def _load_balancer(lb: LoadBalancerSettings, path: str, r: Report, *, has_outlier: bool) -> None:
    _dynamic_subset(lb, path, r)
    if lb.simple is not None and lb.consistent_hash is not None:
        r.invalid(path, lb, "only one of simple or consistentHash may be set")
    ch = lb.consistent_hash
    if ch is not None:
        p = f"{path}.consistentHash"
        keys = _set({"httpHeaderName": ch.http_header_name, "httpCookie": ch.http_cookie,
                     "useSourceIp": ch.use_source_ip, "httpQueryParameterName": ch.http_query_parameter_name})
        if len(keys) > 1:
            r.invalid(p, keys, "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName "
                      "may be set")
        elif not keys:
            r.required(p, "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required")
        cookie = ch.http_cookie
        if cookie is not None:
            if not cookie.name:
                r.required(f"{p}.httpCookie.name")
            c.duration(cookie.ttl, f"{p}.httpCookie.ttl", r, minimum_ms=0)
        if ch.minimum_ring_size:
            r.warn(f"{p}.minimumRingSize: consistent hash minimumRingSize is deprecated, use ringHash instead")
            if ch.maglev is not None or ch.ring_hash is not None:
                r.invalid(f"{p}.minimumRingSize", ch.minimum_ring_size,
                          "only one of minimumRingSize, maglev or ringHash may be set")
        if ch.maglev is not None and ch.ring_hash is not None:
            r.invalid(p, ch, "only one of maglev or ringHash may be set")
        maglev = ch.maglev
        if maglev is not None:
            size = maglev.table_size or 0
            if size == 0:
                r.required(f"{p}.maglev.tableSize", "tableSize must be set for maglev")
            elif size >= 5000011 or not _is_prime(size):
                r.invalid(f"{p}.maglev.tableSize", size, "tableSize must be a prime number less than 5000011")
    if lb.locality_lb_setting is not None and c.given(lb.locality_lb_setting):
        _locality_lb(lb.locality_lb_setting, f"{path}.localityLbSetting", r, has_outlier=has_outlier)
    c.duration(lb.warmup_duration_secs, f"{path}.warmupDurationSecs", r)
    if lb.warmup is not None and c.given(lb.warmup):
        c.duration(lb.warmup.duration, f"{path}.warmup.duration", r)


def _outlier(od: OutlierDetection, path: str, r: Report) -> None:
    c.duration(od.base_ejection_time, f"{path}.baseEjectionTime", r)
    c.duration(od.interval, f"{path}.interval", r)
    if od.consecutive_errors:
        r.deprecated(f"{path}.consecutiveErrors", "consecutiveErrors", "consecutive5xxErrors")
    if od.consecutive_local_origin_failures and not od.split_external_local_origin_errors:
        r.invalid(f"{path}.consecutiveLocalOriginFailures", od.consecutive_local_origin_failures,
                  "requires splitExternalLocalOriginErrors: true")
    c.percent(od.max_ejection_percent, f"{path}.maxEjectionPercent", r)
    c.percent(od.min_health_percent, f"{path}.minHealthPercent", r)


def connection_pool(cp: ConnectionPoolSettings, path: str, r: Report) -> None:
    http, tcp = cp.http, cp.tcp
    if http is None and tcp is None:
        r.required(path, "connection pool must have at least one of tcp or http")
    if http is not None:
        p = f"{path}.http"
        c.non_negative(p, r, http1MaxPendingRequests=http.http1_max_pending_requests,
                       http2MaxRequests=http.http2_max_requests,
                       maxRequestsPerConnection=http.max_requests_per_connection,
                       maxRetries=http.max_retries, maxConcurrentStreams=http.max_concurrent_streams)
        c.duration(http.idle_timeout, f"{p}.idleTimeout", r)
        if http.h2_upgrade_policy == "UPGRADE" and http.use_client_protocol:
            r.invalid(f"{p}.useClientProtocol", True, "must not be true when h2UpgradePolicy is UPGRADE")
    if tcp is not None:
        p = f"{path}.tcp"
        c.non_negative(p, r, maxConnections=tcp.max_connections)
        c.duration(tcp.connect_timeout, f"{p}.connectTimeout", r)
        c.duration(tcp.max_connection_duration, f"{p}.maxConnectionDuration", r)
        c.duration(tcp.idle_timeout, f"{p}.idleTimeout", r)
        ka = tcp.tcp_keepalive
        if ka is not None and c.given(ka):
            c.duration(ka.time, f"{p}.tcpKeepalive.time", r)
            c.duration(ka.interval, f"{p}.tcpKeepalive.interval", r)


def _client_tls(tls: ClientTLSSettings, path: str, r: Report) -> None:
    mode = tls.mode or "DISABLE"
    certs = {"clientCertificate": tls.client_certificate, "privateKey": tls.private_key,
             "caCertificates": tls.ca_certificates, "credentialName": tls.credential_name, "caCrl": tls.ca_crl}
    if mode in ("DISABLE", "ISTIO_MUTUAL"):
        for key in _truthy(certs):
            r.forbidden(f"{path}.{key}", f"may not be set when mode is {mode}")
        return
    if tls.insecure_skip_verify:
        skip = {"caCertificates": tls.ca_certificates, "subjectAltNames": tls.subject_alt_names}
        if mode == "SIMPLE":
            skip["credentialName"] = tls.credential_name
        for key in _truthy(skip):
            r.forbidden(f"{path}.{key}", "may not be set when insecureSkipVerify is true")
    if tls.credential_name:
        for key in _truthy({k: v for k, v in certs.items() if k != "credentialName"}):
            r.forbidden(f"{path}.{key}", "may not be set together with credentialName")
        return
    if mode == "MUTUAL":
        for key, value in (("clientCertificate", tls.client_certificate), ("privateKey", tls.private_key)):
            if not value:
                r.required(f"{path}.{key}", "required for MUTUAL tls without credentialName")


def _traffic_policy(tp: TrafficPolicy | PortTrafficPolicy, path: str, r: Report) -> None:
    parts: dict[str, object] = {"outlierDetection": tp.outlier_detection, "connectionPool": tp.connection_pool,
                                "loadBalancer": tp.load_balancer, "tls": tp.tls}
    if isinstance(tp, TrafficPolicy):
        listed = c.present(tp.port_level_settings, f"{path}.portLevelSettings", r)
        parts |= {"portLevelSettings": True if listed else None, "tunnel": tp.tunnel,
                  "proxyProtocol": tp.proxy_protocol}
    if not _set(parts):
        r.required(path, "traffic policy must have at least one field")
        return
    has_outlier = tp.outlier_detection is not None
    if tp.outlier_detection is not None:
        _outlier(tp.outlier_detection, f"{path}.outlierDetection", r)
    if tp.connection_pool is not None:
        connection_pool(tp.connection_pool, f"{path}.connectionPool", r)
    if tp.load_balancer is not None:
        _load_balancer(tp.load_balancer, f"{path}.loadBalancer", r, has_outlier=has_outlier)
    if tp.tls is not None:
        _client_tls(tp.tls, f"{path}.tls", r)
    if not isinstance(tp, TrafficPolicy):
        return
    if tp.tunnel is not None and tp.proxy_protocol is not None:
        r.forbidden(f"{path}.proxyProtocol", "may not be set together with tunnel")
    tunnel = tp.tunnel
    if tunnel is not None:
        p = f"{path}.tunnel"
        proto = tunnel.protocol
        if proto not in (None, "", "CONNECT", "POST"):
            r.not_supported(f"{p}.protocol", proto, ["CONNECT", "POST"])
        target = tunnel.target_host or ""
        if fmt.fqdn(target) and fmt.ip_address(target):
            r.invalid(f"{p}.targetHost", target, "tunnel target host must be a valid FQDN or IP address")
        c.port(tunnel.target_port, f"{p}.targetPort", r)
    for i, pls in enumerate(tp.port_level_settings):
        p = f"{path}.portLevelSettings[{i}]"
        if pls.port is None or not c.given(pls.port):
            r.required(f"{p}.port", "port traffic policy must have a port")
        else:
            c.port(pls.port.number, f"{p}.port.number", r)
        if not _set({"outlierDetection": pls.outlier_detection, "connectionPool": pls.connection_pool,
                     "loadBalancer": pls.load_balancer, "tls": pls.tls}):
            r.required(p, "port traffic policy must have at least one field")
        else:
            _traffic_policy(pls, p, r)


def destination_rule(meta: ObjectMeta, spec: DestinationRule, r: Report) -> None:
    if spec.host is not None:
        err = fmt.wildcard_domain(spec.host)
        if err:
            r.invalid("spec.host", spec.host, err)
    if spec.traffic_policy is not None:
        _traffic_policy(spec.traffic_policy, "spec.trafficPolicy", r)
    seen: set[str] = set()
    dynamic = spec.traffic_policy is not None and spec.traffic_policy.load_balancer is not None and \
        spec.traffic_policy.load_balancer.dynamic_subset is not None
    for i, subset in enumerate(spec.subsets):
        p = f"spec.subsets[{i}]"
        name = subset.name or ""
        if name in seen:
            r.duplicate(f"{p}.name", name)
        seen.add(name)
        c.subset_name(name, f"{p}.name", r)
        if not subset.labels:
            r.required(f"{p}.labels", "a subset selects endpoints by labels")
        if c.label_variable(name) is not None:
            # ASM's label-variable subset: {version: $x} groups endpoints by version, a route's subset $x picks
            # the group whose version equals request header x.
            for key, value in subset.labels.items():
                if value != name:
                    r.invalid(f"{p}.labels[{key}]", value, f"every label of subset {name} must be {name}")
                err = fmt.qualified_name(key)
                if err:
                    r.invalid(f"{p}.labels", key, err)
            if subset.traffic_policy is not None:
                r.forbidden(f"{p}.trafficPolicy", "not supported on a label-variable subset: set it on the rule")
            if dynamic:
                r.forbidden(f"{p}.name", "a label-variable subset may not be combined with "
                            "trafficPolicy.loadBalancer.dynamicSubset")
            continue
        check_labels(subset.labels, f"{p}.labels", r)
        if subset.traffic_policy is not None:
            _traffic_policy(subset.traffic_policy, f"{p}.trafficPolicy", r)
    selector = spec.workload_selector
    c.workload_selector(None if selector is None else selector.match_labels, "spec.workloadSelector.matchLabels", r)
    namespace = meta.namespace
    c.export_to(spec.export_to, "spec.exportTo", r, namespace=namespace, service_entry=False)
    export = spec.export_to
    if selector is not None and export and any(e not in (".", namespace) for e in export):
        r.invalid("spec.exportTo", list(export),
                  "a destination rule with a workload selector cannot be exported beyond its namespace")


# --- Gateway ---------------------------------------------------------------------------------------------------


def _gateway_host(host: str, path: str, r: Report, *, sidecar: bool) -> None:
    ns, slash, name = host.partition("/")
    if not slash:
        if sidecar:
            r.invalid(path, host, "host must be of form namespace/dnsName")
            return
        ns, name = "", host
    elif not ns or not name:
        r.invalid(path, host, "config namespace and dnsName in host entry cannot be empty")
        return
    if slash and ns not in ("*", ".") and not (sidecar and ns == "~") and fmt.dns1123_label(ns):
        r.invalid(path, host, f"invalid namespace value {ns!r}")
    if name != "*" and "." not in name:
        r.invalid(path, host, "short names (non FQDN) are not allowed")
        return
    err = fmt.wildcard_domain(name)
    if err and (sidecar or not fmt.is_ip(name)):
        r.invalid(path, host, err)
        return
    err = fmt.partial_wildcard(name)
    if err:
        r.invalid(path, host, err)


def _server_tls(tls: ServerTLSSettings, path: str, r: Report) -> None:
    mode = tls.mode or "PASSTHROUGH"
    certs = {"serverCertificate": tls.server_certificate, "privateKey": tls.private_key,
             "caCertificates": tls.ca_certificates, "credentialName": tls.credential_name}
    if mode == "ISTIO_MUTUAL":
        for key in _truthy(certs):
            r.forbidden(f"{path}.{key}", "ISTIO_MUTUAL TLS cannot have associated certificates")
        return
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
        if _truthy(certs) or tls.ca_crl:
            r.warn(f"{path}: {mode} mode does not use certificates, they will be ignored")
        return
    if tls.credential_name:
        for key, value in (("serverCertificate", tls.server_certificate), ("privateKey", tls.private_key)):
            if value:
                r.forbidden(f"{path}.{key}", "may not be set together with credentialName")
        if tls.ca_crl:
            r.forbidden(f"{path}.caCrl", "CRL is not supported with credentialName: put it in the credential")
        return
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
        for key, value in (("serverCertificate", tls.server_certificate), ("privateKey", tls.private_key)):
            if not value:
                r.required(f"{path}.{key}", f"{mode} TLS requires credentialName or serverCertificate and "
                           "privateKey")
    if mode in ("MUTUAL", "OPTIONAL_MUTUAL") and not tls.ca_certificates:
        r.required(f"{path}.caCertificates", f"{mode} TLS requires a client CA bundle")
    if mode == "SIMPLE" and tls.ca_crl:
        r.forbidden(f"{path}.caCrl", "CRL is not supported with SIMPLE TLS")


def gateway(meta: ObjectMeta, spec: Gateway, r: Report) -> None:
    if meta.name and fmt.dns1123_label(meta.name):
        r.invalid("metadata.name", meta.name, "a Gateway's name must be a DNS-1123 label (no dots)")
    if not spec.servers:
        r.required("spec.servers", "gateway must have at least one server")
    port_names: set[str] = set()
    for i, server in enumerate(spec.servers):
        p = f"spec.servers[{i}]"
        if not server.hosts:
            r.required(f"{p}.hosts", "server config must contain at least one host")
        for j, host in enumerate(server.hosts):
            _gateway_host(host, f"{p}.hosts[{j}]", r, sidecar=False)
        port = server.port or Port()
        bind = server.bind or ""
        protocol = port.protocol or ""
        err = c.protocol_error(protocol)
        if err:
            r.not_supported(f"{p}.port.protocol", protocol, sorted(c.PROTOCOLS))
        if port.number or not bind.startswith("unix://"):
            c.port(port.number, f"{p}.port.number", r)
        if port.target_port:
            r.forbidden(f"{p}.port.targetPort", "targetPort has no impact on Gateways")
        pname = port.name or ""
        if pname in port_names:
            r.duplicate(f"{p}.port.name", pname)
        port_names.add(pname)
        if bind.startswith("unix://"):
            err = fmt.unix_address(bind[len("unix://"):])
            if err:
                r.invalid(f"{p}.bind", bind, err)
        elif bind:
            err = fmt.ip_address(bind)
            if err:
                r.invalid(f"{p}.bind", bind, err)
        tls = server.tls
        upper = protocol.upper()
        if upper in c.TLS_PROTOCOLS and tls is None:
            r.required(f"{p}.tls", "server must have TLS settings for HTTPS/TLS protocols")
        elif tls is not None and upper not in c.TLS_PROTOCOLS:
            if upper in c.HTTP_PROTOCOLS:
                if _truthy({"serverCertificate": tls.server_certificate, "privateKey": tls.private_key,
                            "caCertificates": tls.ca_certificates, "credentialName": tls.credential_name}):
                    r.forbidden(f"{p}.tls", "server cannot have TLS settings for plain text HTTP ports "
                                "(only httpsRedirect)")
            else:
                r.forbidden(f"{p}.tls", "server cannot have TLS settings for non HTTPS/TLS ports")
        if tls is not None:
            if tls.https_redirect and upper not in c.HTTP_PROTOCOLS:
                r.warn(f"{p}.tls.httpsRedirect: should only be used with http servers")
            if upper in c.TLS_PROTOCOLS:
                _server_tls(tls, f"{p}.tls", r)


# --- ServiceEntry, WorkloadEntry, WorkloadGroup ---------------------------------------------------------------


def _workload_endpoint(we: WorkloadEntry, path: str, r: Report, *, service_ports: set[str] | None,
                       allow_fqdn: bool) -> None:
    address = we.address or ""
    if not address:
        if not we.network:
            r.required(f"{path}.address", "address is required (or a network reached through its gateway)")
        else:
            r.warn(f"{path}.address: address is unset with network {we.network!r}")
    if address.startswith("unix://"):
        err = fmt.unix_address(address[len("unix://"):])
        if err:
            r.invalid(f"{path}.address", address, err)
        if we.ports:
            r.forbidden(f"{path}.ports", "unix endpoints must not include ports")
    elif address and not fmt.is_ip(address):
        if not allow_fqdn:
            r.invalid(f"{path}.address", address, "must be a valid IP address")
        elif fmt.fqdn(address):
            r.invalid(f"{path}.address", address, "must be a valid FQDN or IP address")
    for name, number in we.ports.items():
        p = f"{path}.ports[{name}]"
        if service_ports is not None and name not in service_ports:
            r.invalid(p, name, "endpoint port is not defined by the service entry")
        err = fmt.dns1123_label(name)
        if err:
            r.invalid(p, name, "invalid port name: " + err)
        err = fmt.port(number)
        if err:
            r.invalid(p, number, err)
    check_labels(we.labels, f"{path}.labels", r)


def service_entry(meta: ObjectMeta, spec: ServiceEntry, r: Report) -> None:
    hosts = spec.hosts
    if not hosts:
        r.required("spec.hosts", "service entry must have at least one host")
    for i, host in enumerate(hosts):
        if host == "*":
            r.invalid(f"spec.hosts[{i}]", host, "a ServiceEntry host cannot be '*'")
            continue
        err = fmt.wildcard_domain(host)
        if err:
            r.invalid(f"spec.hosts[{i}]", host, err)
        elif fmt.partial_wildcard(host):
            r.warn(f"spec.hosts[{i}]: partial wildcard {host!r} not allowed")
    resolution = spec.resolution or "NONE"
    for i, address in enumerate(spec.addresses):
        err = fmt.ip_or_cidr(address)
        if err:
            r.invalid(f"spec.addresses[{i}]", address, err)
        elif "/" in address and resolution not in ("NONE", "STATIC"):
            r.invalid(f"spec.addresses[{i}]", address, "CIDR addresses are allowed only for NONE/STATIC resolution")
    names: set[str] = set()
    numbers: set[int] = set()
    for i, port in enumerate(spec.ports):
        p = f"spec.ports[{i}]"
        name, number = port.name or "", port.number or 0
        if name in names:
            r.duplicate(f"{p}.name", name)
        names.add(name)
        if number in numbers:
            r.duplicate(f"{p}.number", number)
        numbers.add(number)
        err = fmt.dns1123_label(name)
        if err:
            r.invalid(f"{p}.name", name, "invalid port name: " + err)
        c.port(port.number, f"{p}.number", r)
        if port.target_port:
            c.port(port.target_port, f"{p}.targetPort", r)
        if port.protocol and c.protocol_error(port.protocol):
            r.not_supported(f"{p}.protocol", port.protocol, sorted(c.PROTOCOLS))
    endpoints = spec.endpoints
    selector = spec.workload_selector
    if selector is not None and c.present(endpoints, "spec.endpoints", r):
        r.forbidden("spec.endpoints", "only one of workloadSelector or endpoints may be set")
    c.workload_selector(None if selector is None else selector.labels, "spec.workloadSelector.labels", r)
    if resolution == "NONE" and endpoints:
        r.forbidden("spec.endpoints", "no endpoints should be provided for resolution NONE")
    elif resolution == "STATIC":
        for i, ep in enumerate(endpoints):
            _workload_endpoint(ep, f"spec.endpoints[{i}]", r, service_ports=names, allow_fqdn=False)
    elif resolution in ("DNS", "DNS_ROUND_ROBIN"):
        if not endpoints:
            for i, host in enumerate(hosts):
                if host != "*" and fmt.fqdn(host):
                    r.invalid(f"spec.hosts[{i}]", host,
                              f"hosts must be FQDN if no endpoints are provided for resolution {resolution}")
        if resolution == "DNS_ROUND_ROBIN" and len(endpoints) > 1:
            r.invalid("spec.endpoints", len(endpoints), "there must be 0 or 1 endpoint for DNS_ROUND_ROBIN")
        for i, ep in enumerate(endpoints):
            _workload_endpoint(ep, f"spec.endpoints[{i}]", r, service_ports=names, allow_fqdn=True)
    if resolution != "NONE" and len(hosts) > 1:
        for i, port in enumerate(spec.ports):
            proto = (port.protocol or "").upper()
            if proto not in c.HTTP_PROTOCOLS and proto not in c.TLS_PROTOCOLS:
                r.invalid(f"spec.ports[{i}].protocol", port.protocol or "",
                          "multiple hosts need HTTP or TLS ports (plain TCP cannot tell the hosts apart)")
                break
    c.export_to(spec.export_to, "spec.exportTo", r, namespace=meta.namespace, service_entry=True)


def workload_entry(meta: ObjectMeta, spec: WorkloadEntry, r: Report) -> None:
    _workload_endpoint(spec, "spec", r, service_ports=None, allow_fqdn=True)


def workload_group(meta: ObjectMeta, spec: WorkloadGroup, r: Report) -> None:
    if spec.metadata is not None:
        check_labels(spec.metadata.labels, "spec.metadata.labels", r)
    if spec.template is not None:
        for name, number in spec.template.ports.items():
            err = fmt.port(number)
            if err:
                r.invalid(f"spec.template.ports[{name}]", number, err)
    probe = spec.probe
    if probe is None:
        return
    c.non_negative("spec.probe", r, periodSeconds=probe.period_seconds,
                   initialDelaySeconds=probe.initial_delay_seconds, timeoutSeconds=probe.timeout_seconds,
                   successThreshold=probe.success_threshold, failureThreshold=probe.failure_threshold)
    methods = _set({"httpGet": probe.http_get, "tcpSocket": probe.tcp_socket, "exec": probe.exec})
    if not methods:
        r.required("spec.probe", "one of httpGet, tcpSocket or exec is required")
    elif len(methods) > 1:
        r.invalid("spec.probe", methods, "only one of httpGet, tcpSocket or exec may be set")
    http = probe.http_get
    if http is not None:
        c.port(http.port, "spec.probe.httpGet.port", r)
        scheme = http.scheme
        if scheme and scheme not in ("HTTP", "HTTPS"):
            r.not_supported("spec.probe.httpGet.scheme", scheme, ["HTTP", "HTTPS"])
        for i, header in enumerate(http.http_headers):
            err = fmt.header_name(header.name or "")
            if err:
                r.invalid(f"spec.probe.httpGet.httpHeaders[{i}].name", header.name or "", err)
    if probe.tcp_socket is not None:
        c.port(probe.tcp_socket.port, "spec.probe.tcpSocket.port", r)
    if probe.exec is not None and not probe.exec.command:
        r.required("spec.probe.exec.command")


# --- Sidecar -----------------------------------------------------------------------------------------------


def _sidecar_port(port: SidecarPort, bind: str, path: str, r: Report, *, egress: bool, capture: str) -> None:
    name = port.name
    if name:
        err = fmt.dns1123_label(name)
        if err:
            r.invalid(f"{path}.name", name, "invalid port name: " + err)
    protocol = port.protocol
    if protocol and c.protocol_error(protocol):
        r.not_supported(f"{path}.protocol", protocol, sorted(c.PROTOCOLS))
    if port.target_port:
        r.forbidden(f"{path}.targetPort", "targetPort has no impact on Sidecars")
    if egress and not port.number:
        if not bind.startswith("unix://"):
            r.invalid(f"{path}.number", 0, "ports with 0 value must have a unix domain socket bind address")
        if capture not in ("", "DEFAULT", "NONE"):
            r.invalid(f"{path}.number", 0, "captureMode must be DEFAULT/NONE for unix domain socket listeners")
        return
    c.port(port.number, f"{path}.number", r)


def _default_endpoint(value: str, path: str, r: Report) -> None:
    if value.startswith("unix://"):
        err = fmt.unix_address(value[len("unix://"):])
        if err:
            r.invalid(path, value, err)
        return
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or host not in ("", "127.0.0.1", "0.0.0.0", "::1", "::") or not port.isdigit():
        r.invalid(path, value, "defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, "
                  "[::]:<port>, :<port> or unix://<path>")
        return
    err = fmt.port(int(port))
    if err:
        r.invalid(path, value, err)


def sidecar(meta: ObjectMeta, spec: Sidecar, r: Report) -> None:
    selector = spec.workload_selector
    c.workload_selector(None if selector is None else selector.labels, "spec.workloadSelector.labels", r)
    ingress, egress = spec.ingress, spec.egress
    if not (ingress or egress or c.given(spec.outbound_traffic_policy) or c.given(spec.inbound_connection_pool)):
        r.required("spec.egress", "sidecar: empty configuration provided")
    numbers: set[int] = set()
    for i, inbound in enumerate(ingress):
        p = f"spec.ingress[{i}]"
        port = inbound.port or SidecarPort()
        bind = inbound.bind or ""
        _sidecar_port(port, bind, f"{p}.port", r, egress=False, capture="")
        if port.number in numbers:
            r.duplicate(f"{p}.port.number", port.number)
        numbers.add(port.number if port.number is not None else 0)
        if bind:
            err = fmt.ip_address(bind)
            if err:
                r.invalid(f"{p}.bind", bind, err)
        if inbound.default_endpoint:
            _default_endpoint(inbound.default_endpoint, f"{p}.defaultEndpoint", r)
        tls = inbound.tls
        if tls is not None:
            for key, value, why in (
                ("subjectAltNames", tls.subject_alt_names, "subjectAltNames is not supported in ingress tls"),
                ("httpsRedirect", tls.https_redirect, "httpsRedirect is not supported"),
                ("credentialName", tls.credential_name, "credentialName is not currently supported"),
            ):
                if value:
                    r.forbidden(f"{p}.tls.{key}", why)
            if tls.mode in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
                r.not_supported(f"{p}.tls.mode", tls.mode, ["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"])
            else:
                _server_tls(tls, f"{p}.tls", r)
        if inbound.connection_pool is not None:
            connection_pool(inbound.connection_pool, f"{p}.connectionPool", r)
    if spec.inbound_connection_pool is not None:
        connection_pool(spec.inbound_connection_pool, "spec.inboundConnectionPool", r)
    numbers = set()
    catch_all = False
    for i, outbound in enumerate(egress):
        p = f"spec.egress[{i}]"
        bind = outbound.bind or ""
        if outbound.port is None:
            if catch_all:
                r.invalid(f"{p}.port", None, "egress can have only one listener without a port")
            elif i != len(egress) - 1:
                r.invalid(f"{p}.port", None, "the egress listener without a port must be the last one")
            catch_all = True
        else:
            capture: str = outbound.capture_mode or ""
            _sidecar_port(outbound.port, bind, f"{p}.port", r, egress=True, capture=capture)
            number = outbound.port.number or 0
            if number and number in numbers:
                r.duplicate(f"{p}.port.number", number)
            numbers.add(number)
            if bind and not bind.startswith("unix://"):
                err = fmt.ip_address(bind)
                if err:
                    r.invalid(f"{p}.bind", bind, err)
        if not outbound.hosts:
            r.required(f"{p}.hosts", "egress listener must contain at least one host")
        for j, host in enumerate(outbound.hosts):
            _gateway_host(host, f"{p}.hosts[{j}]", r, sidecar=True)
    otp = spec.outbound_traffic_policy
    if otp is not None and otp.egress_proxy is not None:
        p = "spec.outboundTrafficPolicy.egressProxy"
        if otp.mode != "ALLOW_ANY":
            r.forbidden(p, "egressProxy may only be set with outboundTrafficPolicy mode ALLOW_ANY")
        proxy = otp.egress_proxy
        err = fmt.fqdn(proxy.host or "")
        if err:
            r.invalid(f"{p}.host", proxy.host or "", err)
        if proxy.port is None:
            r.required(f"{p}.port")
        else:
            c.destination(proxy, p, r)


# --- EnvoyFilter ---------------------------------------------------------------------------------------------


_LISTENER_LEVELS = ("LISTENER", "LISTENER_FILTER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER")
_ROUTE_LEVELS = ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE")
# Not generated by meshplane (no ECDS; the bootstrap is the agent's): refused rather than stored to do nothing.
_UNSUPPORTED_LEVELS = {
    "EXTENSION_CONFIG": "EXTENSION_CONFIG is not supported: meshplane serves no extension config discovery (ECDS)",
    "BOOTSTRAP": "BOOTSTRAP is not supported: the agent writes the Envoy bootstrap and reads no EnvoyFilter",
}


def envoy_filter(meta: ObjectMeta, spec: EnvoyFilter, r: Report) -> None:
    selector = spec.workload_selector
    if selector is not None and spec.target_refs:
        r.forbidden("spec.targetRefs", "only one of workloadSelector or targetRefs may be set")
    c.workload_selector(None if selector is None else selector.labels, "spec.workloadSelector.labels", r)
    for i, ref in enumerate(spec.target_refs):
        if not ref.name:
            r.required(f"spec.targetRefs[{i}].name")
        if ref.kind != "Gateway" or ref.group not in (None, "", "gateway.networking.k8s.io"):
            r.not_supported(f"spec.targetRefs[{i}].kind", f"{ref.group or ''}/{ref.kind or ''}",
                            ["gateway.networking.k8s.io/Gateway"])
    for i, cp in enumerate(spec.config_patches):
        p = f"spec.configPatches[{i}]"
        apply_to = cp.apply_to.value if cp.apply_to is not None else ""
        if not apply_to or apply_to == "INVALID":
            r.required(f"{p}.applyTo", "the object to patch is required")
        elif apply_to in _UNSUPPORTED_LEVELS:
            r.forbidden(f"{p}.applyTo", _UNSUPPORTED_LEVELS[apply_to])
        match = cp.match
        if match is not None and apply_to:
            if apply_to in _LISTENER_LEVELS and (match.route_configuration is not None or match.cluster is not None):
                r.forbidden(f"{p}.match", f"applyTo {apply_to} takes a listener match only")
            if apply_to in _ROUTE_LEVELS and (match.listener is not None or match.cluster is not None):
                r.forbidden(f"{p}.match", f"applyTo {apply_to} takes a routeConfiguration match only")
            if apply_to == "CLUSTER" and (match.listener is not None or match.route_configuration is not None):
                r.forbidden(f"{p}.match", "applyTo CLUSTER takes a cluster match only")
            chain = match.listener.filter_chain if match.listener is not None else None
            flt = chain.filter if chain is not None else None
            if flt is not None and flt.sub_filter is not None and apply_to != "HTTP_FILTER":
                r.forbidden(f"{p}.match.listener.filterChain.filter.subFilter",
                            "a subFilter match is for applyTo HTTP_FILTER only")
            if flt is not None and apply_to not in ("NETWORK_FILTER", "HTTP_FILTER"):
                r.forbidden(f"{p}.match.listener.filterChain.filter",
                            "a filter match is for applyTo NETWORK_FILTER or HTTP_FILTER only")
        patch = cp.patch
        if patch is None:
            r.required(f"{p}.patch")
            continue
        op = patch.operation.value if patch.operation is not None else ""
        if not op or op == "INVALID":
            r.required(f"{p}.patch.operation")
        elif op != "REMOVE" and patch.value is None:
            r.required(f"{p}.patch.value", f"operation {op} needs a value")
        if op == "REPLACE" and apply_to not in ("", "INVALID", "HTTP_FILTER", "NETWORK_FILTER", "LISTENER_FILTER",
                                                "VIRTUAL_HOST"):
            r.forbidden(f"{p}.patch.operation", f"REPLACE does not apply to {apply_to}")
        if patch.filter_class is not None and patch.filter_class.value != "UNSPECIFIED":
            r.forbidden(f"{p}.patch.filterClass", "filterClass is not supported; use INSERT_BEFORE/INSERT_AFTER "
                        "with a subFilter match to place the filter")
        if (patch.value is not None and op not in ("", "INVALID", "REMOVE")
                and apply_to in envoyproto.PATCH_MESSAGES and apply_to not in _UNSUPPORTED_LEVELS):
            try:
                envoyproto.patch_value(apply_to, patch.value)
            except envoyproto.EnvoyProtoError as e:
                r.add(f"{p}.patch.value", "FieldValueInvalid",
                      f"Invalid value: not a valid {envoyproto.PATCH_MESSAGES[apply_to]}: {e}")
        proxy = None if cp.match is None else cp.match.proxy
        version = None if proxy is None else proxy.proxy_version
        if version:
            err = fmt.re2(version)
            if err:
                r.invalid(f"{p}.match.proxy.proxyVersion", version, err)
