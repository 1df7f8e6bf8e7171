"""VirtualService HTTP routes -> Envoy routes: matches, destinations and weights, redirects, direct responses,
rewrites, retries, timeouts, faults, mirroring, headers, CORS, consistent-hash policies, delegation.

Istio's semantics kept here: a route's ``match`` list is an OR (one Envoy route each), the first matching route
wins, a match without ``uri`` matches every path, a destination names host (short names resolve in the
VirtualService's namespace), optional port (required only when the service has several) and subset. Unlike
Istio, a destination the proxy has no cluster for (unknown host, port or subset) goes to ``BlackHoleCluster``
instead of a cluster name Envoy does not know: the request fails the same way (503), the config stays valid.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2

from meshplane.model import spec as istio
from meshplane.model.proxy import Proxy
from meshplane.translate import fallback
from meshplane.translate.common import BLACKHOLE, cluster_name, duration, duration_of, fraction, pack, proto_duration
from meshplane.translate.context import PushContext, VirtualServiceRec
from meshplane.translate.hosts import resolve_host
from meshplane.translate.policy import consistent_hash, effective_policy

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
# Attempts in one priority before retries move on to the next. 1: with Istio's default of 2 retries, a failed
# local attempt is retried in the next-nearest priority, then the one after (a dead local host is ejected by the
# default outlier detection, so retrying it is rarely worth an attempt).
RETRY_PRIORITY_UPDATE_FREQUENCY = 1
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


@dataclass(frozen=True, slots=True)
class RouteScope:
    """Where the routes are generated: for which proxy, port, gateways ("mesh" or "ns/name") and clusters."""

    proxy: Proxy
    ctx: PushContext
    port: int
    gateways: frozenset[str]
    clusters: Collection[str]


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=pattern)


def string_match(spec: Mapping[str, Any], ignore_case: bool = False) -> string_pb2.StringMatcher | None:
    if "exact" in spec:
        return string_pb2.StringMatcher(exact=str(spec["exact"]), ignore_case=ignore_case)
    if "prefix" in spec:
        return string_pb2.StringMatcher(prefix=str(spec["prefix"]), ignore_case=ignore_case)
    if "regex" in spec:
        return string_pb2.StringMatcher(safe_regex=_regex(str(spec["regex"])))
    return None


def _header_matcher(name: str, spec: Any, invert: bool = False) -> rc.HeaderMatcher:
    hm = rc.HeaderMatcher(name=name, invert_match=invert)
    sm = string_match(spec) if isinstance(spec, Mapping) else None
    if sm is None:
        hm.present_match = True
    else:
        hm.string_match.CopyFrom(sm)
    return hm


def route_match(m: Mapping[str, Any] | None) -> rc.RouteMatch:
    m = m or {}
    out = rc.RouteMatch()
    uri = m.get("uri") or {}
    ignore = bool(m.get("ignoreUriCase"))
    if "exact" in uri:
        out.path = str(uri["exact"])
    elif "prefix" in uri:
        out.prefix = str(uri["prefix"])
    elif "regex" in uri:
        out.safe_regex.CopyFrom(_regex(str(uri["regex"])))
    else:
        out.prefix = "/"
    if ignore:
        out.case_sensitive.value = False
    for name, spec in sorted((m.get("headers") or {}).items()):
        out.headers.append(_header_matcher(str(name).lower(), spec))
    for name, spec in sorted((m.get("withoutHeaders") or {}).items()):
        out.headers.append(_header_matcher(str(name).lower(), spec, invert=True))
    for pseudo, key in ((":method", "method"), (":authority", "authority"), (":scheme", "scheme")):
        if isinstance(m.get(key), Mapping):
            out.headers.append(_header_matcher(pseudo, m[key]))
    for name, spec in sorted((m.get("queryParams") or {}).items()):
        qp = rc.QueryParameterMatcher(name=str(name))
        sm = string_match(spec) if isinstance(spec, Mapping) else None
        if sm is None:
            qp.present_match = True
        else:
            qp.string_match.CopyFrom(sm)
        out.query_parameters.append(qp)
    return out


def _match_applies(m: Mapping[str, Any] | None, scope: RouteScope, vs_gateways: Collection[str]) -> bool:
    if not m:
        return True
    port = m.get("port")
    if port and scope.port and int(port) != scope.port:
        return False
    labels = m.get("sourceLabels") or {}
    if any(scope.proxy.labels.get(str(k)) != str(v) for k, v in labels.items()):
        return False
    src_ns = m.get("sourceNamespace")
    if src_ns and src_ns != scope.proxy.namespace:
        return False
    gws = m.get("gateways")
    if gws:
        resolved = {g if g == "mesh" or "/" in g else f"{scope.proxy.namespace}/{g}" for g in gws}
        # Gateway names in a match resolve like the VirtualService's own; accept either resolution.
        if not (scope.gateways & resolved) and not (scope.gateways & set(gws)):
            return False
    return True


def _header_options(spec: Mapping[str, Any] | None) -> tuple[list[base_pb2.HeaderValueOption], list[str]]:
    adds: list[base_pb2.HeaderValueOption] = []
    removes: list[str] = []
    if not spec:
        return adds, removes
    for key, action in (("set", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
                        ("add", base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)):
        for name, value in sorted((spec.get(key) or {}).items()):
            adds.append(base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=str(name), value=str(value)), append_action=action))
    removes.extend(str(n) for n in spec.get("remove") or [])
    return adds, removes


def destination_cluster(dest: Mapping[str, Any], vs_namespace: str, scope: RouteScope) -> str:
    """The cluster a destination names, or BlackHoleCluster when this proxy has no such cluster."""
    ctx = scope.ctx
    host = resolve_host(str(dest.get("host") or ""), vs_namespace, ctx.mesh.domain_suffix)
    svc = ctx.service(host)
    if svc is None:
        return BLACKHOLE
    port_no = int((dest.get("port") or {}).get("number") or 0)
    if not port_no:
        if len(svc.ports) == 1:
            port_no = svc.ports[0].number
        elif svc.port(scope.port) is not None:
            port_no = scope.port
        elif svc.ports:
            port_no = svc.ports[0].number
    name = cluster_name("outbound", port_no, str(dest.get("subset") or ""), host)
    return name if name in scope.clusters else BLACKHOLE


def _retry(retries: Mapping[str, Any] | None, scope: RouteScope) -> rc.RetryPolicy | None:
    attempts = scope.ctx.mesh.default_retry_attempts
    retry_on = DEFAULT_RETRY_ON
    per_try = None
    codes: list[int] = [503]
    if retries is not None:
        attempts = int(retries.get("attempts") or 0)
        if retries.get("retryOn"):
            parts = [p.strip() for p in str(retries["retryOn"]).split(",") if p.strip()]
            codes = [int(p) for p in parts if p.isdigit()]
            named = [p for p in parts if not p.isdigit()]
            if codes and "retriable-status-codes" not in named:
                named.append("retriable-status-codes")
            retry_on = ",".join(named)
        per_try = duration_of(retries.get("perTryTimeout"))
    if attempts <= 0:
        return None
    pol = rc.RetryPolicy(retry_on=retry_on, host_selection_retry_max_attempts=5)
    pol.num_retries.value = attempts
    pol.retriable_status_codes.extend(codes)
    if per_try is not None:
        pol.per_try_timeout.CopyFrom(per_try)
    pred = pol.retry_host_predicate.add()
    pred.name = "envoy.retry_host_predicates.previous_hosts"
    pred.typed_config.CopyFrom(pack(previous_hosts_pb2.PreviousHostsPredicate()))
    if scope.ctx.mesh.locality_lb_enabled:
        # Locality failover within one request: a retry after a failure in the nearest priority (e.g. the local
        # zone, whose one instance just died) goes to the next priority instead of the same dead host again
        # (Envoy's previous_priorities; single-priority clusters are unaffected).
        prio = pol.retry_priority
        prio.name = "envoy.retry_priorities.previous_priorities"
        prio.typed_config.CopyFrom(pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(
            update_frequency=RETRY_PRIORITY_UPDATE_FREQUENCY)))
    return pol


def _percentage(spec: Mapping[str, Any], new: str, old: str) -> percent_pb2.FractionalPercent:
    """Istio's ``percentage.value`` (0-100, fractional), else the deprecated integer ``percent``; 100 if none."""
    p = spec.get(new)
    if isinstance(p, Mapping) and p.get("value") is not None:
        return fraction(float(p["value"]))
    if spec.get(old) is not None:
        return percent_pb2.FractionalPercent(numerator=int(spec[old]),
                                             denominator=percent_pb2.FractionalPercent.HUNDRED)
    return fraction(100.0)


