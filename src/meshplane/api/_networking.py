"""Semantic validation of networking.istio.io kinds, after the rules of Istio's own validation webhook.

These are the checks a schema cannot express: exclusive fields, weights that must add up, host names and
wildcards, RE2 regexes, Go durations, TLS settings that need each other. Each error names the field with its
indices (``spec.http[0].route[1].weight``). Messages follow Istio's where a user would search for them.
"""

from __future__ import annotations

from typing import Any

from meshplane.api import _common as c
from meshplane.api import _formats as fmt
from meshplane.api._meta import check_labels
from meshplane.api._report import Report

J = dict[str, Any]

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


def _namespace(obj: J) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return ns if isinstance(ns, str) else ""


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


def _percentage(obj: J | None, path: str, r: Report) -> None:
    """Istio's fractional Percent: 0, or within [0.0001, 100]."""
    if not obj:
        return
    value = obj.get("value")
    if isinstance(value, int | float) and (value < 0 or value > 100 or 0 < value < 0.0001):
        r.invalid(f"{path}.value", value, "percentage must be 0 or in the range [0.0001, 100]")


def _route_weights(routes: list[J], path: str, r: Report) -> None:
    weights = [rt.get("weight") for rt in routes]
    for i, w in enumerate(weights):
        if isinstance(w, int | float) and w < 0:
            r.invalid(f"{path}[{i}].weight", w, "weight must be greater than or equal to 0")
    if len(routes) == 1:
        w = weights[0]
        if w not in (None, 0, 100):
            r.invalid(f"{path}[0].weight", w, "the weight of a single destination must be omitted, 0 or 100")
    elif len(routes) > 1:
        total = sum(w for w in weights if isinstance(w, int | float))
        if total != 100:
            r.invalid(path, total, f"total destination weight {total:g} != 100: route weights must add up to 100")


def _http_match(match: J, path: str, r: Report, *, delegate: bool, bound_to_gateway: bool) -> None:
    for key in ("uri", "scheme", "method", "authority"):
        sm = match.get(key)
        c.string_match(sm, f"{path}.{key}", r, allow_empty=False)
        if delegate and sm and "regex" in sm:
            r.forbidden(f"{path}.{key}.regex", "regex matches are not supported in delegate VirtualServices")
    for key in ("headers", "withoutHeaders"):
        for name, sm in (match.get(key) or {}).items():
            p = f"{path}.{key}[{name}]"
            if name.startswith("@request.auth.claims"):
                if not bound_to_gateway:
                    r.invalid(p, name, "JWT claim based routing is only supported for gateways")
            else:
                err = fmt.header_name(name)
                if err:
                    r.invalid(p, name, err)
            c.string_match(sm, p, r, allow_empty=True)
    for name, sm in (match.get("queryParams") or {}).items():
        c.string_match(sm, f"{path}.queryParams[{name}]", r, allow_empty=True)
    if match.get("port"):
        c.port_at(match, "port", path, r)
    check_labels(match.get("sourceLabels"), f"{path}.sourceLabels", r)
    c.gateway_names(match.get("gateways"), f"{path}.gateways", r)
    ns = match.get("sourceNamespace")
    if ns:
        err = fmt.dns1123_label(ns)
        if err:
            r.invalid(f"{path}.sourceNamespace", ns, err)


def _fault(fault: J, path: str, r: Report) -> None:
    abort, delay = fault.get("abort"), fault.get("delay")
    if abort is None and delay is None:
        r.required(path, "HTTP fault injection must have an abort and/or a delay")
    for name, part in (("abort", abort), ("delay", delay)):
        if part is None:
            continue
        p = f"{path}.{name}"
        _percentage(part.get("percentage"), f"{p}.percentage", r)
        if "percent" in part:
            r.deprecated(f"{p}.percent", "percent", "percentage")
            c.percent_at(part, "percent", p, r)
    if abort is not None:
        p = f"{path}.abort"
        kinds = [k for k in ("httpStatus", "grpcStatus", "http2Error") if k in abort]
        if len(kinds) > 1:
            r.invalid(p, abort, "only one of httpStatus, grpcStatus or http2Error may be set")
        status = abort.get("httpStatus")
        if isinstance(status, int | float) and not 200 <= status <= 599:
            r.invalid(f"{p}.httpStatus", status, f"HTTP status {status:g} is not in range 200-599")
        grpc = abort.get("grpcStatus")
        if isinstance(grpc, str) and grpc not in _GRPC_STATUS and not (grpc.isdigit() and int(grpc) <= 16):
            r.not_supported(f"{p}.grpcStatus", grpc, _GRPC_STATUS)
        if "http2Error" in abort:
            r.invalid(f"{p}.http2Error", abort["http2Error"], "HTTP/2 abort fault injection is not supported")
        if not kinds:
            r.required(f"{p}.httpStatus", "an abort needs httpStatus or grpcStatus")
    if delay is not None:
        p = f"{path}.delay"
        if "fixedDelay" in delay and "exponentialDelay" in delay:
            r.invalid(p, delay, "only one of fixedDelay or exponentialDelay may be set")
        c.duration_at(delay, "fixedDelay", p, r)
        if "exponentialDelay" in delay:
            r.invalid(f"{p}.exponentialDelay", delay["exponentialDelay"], "exponentialDelay is not supported")
        elif "fixedDelay" not in delay:
            r.required(f"{p}.fixedDelay")


