"""VirtualService HTTP routes -> Envoy routes: matches, destinations and weights, redirects, direct responses,
rewrites, retries, timeouts, faults, mirroring, headers, CORS, consistent-hash policies, delegation.

Istio's semantics kept here: a route's ``match`` list is an OR (one Envoy route each), the first matching route
wins, a match without ``uri`` matches every path, a destination names host (short names resolve in the
VirtualService's namespace), optional port (required only when the service has several) and subset (read once,
in ``destinations``). Unlike
Istio, a destination the proxy has no cluster for (unknown host, port or subset) goes to ``BlackHoleCluster``
instead of a cluster name Envoy does not know: the request fails the same way (503), the config stays valid.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
from meshplane.model.labels import labels_match
from meshplane.model.names import Hostname
from meshplane.model.proxy import Proxy
from meshplane.translate import dynsubset, fallback
from meshplane.translate.common import BLACKHOLE, fraction, pack, proto_duration
from meshplane.translate.context import MESH_GATEWAY, PushContext, VirtualServiceRec
from meshplane.translate.destinations import destination_host, subset_cluster
from meshplane.translate.jwt import claim_route_matcher, routing_claim
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
_GRPC_CODES = {"CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
               "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
               "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
               "DATA_LOSS": 15, "UNAUTHENTICATED": 16}
# Match maps a delegate's match adds to its parent's (other fields: the delegate's, when set, replace the parent's).
_MERGED_MAPS = frozenset({"headers", "without_headers", "query_params", "source_labels"})


@dataclass(frozen=True, slots=True)
class RouteScope:
    """Where the routes are generated: for which proxy, port, gateways ("mesh" or "ns/name") and clusters."""

    proxy: Proxy
    ctx: PushContext
    port: int
    gateways: frozenset[str]
    clusters: Collection[str]


# --- matches ---------------------------------------------------------------------------------------------------


def _regex(pattern: str) -> regex_pb2.RegexMatcher:
    return regex_pb2.RegexMatcher(regex=pattern)


def string_match(sm: istio.StringMatch) -> string_pb2.StringMatcher | None:
    """An Istio StringMatch as Envoy's; None when it sets no kind (``{}``: "present" where that means something)."""
    if sm.exact is not None:
        return string_pb2.StringMatcher(exact=sm.exact)
    if sm.prefix is not None:
        return string_pb2.StringMatcher(prefix=sm.prefix)
    if sm.regex is not None:
        return string_pb2.StringMatcher(safe_regex=_regex(sm.regex))
    return None


def _set_string_match(target: rc.HeaderMatcher | rc.QueryParameterMatcher, sm: istio.StringMatch) -> None:
    matcher = string_match(sm)
    if matcher is None:
        target.present_match = True
    else:
        target.string_match.CopyFrom(matcher)


def _header_matcher(name: str, sm: istio.StringMatch, invert: bool = False) -> rc.HeaderMatcher:
    hm = rc.HeaderMatcher(name=name, invert_match=invert)
    _set_string_match(hm, sm)
    return hm


def _query_matcher(name: str, sm: istio.StringMatch) -> rc.QueryParameterMatcher:
    qp = rc.QueryParameterMatcher(name=name)
    _set_string_match(qp, sm)
    return qp


def _path_match(uri: istio.StringMatch | None, out: rc.RouteMatch) -> None:
    """A match without ``uri`` matches every path."""
    if uri is not None and uri.exact is not None:
        out.path = uri.exact
    elif uri is not None and uri.prefix is not None:
        out.prefix = uri.prefix
    elif uri is not None and uri.regex is not None:
        out.safe_regex.CopyFrom(_regex(uri.regex))
    else:
        out.prefix = "/"


def route_match(m: istio.HTTPMatchRequest | None) -> rc.RouteMatch:
    m = m or istio.HTTPMatchRequest()
    out = rc.RouteMatch()
    _path_match(m.uri, out)
    if m.ignore_uri_case:
        out.case_sensitive.value = False
    for invert, headers in ((False, m.headers), (True, m.without_headers)):
        for name, sm in sorted(headers.items()):
            claim = routing_claim(name)
            if claim is not None:  # a verified JWT claim, on a gateway (see ``jwt``)
                out.dynamic_metadata.append(claim_route_matcher(claim, string_match(sm), invert))
            else:
                out.headers.append(_header_matcher(name.lower(), sm, invert=invert))
    for pseudo, pseudo_sm in ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme)):
        if pseudo_sm is not None:
            out.headers.append(_header_matcher(pseudo, pseudo_sm))
    out.query_parameters.extend(_query_matcher(name, sm) for name, sm in sorted(m.query_params.items()))
    return out