def fault_config(fault: Mapping[str, Any]) -> fault_pb2.HTTPFault | None:
    out = fault_pb2.HTTPFault()
    delay = fault.get("delay")
    if isinstance(delay, Mapping):
        fixed = duration_of(delay.get("fixedDelay"))
        if fixed is not None:
            out.delay.CopyFrom(common_fault_pb2.FaultDelay(fixed_delay=fixed,
                                                           percentage=_percentage(delay, "percentage", "percent")))
    abort = fault.get("abort")
    if isinstance(abort, Mapping):
        fa = fault_pb2.FaultAbort(percentage=_percentage(abort, "percentage", "percent"))
        if abort.get("httpStatus") is not None:
            fa.http_status = int(abort["httpStatus"])
            out.abort.CopyFrom(fa)
        elif abort.get("grpcStatus") is not None:
            grpc = abort["grpcStatus"]
            fa.grpc_status = int(grpc) if str(grpc).isdigit() else _GRPC_CODES.get(str(grpc), 2)
            out.abort.CopyFrom(fa)
    if not out.HasField("delay") and not out.HasField("abort"):
        return None
    return out


_GRPC_CODES = {"CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
               "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
               "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
               "DATA_LOSS": 15, "UNAUTHENTICATED": 16}


def cors_config(cors: Mapping[str, Any]) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy()
    for o in cors.get("allowOrigins") or []:
        sm = string_match(o) if isinstance(o, Mapping) else None
        if sm is not None:
            out.allow_origin_string_match.append(sm)
    for o in cors.get("allowOrigin") or []:  # deprecated: exact strings
        out.allow_origin_string_match.append(string_pb2.StringMatcher(exact=str(o)))
    if cors.get("allowMethods"):
        out.allow_methods = ",".join(map(str, cors["allowMethods"]))
    if cors.get("allowHeaders"):
        out.allow_headers = ",".join(map(str, cors["allowHeaders"]))
    if cors.get("exposeHeaders"):
        out.expose_headers = ",".join(map(str, cors["exposeHeaders"]))
    age = duration_of(cors.get("maxAge"))
    if age is not None:
        out.max_age = str(age.seconds)
    if cors.get("allowCredentials") is not None:
        out.allow_credentials.value = bool(cors["allowCredentials"])
    return out