def _retries(retries: J, path: str, r: Report) -> None:
    attempts = retries.get("attempts")
    if isinstance(attempts, int | float) and attempts < 0:
        r.invalid(f"{path}.attempts", attempts, "attempts cannot be negative")
    if attempts == 0 and any(k in retries for k in ("perTryTimeout", "retryOn", "retryRemoteLocalities")):
        r.invalid(f"{path}.attempts", 0, "http retry policy configured when attempts are set to 0 (disabled)")
    c.duration_at(retries, "perTryTimeout", path, r)
    retry_on = retries.get("retryOn")
    if isinstance(retry_on, str) and retry_on:
        for policy in retry_on.split(","):
            policy = policy.strip()
            if policy in _RETRY_ON or (policy.isdigit() and 100 <= int(policy) <= 599):
                continue
            r.invalid(f"{path}.retryOn", retry_on, f"{policy!r} is not a valid retryOn policy")


def _cors(cors: J, path: str, r: Report) -> None:
    for i, origin in enumerate(cors.get("allowOrigins") or []):
        p = f"{path}.allowOrigins[{i}]"
        c.string_match(origin, p, r, allow_empty=False)
        for k in ("exact", "prefix"):
            if origin.get(k) == "":
                r.invalid(f"{p}.{k}", "", "allow origin may not be empty")
    if cors.get("allowOrigin"):
        r.deprecated(f"{path}.allowOrigin", "allowOrigin", "allowOrigins")
    for i, method in enumerate(cors.get("allowMethods") or []):
        if method not in _HTTP_METHODS:
            r.not_supported(f"{path}.allowMethods[{i}]", method, sorted(_HTTP_METHODS))
    for key in ("allowHeaders", "exposeHeaders"):
        for i, name in enumerate(cors.get(key) or []):
            err = None if name == "*" else fmt.header_name(name)
            if err:
                r.invalid(f"{path}.{key}[{i}]", name, err)
    max_age = cors.get("maxAge")
    if isinstance(max_age, str):
        ns = fmt.parse_duration(max_age)
        err = fmt.duration(max_age)
        if err is None and ns is not None and ns % 1_000_000_000:
            err = "max_age duration is accurate only to seconds precision"
        if err:
            r.invalid(f"{path}.maxAge", max_age, err)


def _redirect(redirect: J, path: str, r: Report) -> None:
    if not any(k in redirect for k in ("uri", "authority", "port", "derivePort", "scheme")):
        r.required(path, "redirect must specify uri, authority, scheme, port or derivePort")
    if "port" in redirect and "derivePort" in redirect:
        r.invalid(path, redirect, "only one of port or derivePort may be set")
    code = redirect.get("redirectCode")
    if isinstance(code, int | float) and code and not 300 <= code <= 399:
        r.invalid(f"{path}.redirectCode", code, f"{code:g} is not a valid redirect code, must be 3xx")
    scheme = redirect.get("scheme")
    if scheme is not None and scheme not in ("http", "https"):
        r.not_supported(f"{path}.scheme", scheme, ["http", "https"])
    if redirect.get("port"):
        c.port_at(redirect, "port", path, r)


def _direct_response(resp: J, path: str, r: Report) -> None:
    status = resp.get("status")
    if isinstance(status, int | float) and not 200 <= status <= 599:
        r.invalid(f"{path}.status", status, f"HTTP status {status:g} is not in range 200-599")
    body = resp.get("body")
    if body:
        if "string" in body and "bytes" in body:
            r.invalid(f"{path}.body", body, "only one of string or bytes may be set")
        size = len(body.get("string") or "") + len(body.get("bytes") or "") * 3 // 4
        if size > _KB * _KB:
            r.invalid(f"{path}.body", size, "direct responses must be less than 1MB")
        elif size > 100 * _KB:
            r.warn(f"{path}.body: large direct responses may impact control plane performance")


def _rewrite(rewrite: J, path: str, r: Report) -> None:
    has_uri, has_regex = "uri" in rewrite, "uriRegexRewrite" in rewrite
    if has_uri and has_regex:
        r.invalid(path, rewrite, "rewrite may only contain one of uri or uriRegexRewrite")
    if not (has_uri or has_regex or "authority" in rewrite):
        r.required(path, "rewrite must specify at least one of uri, uriRegexRewrite or authority")
    regex = rewrite.get("uriRegexRewrite")
    if regex is not None:
        p = f"{path}.uriRegexRewrite"
        if not regex.get("match"):
            r.required(f"{p}.match")
        else:
            err = fmt.re2(regex["match"])
            if err:
                r.invalid(f"{p}.match", regex["match"], err)
        if "rewrite" not in regex:
            r.required(f"{p}.rewrite")