class SourceMatch(Protocol):
    """What HTTP, TCP and TLS matches share: conditions on the port and on the client, not on the request."""

    @property
    def port(self) -> int | None: ...
    @property
    def source_labels(self) -> Mapping[str, str]: ...
    @property
    def source_namespace(self) -> str | None: ...
    @property
    def gateways(self) -> tuple[str, ...]: ...


def match_applies(m: SourceMatch | None, scope: RouteScope) -> bool:
    """Whether a match's port, sourceLabels, sourceNamespace and gateways admit this proxy and port."""
    if m is None:
        return True
    if m.port and scope.port and m.port != scope.port:
        return False
    if not labels_match(m.source_labels, scope.proxy.labels):
        return False
    if m.source_namespace and m.source_namespace != scope.proxy.namespace:
        return False
    if m.gateways:
        # Gateway names in a match resolve like the VirtualService's own; accept either resolution.
        resolved = {g if g == MESH_GATEWAY or "/" in g else f"{scope.proxy.namespace}/{g}" for g in m.gateways}
        if not (scope.gateways & resolved) and not (scope.gateways & set(m.gateways)):
            return False
    return True


def _merge_match(parent: istio.HTTPMatchRequest | None,
                 child: istio.HTTPMatchRequest | None) -> istio.HTTPMatchRequest | None:
    """A delegate's match narrowed by its parent's: the child's fields win where set, maps (headers, ...) combine."""
    if parent is None:
        return child
    if child is None:
        return parent
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(child):
        value = getattr(child, f.name)
        if f.name in _MERGED_MAPS:
            changes[f.name] = {**getattr(parent, f.name), **value}
        elif value is not None and value != ():
            changes[f.name] = value
    return dataclasses.replace(parent, **changes)


# --- actions ---------------------------------------------------------------------------------------------------


def _header_options(ops: istio.HeaderOperations) -> list[base_pb2.HeaderValueOption]:
    return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value), append_action=action)
            for values, action in ((ops.set, base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
                                   (ops.add, base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD))
            for name, value in sorted(values.items())]


def add_headers(target: rc.Route | rc.WeightedCluster.ClusterWeight, headers: istio.Headers | None) -> None:
    """Istio's header operations (``set``, ``add``, ``remove`` of requests and responses) on a route or on one
    weighted destination: the one writer of header operations."""
    if headers is None:
        return
    if headers.request is not None:
        target.request_headers_to_add.extend(_header_options(headers.request))
        target.request_headers_to_remove.extend(headers.request.remove)
    if headers.response is not None:
        target.response_headers_to_add.extend(_header_options(headers.response))
        target.response_headers_to_remove.extend(headers.response.remove)


def destination_cluster(dest: istio.Destination | None, vs_namespace: str, scope: RouteScope) -> str:
    """The cluster a destination names, or BlackHoleCluster when this proxy has no such cluster."""
    name = subset_cluster(dest, vs_namespace, scope.ctx, scope.port)
    var = dynsubset.label_variable(dest.subset if dest is not None else None)
    if var is not None and dest is not None:
        # A traffic-label subset no DestinationRule (as this proxy sees them) defines: a subset that does not
        # exist, as in Istio, rather than the whole service with the label ignored.
        host = destination_host(dest, vs_namespace, scope.ctx)
        dr = scope.ctx.destination_rule(host, scope.proxy.namespace, scope.proxy.labels)
        dyn = dynsubset.of(dr.spec if dr is not None else None)
        if dyn is None or var not in dyn.variables:
            return BLACKHOLE
    return name if name is not None and name in scope.clusters else BLACKHOLE