def _hash_policies(ch: istio.ConsistentHashLB) -> list[rc.RouteAction.HashPolicy]:
    hp = rc.RouteAction.HashPolicy()
    if ch.http_header_name:
        hp.header.header_name = ch.http_header_name
    elif ch.http_cookie is not None:
        cookie = ch.http_cookie
        hp.cookie.name = cookie.name or ""
        if cookie.path:
            hp.cookie.path = cookie.path
        if cookie.ttl is not None:
            hp.cookie.ttl.CopyFrom(proto_duration(cookie.ttl))
    elif ch.use_source_ip:
        hp.connection_properties.source_ip = True
    elif ch.http_query_parameter_name:
        hp.query_parameter.name = ch.http_query_parameter_name
    else:
        return []
    return [hp]


def _with_fallback(d: Mapping[str, Any], vs: VirtualServiceRec, scope: RouteScope) -> str:
    """The destination's cluster, or the aggregate of it and its ``fallback`` target (ASM; see ``fallback``)."""
    primary = destination_cluster(d.get("destination") or {}, vs.namespace, scope)
    return fallback.choose(primary, d, vs.namespace, scope.ctx, scope.port, scope.clusters)


def _route_action(http: Mapping[str, Any], vs: VirtualServiceRec, scope: RouteScope, route: rc.Route) -> None:
    dests = [d for d in http.get("route") or [] if isinstance(d, Mapping)]
    action = route.route
    if len(dests) == 1:
        d = dests[0]
        action.cluster = _with_fallback(d, vs, scope)
        adds, removes = _header_options((d.get("headers") or {}).get("request"))
        route.request_headers_to_add.extend(adds)
        route.request_headers_to_remove.extend(removes)
        adds, removes = _header_options((d.get("headers") or {}).get("response"))
        route.response_headers_to_add.extend(adds)
        route.response_headers_to_remove.extend(removes)
    else:
        weights = [int(d.get("weight") or 0) for d in dests]
        if sum(weights) == 0:
            weights = [100] + [0] * (len(dests) - 1)
        for d, w in zip(dests, weights, strict=True):
            cw = action.weighted_clusters.clusters.add()
            cw.name = _with_fallback(d, vs, scope)
            cw.weight.value = w
            adds, removes = _header_options((d.get("headers") or {}).get("request"))
            cw.request_headers_to_add.extend(adds)
            cw.request_headers_to_remove.extend(removes)
            adds, removes = _header_options((d.get("headers") or {}).get("response"))
            cw.response_headers_to_add.extend(adds)
            cw.response_headers_to_remove.extend(removes)
    timeout = duration_of(http.get("timeout"))
    action.timeout.CopyFrom(timeout if timeout is not None else duration(0))
    retry = _retry(http.get("retries"), scope)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    rw = http.get("rewrite") or {}
    if rw.get("uri") is not None:
        action.prefix_rewrite = str(rw["uri"])
    if rw.get("authority"):
        action.host_rewrite_literal = str(rw["authority"])
    urr = http.get("rewrite", {}).get("uriRegexRewrite") if isinstance(http.get("rewrite"), Mapping) else None
    if isinstance(urr, Mapping) and urr.get("match"):
        action.regex_rewrite.pattern.regex = str(urr["match"])
        action.regex_rewrite.substitution = str(urr.get("rewrite") or "")
    mirrors = list(http.get("mirrors") or [])
    if isinstance(http.get("mirror"), Mapping):
        mirrors.insert(0, {"destination": http["mirror"], "percentage": http.get("mirrorPercentage"),
                           "percent": http.get("mirrorPercent", http.get("mirror_percent"))})
    for m in mirrors:
        if not isinstance(m, Mapping):
            continue
        cname = destination_cluster(m.get("destination") or {}, vs.namespace, scope)
        if cname == BLACKHOLE:
            continue
        mp = action.request_mirror_policies.add()
        mp.cluster = cname
        pct = m.get("percentage")
        if isinstance(pct, Mapping) and pct.get("value") is not None:
            mp.runtime_fraction.default_value.CopyFrom(fraction(float(pct["value"])))
        elif m.get("percent") is not None:
            mp.runtime_fraction.default_value.CopyFrom(fraction(float(m["percent"])))
        else:
            mp.runtime_fraction.default_value.CopyFrom(fraction(100.0))
    # Consistent hashing is a route property in Envoy: take it from the (first) destination's policy.
    if dests:
        d0 = dests[0].get("destination") or {}
        host = resolve_host(str(d0.get("host") or ""), vs.namespace, scope.ctx.mesh.domain_suffix)
        dr = scope.ctx.destination_rule(host, scope.proxy.namespace, scope.proxy.labels)
        if dr is not None:
            port_no = int((d0.get("port") or {}).get("number") or scope.port)
            ch = consistent_hash(effective_policy(dr, port_no, str(d0.get("subset") or "")))
            if ch is not None:
                action.hash_policy.extend(_hash_policies(ch))