def _http_route(http: J, path: str, r: Report, *, delegate_vs: bool, bound_to_gateway: bool) -> None:
    actions = [k for k in ("route", "redirect", "directResponse", "delegate") if http.get(k)]
    if not actions:
        r.required(f"{path}.route", "one of route, redirect, directResponse or delegate is required")
    for extra in actions[1:]:
        r.forbidden(f"{path}.{extra}", f"may not be set together with {actions[0]}")
    if http.get("delegate"):
        if delegate_vs:
            r.forbidden(f"{path}.delegate", "a delegate VirtualService cannot delegate again")
        if not http["delegate"].get("name"):
            r.required(f"{path}.delegate.name")
    if http.get("redirect"):
        if "rewrite" in http:
            r.forbidden(f"{path}.rewrite", "may not be set together with redirect")
        if "fault" in http:
            r.forbidden(f"{path}.fault", "may not be set together with redirect")
    for j, match in enumerate(http.get("match") or []):
        _http_match(match, f"{path}.match[{j}]", r, delegate=delegate_vs, bound_to_gateway=bound_to_gateway)
    routes = http.get("route") or []
    for k, route in enumerate(routes):
        p = f"{path}.route[{k}]"
        c.destination(route.get("destination"), f"{p}.destination", r)
        c.header_operations(route.get("headers"), f"{p}.headers", r)
    _route_weights(routes, f"{path}.route", r)
    c.header_operations(http.get("headers"), f"{path}.headers", r)
    if "timeout" in http:
        c.duration_at(http, "timeout", path, r)
    if http.get("retries"):
        _retries(http["retries"], f"{path}.retries", r)
    if "fault" in http:
        _fault(http["fault"] or {}, f"{path}.fault", r)
    if http.get("corsPolicy"):
        _cors(http["corsPolicy"], f"{path}.corsPolicy", r)
    if http.get("redirect"):
        _redirect(http["redirect"], f"{path}.redirect", r)
    if http.get("directResponse"):
        _direct_response(http["directResponse"], f"{path}.directResponse", r)
    if "rewrite" in http:
        _rewrite(http["rewrite"] or {}, f"{path}.rewrite", r)
    c.destination(http.get("mirror"), f"{path}.mirror", r)
    if http.get("mirror") and http.get("mirrors"):
        r.forbidden(f"{path}.mirrors", "may not be set together with mirror")
    _percentage(http.get("mirrorPercentage"), f"{path}.mirrorPercentage", r)
    for key in ("mirror_percent", "mirrorPercent"):
        if key in http:
            r.deprecated(f"{path}.{key}", key, "mirrorPercentage")
            c.percent_at(http, key, path, r)
    for k, mirror in enumerate(http.get("mirrors") or []):
        p = f"{path}.mirrors[{k}]"
        c.destination(mirror.get("destination"), f"{p}.destination", r)
        _percentage(mirror.get("percentage"), f"{p}.percentage", r)


def _l4_match(match: J, path: str, r: Report) -> None:
    c.ip_list(match.get("destinationSubnets"), f"{path}.destinationSubnets", r)
    if match.get("port"):
        c.port_at(match, "port", path, r)
    check_labels(match.get("sourceLabels"), f"{path}.sourceLabels", r)
    c.gateway_names(match.get("gateways"), f"{path}.gateways", r)


def _l4_routes(routes: list[J] | None, path: str, r: Report) -> None:
    if not routes:
        r.required(path, "a route is required")
        return
    for k, route in enumerate(routes):
        c.destination(route.get("destination"), f"{path}[{k}].destination", r)
    _route_weights(routes, path, r)