def route_weights(weights: Sequence[int | None]) -> list[int]:
    """Destination weights as Istio reads them: unset is 0, and all-zero sends everything to the first."""
    out = [w or 0 for w in weights]
    return out if sum(out) or not out else [100] + [0] * (len(out) - 1)


def _retry_on(text: str) -> tuple[str, list[int]]:
    """``retryOn`` as Envoy's retry_on and retriable status codes (a code turns on retriable-status-codes)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    codes = [int(p) for p in parts if p.isdigit()]
    named = [p for p in parts if not p.isdigit()]
    if codes and "retriable-status-codes" not in named:
        named.append("retriable-status-codes")
    return ",".join(named), codes


def _retry(retries: istio.HTTPRetry | None, scope: RouteScope) -> rc.RetryPolicy | None:
    """Istio's retry policy; without ``retries`` the mesh default (2 attempts on connection-level failures)."""
    attempts = scope.ctx.mesh.default_retry_attempts if retries is None else retries.attempts or 0
    if attempts <= 0:
        return None
    retry_on, codes = DEFAULT_RETRY_ON, [503]
    if retries is not None and retries.retry_on:
        retry_on, codes = _retry_on(retries.retry_on)
    pol = rc.RetryPolicy(retry_on=retry_on, host_selection_retry_max_attempts=5)
    pol.num_retries.value = attempts
    pol.retriable_status_codes.extend(codes)
    if retries is not None and retries.per_try_timeout is not None:
        pol.per_try_timeout.CopyFrom(proto_duration(retries.per_try_timeout))
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


def _percentage(percentage: istio.Percent | None, percent: int | None) -> percent_pb2.FractionalPercent:
    """Istio's ``percentage.value`` (0-100, fractional), else the deprecated integer ``percent``; 100 if none."""
    if percentage is not None and percentage.value is not None:
        return fraction(percentage.value)
    if percent is not None:
        return percent_pb2.FractionalPercent(numerator=percent, denominator=percent_pb2.FractionalPercent.HUNDRED)
    return fraction(100.0)


def _grpc_code(status: str) -> int:
    return int(status) if status.isdigit() else _GRPC_CODES.get(status, 2)


def fault_config(fault: istio.HTTPFaultInjection) -> fault_pb2.HTTPFault | None:
    out = fault_pb2.HTTPFault()
    delay = fault.delay
    if delay is not None and delay.fixed_delay is not None:
        out.delay.CopyFrom(common_fault_pb2.FaultDelay(fixed_delay=proto_duration(delay.fixed_delay),
                                                       percentage=_percentage(delay.percentage, delay.percent)))
    abort = fault.abort
    if abort is not None and (abort.http_status is not None or abort.grpc_status is not None):
        fa = fault_pb2.FaultAbort(percentage=_percentage(abort.percentage, abort.percent))
        if abort.http_status is not None:
            fa.http_status = abort.http_status
        elif abort.grpc_status is not None:
            fa.grpc_status = _grpc_code(abort.grpc_status)
        out.abort.CopyFrom(fa)
    if not out.HasField("delay") and not out.HasField("abort"):
        return None
    return out


def cors_config(cors: istio.CorsPolicy) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy()
    out.allow_origin_string_match.extend(m for m in map(string_match, cors.allow_origins) if m is not None)
    # deprecated: exact strings
    out.allow_origin_string_match.extend(string_pb2.StringMatcher(exact=o) for o in cors.allow_origin)
    if cors.allow_methods:
        out.allow_methods = ",".join(cors.allow_methods)
    if cors.allow_headers:
        out.allow_headers = ",".join(cors.allow_headers)
    if cors.expose_headers:
        out.expose_headers = ",".join(cors.expose_headers)
    if cors.max_age is not None:
        out.max_age = str(proto_duration(cors.max_age).seconds)
    if cors.allow_credentials is not None:
        out.allow_credentials.value = cors.allow_credentials
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


def _consistent_hash(host: Hostname, port: int, subset: str, proxy: Proxy,
                     ctx: PushContext) -> istio.ConsistentHashLB | None:
    dr = ctx.destination_rule(host, proxy.namespace, proxy.labels)
    if dr is None:
        return None
    return consistent_hash(effective_policy(dr, port, subset))