def _merge_match(parent: Mapping[str, Any] | None, child: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A delegate's match narrowed by its parent's: the child's fields win, maps (headers, ...) combine."""
    if not parent:
        return child
    if not child:
        return parent
    out = dict(parent)
    for k, v in child.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k in (
                "headers", "withoutHeaders", "queryParams", "sourceLabels"):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def http_routes(vs: VirtualServiceRec, scope: RouteScope, depth: int = 0) -> list[rc.Route]:
    """All Envoy routes of one VirtualService for this scope, in order."""
    out: list[rc.Route] = []
    for http in vs.raw_spec.get("http") or []:
        if isinstance(http, Mapping):
            out.extend(_one_http(http, vs, scope, depth, None))
    return out


def _one_http(http: Mapping[str, Any], vs: VirtualServiceRec, scope: RouteScope, depth: int,
              parent_matches: list[Mapping[str, Any] | None] | None) -> list[rc.Route]:
    matches: list[Mapping[str, Any] | None] = list(http.get("match") or []) or [None]
    if parent_matches is not None:
        matches = [_merge_match(p, c) for p in parent_matches for c in matches]
    matches = [m for m in matches if _match_applies(m, scope, vs.gateways)]
    if not matches:
        return []
    delegate = http.get("delegate")
    if isinstance(delegate, Mapping):
        if depth > 0:
            return []  # Istio allows one level of delegation
        ns = str(delegate.get("namespace") or vs.namespace)
        child = scope.ctx.index.delegates.get((ns, str(delegate.get("name") or "")))
        if child is None or not child.visible_in(vs.namespace):
            return []
        out: list[rc.Route] = []
        for chttp in child.raw_spec.get("http") or []:
            if isinstance(chttp, Mapping):
                out.extend(_one_http(chttp, child, scope, depth + 1, matches))
        return out
    routes: list[rc.Route] = []
    for i, m in enumerate(matches):
        r = rc.Route(name=str(http.get("name") or (m or {}).get("name") or f"{vs.namespace}/{vs.name}"))
        if len(matches) > 1 and not http.get("name"):
            r.name = f"{r.name}#{i}"
        r.match.CopyFrom(route_match(m))
        _fill_action(http, vs, scope, r)
        routes.append(r)
    return routes


def _fill_action(http: Mapping[str, Any], vs: VirtualServiceRec, scope: RouteScope, r: rc.Route) -> None:
    redirect = http.get("redirect")
    direct = http.get("directResponse")
    if isinstance(redirect, Mapping):
        ra = r.redirect
        if redirect.get("uri"):
            ra.path_redirect = str(redirect["uri"])
        if redirect.get("authority"):
            ra.host_redirect = str(redirect["authority"])
        if redirect.get("scheme"):
            ra.scheme_redirect = str(redirect["scheme"])
        if redirect.get("port"):
            ra.port_redirect = int(redirect["port"])
        ra.response_code = _REDIRECT_CODES.get(int(redirect.get("redirectCode") or 301),
                                               rc.RedirectAction.MOVED_PERMANENTLY)
    elif isinstance(direct, Mapping):
        r.direct_response.status = int(direct.get("status") or 200)
        body = direct.get("body") or {}
        if body.get("string") is not None:
            r.direct_response.body.inline_string = str(body["string"])
        elif body.get("bytes") is not None:
            r.direct_response.body.inline_bytes = base64.b64decode(str(body["bytes"]))
    else:
        _route_action(http, vs, scope, r)
    headers = http.get("headers") or {}
    adds, removes = _header_options(headers.get("request"))
    r.request_headers_to_add.extend(adds)
    r.request_headers_to_remove.extend(removes)
    adds, removes = _header_options(headers.get("response"))
    r.response_headers_to_add.extend(adds)
    r.response_headers_to_remove.extend(removes)
    fault = http.get("fault")
    if isinstance(fault, Mapping):
        fc = fault_config(fault)
        if fc is not None:
            r.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fc))
    cors = http.get("corsPolicy")
    if isinstance(cors, Mapping):
        r.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(cors_config(cors)))


def default_route(cluster: str, scope: RouteScope, name: str = "default") -> rc.Route:
    """A service without a VirtualService: everything to its cluster, Istio's default retries, no timeout."""
    r = rc.Route(name=name)
    r.match.prefix = "/"
    r.route.cluster = cluster
    r.route.timeout.CopyFrom(duration(0))
    retry = _retry(None, scope)
    if retry is not None:
        r.route.retry_policy.CopyFrom(retry)
    return r