def virtual_service(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    hosts: list[str] = spec.get("hosts") or []
    gateways: list[str] = spec.get("gateways") or []
    delegate_vs = not hosts
    if delegate_vs:
        if gateways:
            r.forbidden("spec.gateways", "a delegate VirtualService (one without hosts) must not name gateways")
        if spec.get("tls"):
            r.forbidden("spec.tls", "a delegate VirtualService (one without hosts) cannot have tls routes")
        if spec.get("tcp"):
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
    if not (spec.get("http") or spec.get("tcp") or spec.get("tls")):
        r.required("spec.http", "http, tcp or tls must be provided in virtual service")
    for i, http in enumerate(spec.get("http") or []):
        _http_route(http, f"spec.http[{i}]", r, delegate_vs=delegate_vs, bound_to_gateway=bound_to_gateway)
    for i, tcp in enumerate(spec.get("tcp") or []):
        for j, match in enumerate(tcp.get("match") or []):
            _l4_match(match, f"spec.tcp[{i}].match[{j}]", r)
        _l4_routes(tcp.get("route"), f"spec.tcp[{i}].route", r)
    for i, tls in enumerate(spec.get("tls") or []):
        matches = tls.get("match") or []
        if not matches:
            r.required(f"spec.tls[{i}].match", "TLS route must have at least one match condition")
        for j, match in enumerate(matches):
            p = f"spec.tls[{i}].match[{j}]"
            snis = match.get("sniHosts") or []
            if not snis:
                r.required(f"{p}.sniHosts", "TLS match must have at least one SNI host")
            for k, sni in enumerate(snis):
                err = fmt.wildcard_domain(sni)
                if err:
                    r.invalid(f"{p}.sniHosts[{k}]", sni, err)
                elif not any(_sni_in_host(sni, h) for h in hosts):
                    r.invalid(f"{p}.sniHosts[{k}]", sni,
                              "SNI host is not a compatible subset of any of the virtual service hosts")
            _l4_match(match, p, r)
        _l4_routes(tls.get("route"), f"spec.tls[{i}].route", r)
    c.export_to(spec.get("exportTo"), "spec.exportTo", r, namespace=_namespace(obj), service_entry=False)


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


def _locality_lb(lb: J, path: str, r: Report, *, has_outlier: bool) -> None:
    modes = [k for k in ("distribute", "failover", "failoverPriority") if lb.get(k)]
    if len(modes) > 1:
        r.invalid(path, modes, "only one of distribute, failover or failoverPriority may be set")
    for i, dist in enumerate(lb.get("distribute") or []):
        p = f"{path}.distribute[{i}]"
        if dist.get("from"):
            _locality(dist["from"], f"{p}.from", r)
        total = 0
        for loc, weight in (dist.get("to") or {}).items():
            _locality(loc, f"{p}.to[{loc}]", r)
            if not 1 <= weight <= 100:
                r.invalid(f"{p}.to[{loc}]", weight, "locality weight must be in range [1, 100]")
            total += weight
        if total != 100:
            r.invalid(f"{p}.to", total, f"total locality weight {total} != 100")
    for i, fo in enumerate(lb.get("failover") or []):
        p = f"{path}.failover[{i}]"
        src, dst = fo.get("from", ""), fo.get("to", "")
        if src == dst:
            r.invalid(p, fo, "locality lb failover settings must specify different regions")
        for key, value in (("from", src), ("to", dst)):
            if "/" in value:
                r.invalid(f"{p}.{key}", value, "locality lb failover only specifies a region")
            if "*" in value:
                r.invalid(f"{p}.{key}", value, "locality lb failover region should not contain '*' wildcard")
    for i, label in enumerate(lb.get("failoverPriority") or []):
        key = label.split("=", 1)[0]
        err = fmt.qualified_name(key)
        if err:
            r.invalid(f"{path}.failoverPriority[{i}]", label, err)
    if (lb.get("failover") or lb.get("failoverPriority")) and not has_outlier:
        r.warn(f"{path}: locality failover has no effect without outlierDetection: set outlierDetection in the "
               "same traffic policy so unhealthy endpoints are ejected and traffic fails over")


def _load_balancer(lb: J, path: str, r: Report, *, has_outlier: bool) -> None:
    if "simple" in lb and "consistentHash" in lb:
        r.invalid(path, lb, "only one of simple or consistentHash may be set")
    ch = lb.get("consistentHash")
    if ch is not None:
        p = f"{path}.consistentHash"
        keys = [k for k in ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName") if k in ch]
        if len(keys) > 1:
            r.invalid(p, keys, "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName "
                      "may be set")
        elif not keys:
            r.required(p, "one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required")
        cookie = ch.get("httpCookie")
        if cookie is not None:
            if not cookie.get("name"):
                r.required(f"{p}.httpCookie.name")
            c.duration_at(cookie, "ttl", f"{p}.httpCookie", r, minimum_ms=0)
        if ch.get("minimumRingSize"):
            r.warn(f"{p}.minimumRingSize: consistent hash minimumRingSize is deprecated, use ringHash instead")
            if "maglev" in ch or "ringHash" in ch:
                r.invalid(f"{p}.minimumRingSize", ch["minimumRingSize"],
                          "only one of minimumRingSize, maglev or ringHash may be set")
        if "maglev" in ch and "ringHash" in ch:
            r.invalid(p, ch, "only one of maglev or ringHash may be set")
        maglev = ch.get("maglev")
        if maglev is not None:
            size = maglev.get("tableSize") or 0
            if size == 0:
                r.required(f"{p}.maglev.tableSize", "tableSize must be set for maglev")
            elif size >= 5000011 or not _is_prime(int(size)):
                r.invalid(f"{p}.maglev.tableSize", size, "tableSize must be a prime number less than 5000011")
    if lb.get("localityLbSetting"):
        _locality_lb(lb["localityLbSetting"], f"{path}.localityLbSetting", r, has_outlier=has_outlier)
    c.duration_at(lb, "warmupDurationSecs", path, r)
    if lb.get("warmup"):
        c.duration_at(lb["warmup"], "duration", f"{path}.warmup", r)


def _outlier(od: J, path: str, r: Report) -> None:
    c.duration_at(od, "baseEjectionTime", path, r)
    c.duration_at(od, "interval", path, r)
    if od.get("consecutiveErrors"):
        r.deprecated(f"{path}.consecutiveErrors", "consecutiveErrors", "consecutive5xxErrors")
    if od.get("consecutiveLocalOriginFailures") and not od.get("splitExternalLocalOriginErrors"):
        r.invalid(f"{path}.consecutiveLocalOriginFailures", od["consecutiveLocalOriginFailures"],
                  "requires splitExternalLocalOriginErrors: true")
    c.percent_at(od, "maxEjectionPercent", path, r)
    c.percent_at(od, "minHealthPercent", path, r)


def connection_pool(cp: J, path: str, r: Report) -> None:
    http, tcp = cp.get("http"), cp.get("tcp")
    if http is None and tcp is None:
        r.required(path, "connection pool must have at least one of tcp or http")
    if http is not None:
        p = f"{path}.http"
        c.non_negative(http, ("http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection",
                              "maxRetries", "maxConcurrentStreams"), p, r)
        c.duration_at(http, "idleTimeout", p, r)
        if http.get("h2UpgradePolicy") == "UPGRADE" and http.get("useClientProtocol"):
            r.invalid(f"{p}.useClientProtocol", True, "must not be true when h2UpgradePolicy is UPGRADE")
    if tcp is not None:
        p = f"{path}.tcp"
        c.non_negative(tcp, ("maxConnections",), p, r)
        for key in ("connectTimeout", "maxConnectionDuration", "idleTimeout"):
            c.duration_at(tcp, key, p, r)
        ka = tcp.get("tcpKeepalive")
        if ka:
            c.duration_at(ka, "time", f"{p}.tcpKeepalive", r)
            c.duration_at(ka, "interval", f"{p}.tcpKeepalive", r)


_CLIENT_CERT_FIELDS = ("clientCertificate", "privateKey", "caCertificates", "credentialName", "caCrl")


def _client_tls(tls: J, path: str, r: Report) -> None:
    mode = tls.get("mode", "DISABLE")
    if mode in ("DISABLE", "ISTIO_MUTUAL"):
        for key in _CLIENT_CERT_FIELDS:
            if tls.get(key):
                r.forbidden(f"{path}.{key}", f"may not be set when mode is {mode}")
        return
    if tls.get("insecureSkipVerify"):
        for key in ("caCertificates", "subjectAltNames") + (("credentialName",) if mode == "SIMPLE" else ()):
            if tls.get(key):
                r.forbidden(f"{path}.{key}", "may not be set when insecureSkipVerify is true")
    if tls.get("credentialName"):
        for key in ("clientCertificate", "privateKey", "caCertificates", "caCrl"):
            if tls.get(key):
                r.forbidden(f"{path}.{key}", "may not be set together with credentialName")
        return
    if mode == "MUTUAL":
        for key in ("clientCertificate", "privateKey"):
            if not tls.get(key):
                r.required(f"{path}.{key}", "required for MUTUAL tls without credentialName")


def _traffic_policy(tp: J, path: str, r: Report, *, port_level: bool = False) -> None:
    fields = ("outlierDetection", "connectionPool", "loadBalancer", "tls", "portLevelSettings", "tunnel",
              "proxyProtocol")
    if not any(tp.get(k) is not None for k in fields):
        r.required(path, "traffic policy must have at least one field")
        return
    if tp.get("tunnel") is not None and tp.get("proxyProtocol") is not None:
        r.forbidden(f"{path}.proxyProtocol", "may not be set together with tunnel")
    has_outlier = tp.get("outlierDetection") is not None
    if has_outlier:
        _outlier(tp["outlierDetection"], f"{path}.outlierDetection", r)
    if tp.get("connectionPool") is not None:
        connection_pool(tp["connectionPool"], f"{path}.connectionPool", r)
    if tp.get("loadBalancer") is not None:
        _load_balancer(tp["loadBalancer"], f"{path}.loadBalancer", r, has_outlier=has_outlier)
    if tp.get("tls") is not None:
        _client_tls(tp["tls"], f"{path}.tls", r)
    tunnel = tp.get("tunnel")
    if tunnel is not None:
        p = f"{path}.tunnel"
        proto = tunnel.get("protocol")
        if proto not in (None, "", "CONNECT", "POST"):
            r.not_supported(f"{p}.protocol", proto, ["CONNECT", "POST"])
        target = tunnel.get("targetHost", "")
        if fmt.fqdn(target) and fmt.ip_address(target):
            r.invalid(f"{p}.targetHost", target, "tunnel target host must be a valid FQDN or IP address")
        c.port_at(tunnel, "targetPort", p, r)
    for i, pls in enumerate(tp.get("portLevelSettings") or []):
        p = f"{path}.portLevelSettings[{i}]"
        if not pls.get("port"):
            r.required(f"{p}.port", "port traffic policy must have a port")
        else:
            c.port_at(pls["port"], "number", f"{p}.port", r)
        if not any(pls.get(k) is not None for k in ("outlierDetection", "connectionPool", "loadBalancer", "tls")):
            r.required(p, "port traffic policy must have at least one field")
        else:
            _traffic_policy(pls, p, r, port_level=True)


def destination_rule(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    host = spec.get("host")
    if isinstance(host, str):
        err = fmt.wildcard_domain(host)
        if err:
            r.invalid("spec.host", host, err)
    if spec.get("trafficPolicy") is not None:
        _traffic_policy(spec["trafficPolicy"], "spec.trafficPolicy", r)
    seen: set[str] = set()
    for i, subset in enumerate(spec.get("subsets") or []):
        p = f"spec.subsets[{i}]"
        name = subset.get("name", "")
        if name in seen:
            r.duplicate(f"{p}.name", name)
        seen.add(name)
        c.subset_name(name, f"{p}.name", r)
        if not subset.get("labels"):
            r.required(f"{p}.labels", "a subset selects endpoints by labels")
        check_labels(subset.get("labels"), f"{p}.labels", r)
        if subset.get("trafficPolicy") is not None:
            _traffic_policy(subset["trafficPolicy"], f"{p}.trafficPolicy", r)
    selector = spec.get("workloadSelector")
    c.workload_selector(selector, "spec.workloadSelector", r)
    namespace = _namespace(obj)
    c.export_to(spec.get("exportTo"), "spec.exportTo", r, namespace=namespace, service_entry=False)
    export = spec.get("exportTo") or []
    if selector is not None and export and any(e not in (".", namespace) for e in export):
        r.invalid("spec.exportTo", export,
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


def _server_tls(tls: J, path: str, r: Report) -> None:
    mode = tls.get("mode", "PASSTHROUGH")
    if mode == "ISTIO_MUTUAL":
        for key in ("serverCertificate", "privateKey", "caCertificates", "credentialName"):
            if tls.get(key):
                r.forbidden(f"{path}.{key}", "ISTIO_MUTUAL TLS cannot have associated certificates")
        return
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH"):
        if any(tls.get(k) for k in ("serverCertificate", "privateKey", "caCertificates", "credentialName", "caCrl")):
            r.warn(f"{path}: {mode} mode does not use certificates, they will be ignored")
        return
    credential = tls.get("credentialName")
    if credential:
        for key in ("serverCertificate", "privateKey"):
            if tls.get(key):
                r.forbidden(f"{path}.{key}", "may not be set together with credentialName")
        if tls.get("caCrl"):
            r.forbidden(f"{path}.caCrl", "CRL is not supported with credentialName: put it in the credential")
        return
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
        for key in ("serverCertificate", "privateKey"):
            if not tls.get(key):
                r.required(f"{path}.{key}", f"{mode} TLS requires credentialName or serverCertificate and "
                           "privateKey")
    if mode in ("MUTUAL", "OPTIONAL_MUTUAL") and not tls.get("caCertificates"):
        r.required(f"{path}.caCertificates", f"{mode} TLS requires a client CA bundle")
    if mode == "SIMPLE" and tls.get("caCrl"):
        r.forbidden(f"{path}.caCrl", "CRL is not supported with SIMPLE TLS")


def gateway(obj: J, r: Report) -> None:
    name = (obj.get("metadata") or {}).get("name")
    if isinstance(name, str) and name and fmt.dns1123_label(name):
        r.invalid("metadata.name", name, "a Gateway's name must be a DNS-1123 label (no dots)")
    spec: J = obj.get("spec") or {}
    servers: list[J] = spec.get("servers") or []
    if not servers:
        r.required("spec.servers", "gateway must have at least one server")
    port_names: set[str] = set()
    for i, server in enumerate(servers):
        p = f"spec.servers[{i}]"
        hosts = server.get("hosts") or []
        if not hosts:
            r.required(f"{p}.hosts", "server config must contain at least one host")
        for j, host in enumerate(hosts):
            _gateway_host(host, f"{p}.hosts[{j}]", r, sidecar=False)
        port: J = server.get("port") or {}
        bind = server.get("bind") or ""
        protocol = str(port.get("protocol", ""))
        err = c.protocol_error(protocol)
        if err:
            r.not_supported(f"{p}.port.protocol", protocol, sorted(c.PROTOCOLS))
        if port.get("number") or not bind.startswith("unix://"):
            c.port_at(port, "number", f"{p}.port", r)
        if port.get("targetPort"):
            r.forbidden(f"{p}.port.targetPort", "targetPort has no impact on Gateways")
        pname = port.get("name", "")
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
        tls = server.get("tls")
        upper = protocol.upper()
        if upper in c.TLS_PROTOCOLS and tls is None:
            r.required(f"{p}.tls", "server must have TLS settings for HTTPS/TLS protocols")
        elif tls is not None and upper not in c.TLS_PROTOCOLS:
            if upper in c.HTTP_PROTOCOLS:
                if any(tls.get(k) for k in ("serverCertificate", "privateKey", "caCertificates", "credentialName")):
                    r.forbidden(f"{p}.tls", "server cannot have TLS settings for plain text HTTP ports "
                                "(only httpsRedirect)")
            else:
                r.forbidden(f"{p}.tls", "server cannot have TLS settings for non HTTPS/TLS ports")
        if tls is not None:
            if tls.get("httpsRedirect") and upper not in c.HTTP_PROTOCOLS:
                r.warn(f"{p}.tls.httpsRedirect: should only be used with http servers")
            if upper in c.TLS_PROTOCOLS:
                _server_tls(tls, f"{p}.tls", r)


# --- ServiceEntry, WorkloadEntry, WorkloadGroup ---------------------------------------------------------------


def _workload_endpoint(we: J, path: str, r: Report, *, service_ports: set[str] | None, allow_fqdn: bool) -> None:
    address = we.get("address") or ""
    if not address:
        if not we.get("network"):
            r.required(f"{path}.address", "address is required (or a network reached through its gateway)")
        else:
            r.warn(f"{path}.address: address is unset with network {we['network']!r}")
    if address.startswith("unix://"):
        err = fmt.unix_address(address[len("unix://"):])
        if err:
            r.invalid(f"{path}.address", address, err)
        if we.get("ports"):
            r.forbidden(f"{path}.ports", "unix endpoints must not include ports")
    elif address and not fmt.is_ip(address):
        if not allow_fqdn:
            r.invalid(f"{path}.address", address, "must be a valid IP address")
        elif fmt.fqdn(address):
            r.invalid(f"{path}.address", address, "must be a valid FQDN or IP address")
    for name, number in (we.get("ports") or {}).items():
        p = f"{path}.ports[{name}]"
        if service_ports is not None and name not in service_ports:
            r.invalid(p, name, "endpoint port is not defined by the service entry")
        err = fmt.dns1123_label(name)
        if err:
            r.invalid(p, name, "invalid port name: " + err)
        err = fmt.port(int(number))
        if err:
            r.invalid(p, number, err)
    check_labels(we.get("labels"), f"{path}.labels", r)


def service_entry(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    hosts: list[str] = spec.get("hosts") or []
    if "hosts" in spec and not hosts:
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
    resolution = spec.get("resolution", "NONE")
    for i, address in enumerate(spec.get("addresses") or []):
        err = fmt.ip_or_cidr(address)
        if err:
            r.invalid(f"spec.addresses[{i}]", address, err)
        elif "/" in address and resolution not in ("NONE", "STATIC"):
            r.invalid(f"spec.addresses[{i}]", address, "CIDR addresses are allowed only for NONE/STATIC resolution")
    names: set[str] = set()
    numbers: set[int] = set()
    ports: list[J] = spec.get("ports") or []
    for i, port in enumerate(ports):
        p = f"spec.ports[{i}]"
        name, number = port.get("name", ""), port.get("number", 0)
        if name in names:
            r.duplicate(f"{p}.name", name)
        names.add(name)
        if number in numbers:
            r.duplicate(f"{p}.number", number)
        numbers.add(number)
        err = fmt.dns1123_label(name)
        if err:
            r.invalid(f"{p}.name", name, "invalid port name: " + err)
        c.port_at(port, "number", p, r)
        if port.get("targetPort"):
            c.port_at(port, "targetPort", p, r)
        protocol = port.get("protocol")
        if protocol and c.protocol_error(protocol):
            r.not_supported(f"{p}.protocol", protocol, sorted(c.PROTOCOLS))
    endpoints = spec.get("endpoints")
    if spec.get("workloadSelector") is not None and endpoints is not None:
        r.forbidden("spec.endpoints", "only one of workloadSelector or endpoints may be set")
    c.workload_selector(spec.get("workloadSelector"), "spec.workloadSelector", r, key="labels")
    endpoints = endpoints or []
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
        for i, port in enumerate(ports):
            proto = str(port.get("protocol", "")).upper()
            if proto not in c.HTTP_PROTOCOLS and proto not in c.TLS_PROTOCOLS:
                r.invalid(f"spec.ports[{i}].protocol", port.get("protocol", ""),
                          "multiple hosts need HTTP or TLS ports (plain TCP cannot tell the hosts apart)")
                break
    c.export_to(spec.get("exportTo"), "spec.exportTo", r, namespace=_namespace(obj), service_entry=True)


def workload_entry(obj: J, r: Report) -> None:
    _workload_endpoint(obj.get("spec") or {}, "spec", r, service_ports=None, allow_fqdn=True)


def workload_group(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    meta = spec.get("metadata") or {}
    check_labels(meta.get("labels"), "spec.metadata.labels", r)
    template = spec.get("template") or {}
    for name, number in (template.get("ports") or {}).items():
        err = fmt.port(int(number))
        if err:
            r.invalid(f"spec.template.ports[{name}]", number, err)
    probe = spec.get("probe")
    if probe is None:
        return
    c.non_negative(probe, ("periodSeconds", "initialDelaySeconds", "timeoutSeconds", "successThreshold",
                           "failureThreshold"), "spec.probe", r)
    methods = [k for k in ("httpGet", "tcpSocket", "exec") if probe.get(k) is not None]
    if not methods:
        r.required("spec.probe", "one of httpGet, tcpSocket or exec is required")
    elif len(methods) > 1:
        r.invalid("spec.probe", methods, "only one of httpGet, tcpSocket or exec may be set")
    http = probe.get("httpGet")
    if http is not None:
        c.port_at(http, "port", "spec.probe.httpGet", r)
        scheme = http.get("scheme")
        if scheme and scheme not in ("HTTP", "HTTPS"):
            r.not_supported("spec.probe.httpGet.scheme", scheme, ["HTTP", "HTTPS"])
        for i, header in enumerate(http.get("httpHeaders") or []):
            err = fmt.header_name(header.get("name", ""))
            if err:
                r.invalid(f"spec.probe.httpGet.httpHeaders[{i}].name", header.get("name", ""), err)
    if probe.get("tcpSocket") is not None:
        c.port_at(probe["tcpSocket"], "port", "spec.probe.tcpSocket", r)
    if probe.get("exec") is not None and not probe["exec"].get("command"):
        r.required("spec.probe.exec.command")


# --- Sidecar -----------------------------------------------------------------------------------------------


def _sidecar_port(port: J, bind: str, path: str, r: Report, *, egress: bool, capture: str) -> None:
    name = port.get("name")
    if name:
        err = fmt.dns1123_label(name)
        if err:
            r.invalid(f"{path}.name", name, "invalid port name: " + err)
    protocol = port.get("protocol")
    if protocol and c.protocol_error(protocol):
        r.not_supported(f"{path}.protocol", protocol, sorted(c.PROTOCOLS))
    if port.get("targetPort"):
        r.forbidden(f"{path}.targetPort", "targetPort has no impact on Sidecars")
    if egress and not port.get("number"):
        if not bind.startswith("unix://"):
            r.invalid(f"{path}.number", 0, "ports with 0 value must have a unix domain socket bind address")
        if capture not in ("", "DEFAULT", "NONE"):
            r.invalid(f"{path}.number", 0, "captureMode must be DEFAULT/NONE for unix domain socket listeners")
        return
    c.port_at(port, "number", path, r)


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


def sidecar(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    c.workload_selector(spec.get("workloadSelector"), "spec.workloadSelector", r, key="labels")
    ingress: list[J] = spec.get("ingress") or []
    egress: list[J] = spec.get("egress") or []
    if not (ingress or egress or spec.get("outboundTrafficPolicy") or spec.get("inboundConnectionPool")):
        r.required("spec.egress", "sidecar: empty configuration provided")
    numbers: set[int] = set()
    for i, listener in enumerate(ingress):
        p = f"spec.ingress[{i}]"
        port = listener.get("port") or {}
        bind = listener.get("bind") or ""
        _sidecar_port(port, bind, f"{p}.port", r, egress=False, capture="")
        if port.get("number") in numbers:
            r.duplicate(f"{p}.port.number", port.get("number"))
        numbers.add(port.get("number", 0))
        if bind:
            err = fmt.ip_address(bind)
            if err:
                r.invalid(f"{p}.bind", bind, err)
        if listener.get("defaultEndpoint"):
            _default_endpoint(listener["defaultEndpoint"], f"{p}.defaultEndpoint", r)
        tls = listener.get("tls")
        if tls is not None:
            for key, why in (("subjectAltNames", "subjectAltNames is not supported in ingress tls"),
                             ("httpsRedirect", "httpsRedirect is not supported"),
                             ("credentialName", "credentialName is not currently supported")):
                if tls.get(key):
                    r.forbidden(f"{p}.tls.{key}", why)
            if tls.get("mode") in ("ISTIO_MUTUAL", "AUTO_PASSTHROUGH"):
                r.not_supported(f"{p}.tls.mode", tls["mode"], ["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"])
            else:
                _server_tls(tls, f"{p}.tls", r)
        if listener.get("connectionPool") is not None:
            connection_pool(listener["connectionPool"], f"{p}.connectionPool", r)
    if spec.get("inboundConnectionPool") is not None:
        connection_pool(spec["inboundConnectionPool"], "spec.inboundConnectionPool", r)
    numbers = set()
    catch_all = False
    for i, listener in enumerate(egress):
        p = f"spec.egress[{i}]"
        port = listener.get("port")
        bind = listener.get("bind") or ""
        if port is None:
            if catch_all:
                r.invalid(f"{p}.port", None, "egress can have only one listener without a port")
            elif i != len(egress) - 1:
                r.invalid(f"{p}.port", None, "the egress listener without a port must be the last one")
            catch_all = True
        else:
            _sidecar_port(port, bind, f"{p}.port", r, egress=True, capture=listener.get("captureMode", ""))
            number = port.get("number", 0)
            if number and number in numbers:
                r.duplicate(f"{p}.port.number", number)
            numbers.add(number)
            if bind and not bind.startswith("unix://"):
                err = fmt.ip_address(bind)
                if err:
                    r.invalid(f"{p}.bind", bind, err)
        hosts = listener.get("hosts") or []
        if not hosts:
            r.required(f"{p}.hosts", "egress listener must contain at least one host")
        for j, host in enumerate(hosts):
            _gateway_host(host, f"{p}.hosts[{j}]", r, sidecar=True)
    otp = spec.get("outboundTrafficPolicy")
    if otp is not None and otp.get("egressProxy") is not None:
        p = "spec.outboundTrafficPolicy.egressProxy"
        if otp.get("mode") != "ALLOW_ANY":
            r.forbidden(p, "egressProxy may only be set with outboundTrafficPolicy mode ALLOW_ANY")
        proxy = otp["egressProxy"]
        err = fmt.fqdn(proxy.get("host", ""))
        if err:
            r.invalid(f"{p}.host", proxy.get("host", ""), err)
        if proxy.get("port") is None:
            r.required(f"{p}.port")
        else:
            c.destination(proxy, p, r)


# --- EnvoyFilter ---------------------------------------------------------------------------------------------


def envoy_filter(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    if spec.get("workloadSelector") is not None and spec.get("targetRefs"):
        r.forbidden("spec.targetRefs", "only one of workloadSelector or targetRefs may be set")
    c.workload_selector(spec.get("workloadSelector"), "spec.workloadSelector", r, key="labels")
    for i, ref in enumerate(spec.get("targetRefs") or []):
        if not ref.get("name"):
            r.required(f"spec.targetRefs[{i}].name")
    for i, cp in enumerate(spec.get("configPatches") or []):
        p = f"spec.configPatches[{i}]"
        if not cp.get("applyTo") or cp.get("applyTo") == "INVALID":
            r.required(f"{p}.applyTo", "the object to patch is required")
        patch = cp.get("patch")
        if patch is None:
            r.required(f"{p}.patch")
            continue
        op = patch.get("operation")
        if not op or op == "INVALID":
            r.required(f"{p}.patch.operation")
        elif op != "REMOVE" and patch.get("value") is None:
            r.required(f"{p}.patch.value", f"operation {op} needs a value")
        proxy = (cp.get("match") or {}).get("proxy") or {}
        version = proxy.get("proxyVersion")
        if version:
            err = fmt.re2(version)
            if err:
                r.invalid(f"{p}.match.proxy.proxyVersion", version, err)