def hash_policies(host: Hostname, port: int, subset: str, proxy: Proxy,
                  ctx: PushContext) -> list[rc.RouteAction.HashPolicy]:
    """Consistent hashing is a route property in Envoy: the hash policy of the DestinationRule's loadBalancer for
    this host, port and subset, as the proxy sees the rule (none without a consistentHash)."""
    ch = _consistent_hash(host, port, subset, proxy, ctx)
    return _hash_policies(ch) if ch is not None else []


def _with_fallback(d: istio.HTTPRouteDestination, vs: VirtualServiceRec, scope: RouteScope) -> str:
    """The destination's cluster, or the aggregate of it and its ``fallback`` target (ASM; see ``fallback``)."""
    primary = destination_cluster(d.destination, vs.namespace, scope)
    return fallback.choose(primary, d, vs.namespace, scope.ctx, scope.port, scope.clusters)


def _destinations(http: istio.HTTPRoute, vs: VirtualServiceRec, scope: RouteScope, route: rc.Route) -> None:
    """One destination: the route's cluster (its headers on the route); several: weighted clusters."""
    dests = http.route
    action = route.route
    if len(dests) == 1:
        action.cluster = _with_fallback(dests[0], vs, scope)
        add_headers(route, dests[0].headers)
        return
    for d, w in zip(dests, route_weights([d.weight for d in dests]), strict=True):
        cw = action.weighted_clusters.clusters.add()
        cw.name = _with_fallback(d, vs, scope)
        cw.weight.value = w
        add_headers(cw, d.headers)


def _rewrite(rw: istio.HTTPRewrite | None, action: rc.RouteAction) -> None:
    if rw is None:
        return
    if rw.uri is not None:
        action.prefix_rewrite = rw.uri
    if rw.authority:
        action.host_rewrite_literal = rw.authority
    urr = rw.uri_regex_rewrite
    if urr is not None and urr.match:
        action.regex_rewrite.pattern.regex = urr.match
        action.regex_rewrite.substitution = urr.rewrite or ""


def _mirror_fraction(percentage: istio.Percent | None, percent: int | None) -> percent_pb2.FractionalPercent:
    if percentage is not None and percentage.value is not None:
        return fraction(percentage.value)
    return fraction(float(percent) if percent is not None else 100.0)


def _mirrors(http: istio.HTTPRoute) -> list[tuple[istio.Destination | None, percent_pb2.FractionalPercent]]:
    """``mirrors``, after the deprecated single ``mirror`` (with ``mirrorPercentage`` or ``mirrorPercent``)."""
    out = [(m.destination, _mirror_fraction(m.percentage, None)) for m in http.mirrors]
    if http.mirror is not None:
        out.insert(0, (http.mirror, _mirror_fraction(http.mirror_percentage, http.mirror_percent)))
    return out


def _route_action(http: istio.HTTPRoute, vs: VirtualServiceRec, scope: RouteScope, route: rc.Route) -> None:
    _destinations(http, vs, scope, route)
    action = route.route
    action.timeout.CopyFrom(proto_duration(http.timeout or 0))  # Istio: no timeout unless one is set
    retry = _retry(http.retries, scope)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    _rewrite(http.rewrite, action)
    for dest, share in _mirrors(http):
        cname = destination_cluster(dest, vs.namespace, scope)
        if cname != BLACKHOLE:
            action.request_mirror_policies.add(cluster=cname).runtime_fraction.default_value.CopyFrom(share)
    if http.route:  # from the (first) destination's DestinationRule
        d0 = http.route[0].destination
        port = d0.port.number if d0 is not None and d0.port is not None and d0.port.number else scope.port
        subset = (d0.subset or "") if d0 is not None else ""
        action.hash_policy.extend(hash_policies(destination_host(d0, vs.namespace, scope.ctx), port, subset,
                                                scope.proxy, scope.ctx))


def _redirect(redirect: istio.HTTPRedirect, ra: rc.RedirectAction) -> None:
    if redirect.uri:
        ra.path_redirect = redirect.uri
    if redirect.authority:
        ra.host_redirect = redirect.authority
    if redirect.scheme:
        ra.scheme_redirect = redirect.scheme
    if redirect.port:
        ra.port_redirect = redirect.port
    ra.response_code = _REDIRECT_CODES.get(redirect.redirect_code or 301, rc.RedirectAction.MOVED_PERMANENTLY)


def _direct_response(direct: istio.HTTPDirectResponse, out: rc.DirectResponseAction) -> None:
    out.status = direct.status or 200
    body = direct.body
    if body is not None and body.string is not None:
        out.body.inline_string = body.string
    elif body is not None and body.bytes is not None:
        out.body.inline_bytes = base64.b64decode(body.bytes)


def _dynamic_subsets(dest: istio.Destination, vs: VirtualServiceRec, scope: RouteScope
                     ) -> dynsubset.DynamicSubsets | None:
    host = destination_host(dest, vs.namespace, scope.ctx)
    dr = scope.ctx.destination_rule(host, scope.proxy.namespace, scope.proxy.labels)
    return dynsubset.of(dr.spec if dr is not None else None)


def _fill_action(http: istio.HTTPRoute, vs: VirtualServiceRec, scope: RouteScope, r: rc.Route) -> None:
    if http.redirect is not None:
        _redirect(http.redirect, r.redirect)
    elif http.direct_response is not None:
        _direct_response(http.direct_response, r.direct_response)
    else:
        _route_action(http, vs, scope, r)
        dynsubset.attach(r, dynsubset.route_rules(http, lambda d: _dynamic_subsets(d, vs, scope)))
    add_headers(r, http.headers)
    if http.fault is not None:
        fc = fault_config(http.fault)
        if fc is not None:
            r.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(fc))
    if http.cors_policy is not None:
        r.typed_per_filter_config[CORS_FILTER].CopyFrom(pack(cors_config(http.cors_policy)))


# --- routes ----------------------------------------------------------------------------------------------------


def http_routes(vs: VirtualServiceRec, scope: RouteScope, depth: int = 0) -> list[rc.Route]:
    """All Envoy routes of one VirtualService for this scope, in order."""
    out: list[rc.Route] = []
    for http in vs.spec.http:
        out.extend(_one_http(http, vs, scope, depth, None))
    return out


def _delegated(delegate: istio.Delegate, vs: VirtualServiceRec, scope: RouteScope, depth: int,
               matches: list[istio.HTTPMatchRequest | None]) -> list[rc.Route]:
    """The routes of the delegate VirtualService, each narrowed by the delegating route's matches."""
    if depth > 0:
        return []  # Istio allows one level of delegation
    child = scope.ctx.index.delegates.get((delegate.namespace or vs.namespace, delegate.name or ""))
    if child is None or not child.visible_in(vs.namespace):
        return []
    out: list[rc.Route] = []
    for chttp in child.spec.http:
        out.extend(_one_http(chttp, child, scope, depth + 1, matches))
    return out


def _one_http(http: istio.HTTPRoute, vs: VirtualServiceRec, scope: RouteScope, depth: int,
              parent_matches: list[istio.HTTPMatchRequest | None] | None) -> list[rc.Route]:
    matches: list[istio.HTTPMatchRequest | None] = list(http.match) or [None]
    if parent_matches is not None:
        matches = [_merge_match(p, c) for p in parent_matches for c in matches]
    matches = [m for m in matches if match_applies(m, scope)]
    if not matches:
        return []
    if http.delegate is not None:
        return _delegated(http.delegate, vs, scope, depth, matches)
    routes: list[rc.Route] = []
    for i, m in enumerate(matches):
        r = rc.Route(name=http.name or (m.name if m is not None else None) or vs.key)
        if len(matches) > 1 and not http.name:
            r.name = f"{r.name}#{i}"
        r.match.CopyFrom(route_match(m))
        _fill_action(http, vs, scope, r)
        routes.append(r)
    return routes


def default_route(cluster: str, scope: RouteScope, name: str = "default") -> rc.Route:
    """A service without a VirtualService: everything to its cluster, Istio's default retries, no timeout."""
    r = rc.Route(name=name)
    r.match.prefix = "/"
    r.route.cluster = cluster
    r.route.timeout.CopyFrom(proto_duration(0))
    retry = _retry(None, scope)
    if retry is not None:
        r.route.retry_policy.CopyFrom(retry)
    return r
