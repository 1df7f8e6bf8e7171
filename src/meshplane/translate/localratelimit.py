"""ASM's ASMLocalRateLimiter as EnvoyFilter patches: Envoy's local rate limit filter, with a token bucket per route.

Why patches: ASM itself turns an ASMLocalRateLimiter into an EnvoyFilter (a ``local_ratelimit`` HTTP filter and
per-route ``typed_per_filter_config``), so the same matching and ordering serve both; the patches this module makes
join the proxy's EnvoyFilter patches before the user's (``envoyfilter.patches_for``), carrying the source
``ASMLocalRateLimiter <namespace>/<name>``. Pure.

What a proxy gets, for each ASMLocalRateLimiter of its namespace whose ``workloadSelector`` matches it:

* one ``envoy.filters.http.local_ratelimit`` filter before the router of each HTTP listener a rule names (sidecar:
  the inbound listener of ``vhost.port``; gateway, ``isGateway: true``: the listener of the Gateway server port),
  with no bucket of its own, so routes without a rule are not limited;
* on the routes each rule matches (sidecar: every route of ``inbound|http|<port>``; gateway: the routes of virtual
  host ``<vhost.name>:<port>``; ``route.name_match``: only the route of that name) a ``LocalRateLimit`` with the
  rule's bucket (``quota`` tokens, refilled every ``fill_interval``), enabled and enforced for every request: a
  limited request gets ``status`` (429) with ``x-local-rate-limit: true`` (Istio's header) and the rule's
  ``response_header_to_add``;
* ``custom_response_body``: the body of the port's limited responses, through the connection manager's local reply
  (Envoy's filter has no body of its own, and a local reply is per listener: the first rule of a port with a body
  gives it);
* ``limit_overrides``: a bucket of its own for requests whose headers / query parameters match (descriptors fed by
  the filter's ``rate_limits``); those requests do not consume the rule's bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import http_status_pb2, percent_pb2, token_bucket_pb2
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from meshplane.model import spec as istio
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.spec import ConfigObject
from meshplane.translate.common import pack, selects_workload

FILTER = "envoy.filters.http.local_ratelimit"
STAT_PREFIX = "http_local_rate_limiter"
LIMITED_HEADER = "x-local-rate-limit"
HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
SOURCE_KIND = "ASMLocalRateLimiter"

Limiter = ConfigObject[istio.ASMLocalRateLimiter]


def source_of(obj: Limiter) -> str:
    return f"{SOURCE_KIND} {obj.meta.key}"


def selecting(proxy: Proxy, limiters: Sequence[Limiter]) -> list[Limiter]:
    """The limiters that apply to ``proxy``, in creation order (then name)."""
    out = [o for o in limiters if selects_workload(o.meta, o.spec.workload_selector, proxy)
           and bool(o.spec.is_gateway) == (proxy.type is ProxyType.ROUTER)]
    return sorted(out, key=lambda o: (o.meta.creation_timestamp, o.meta.name))


def _interval(fi: istio.ASMLocalRateLimiterConfigsLimitFillInterval | None) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=(fi.seconds or 0) if fi else 0, nanos=(fi.nanos or 0) if fi else 0)


def _bucket(quota: int | None, fi: istio.ASMLocalRateLimiterConfigsLimitFillInterval | None,
            ) -> token_bucket_pb2.TokenBucket:
    b = token_bucket_pb2.TokenBucket(max_tokens=quota or 1, fill_interval=_interval(fi))
    b.tokens_per_fill.value = quota or 1
    return b


def _always() -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(default_value=percent_pb2.FractionalPercent(
        numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED))


def _string(m: istio.ASMLocalRateLimiterConfigsMatchVhostRouteHeaderMatch
            | istio.ASMLocalRateLimiterConfigsLimitOverridesRequestMatchQueryMatch) -> string_pb2.StringMatcher | None:
    if m.exact_match is not None:
        return string_pb2.StringMatcher(exact=m.exact_match)
    if m.prefix_match is not None:
        return string_pb2.StringMatcher(prefix=m.prefix_match)
    if m.suffix_match is not None:
        return string_pb2.StringMatcher(suffix=m.suffix_match)
    if m.regex_match is not None:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m.regex_match))
    return None


def header_matcher(m: istio.ASMLocalRateLimiterConfigsMatchVhostRouteHeaderMatch) -> rc.HeaderMatcher:
    out = rc.HeaderMatcher(name=m.name or "", invert_match=bool(m.invert_match))
    sm = _string(m)
    if sm is not None:
        out.string_match.CopyFrom(sm)
    else:
        out.present_match = m.present_match is not False
    return out


def _query_matcher(m: istio.ASMLocalRateLimiterConfigsLimitOverridesRequestMatchQueryMatch,
                   ) -> rc.QueryParameterMatcher:
    out = rc.QueryParameterMatcher(name=m.name or "")
    sm = _string(m)
    if sm is not None:
        out.string_match.CopyFrom(sm)
    else:
        out.present_match = m.present_match is not False
    return out


def route_config(rule: istio.ASMLocalRateLimiterConfigs) -> lrl.LocalRateLimit:
    """The per-route ``LocalRateLimit`` of one rule."""
    limit = rule.limit or istio.ASMLocalRateLimiterConfigsLimit()
    cfg = lrl.LocalRateLimit(stat_prefix=STAT_PREFIX, token_bucket=_bucket(limit.quota, limit.fill_interval),
                             filter_enabled=_always(), filter_enforced=_always(),
                             local_rate_limit_per_downstream_connection=bool(limit.per_downstream_connection))
    if limit.status:
        cfg.status.CopyFrom(http_status_pb2.HttpStatus(code=limit.status))
    headers = {LIMITED_HEADER: "true", **dict(limit.response_header_to_add)}
    for k, v in headers.items():
        cfg.response_headers_to_add.add(header=base_pb2.HeaderValue(key=k, value=v),
                                        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
    for i, ov in enumerate(rule.limit_overrides):
        rm = ov.request_match or istio.ASMLocalRateLimiterConfigsLimitOverridesRequestMatch()
        rl = cfg.rate_limits.add()
        entries = []
        if rm.header_match:
            a = rl.actions.add()
            a.header_value_match.descriptor_key = "override_headers"
            a.header_value_match.descriptor_value = str(i)
            a.header_value_match.headers.extend(header_matcher(h) for h in rm.header_match)
            entries.append(("override_headers", str(i)))
        if rm.query_match:
            a = rl.actions.add()
            a.query_parameter_value_match.descriptor_key = "override_query"
            a.query_parameter_value_match.descriptor_value = str(i)
            a.query_parameter_value_match.query_parameters.extend(_query_matcher(q) for q in rm.query_match)
            entries.append(("override_query", str(i)))
        ol = ov.limit or istio.ASMLocalRateLimiterConfigsLimitOverridesLimit()
        d = cfg.descriptors.add(token_bucket=_bucket(ol.quota, ol.fill_interval))
        d.entries.extend(ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries)
    if rule.limit_overrides:
        cfg.always_consume_default_token_bucket.value = False
    return cfg


@dataclass(frozen=True, slots=True)
class LimiterPatch:
    """One patch in EnvoyFilter terms (``envoyfilter`` makes its ``Patch`` of it)."""

    source: str
    index: int
    apply_to: str
    operation: str
    context: str
    match: istio.EnvoyFilterConfigPatchesMatch
    value: Message


def _filter_patch(source: str, index: int, context: str, port: int) -> LimiterPatch:
    match = istio.EnvoyFilterConfigPatchesMatch(
        context=istio.EnvoyFilterConfigPatchesMatchContext(context),
        listener=istio.EnvoyFilterConfigPatchesMatchListener(
            port_number=port, filter_chain=istio.EnvoyFilterConfigPatchesMatchListenerFilterChain(
                filter=istio.EnvoyFilterConfigPatchesMatchListenerFilterChainFilter(
                    name=HCM, sub_filter=istio.NameRef(name=ROUTER)))))
    value = hcm_pb2.HttpFilter(name=FILTER, typed_config=pack(lrl.LocalRateLimit(stat_prefix=STAT_PREFIX)))
    return LimiterPatch(source, index, "HTTP_FILTER", "INSERT_BEFORE", context, match, value)


def _route_patch(source: str, index: int, context: str, gateway: bool,
                 rule: istio.ASMLocalRateLimiterConfigs) -> LimiterPatch:
    vh = rule.match.vhost if rule.match is not None and rule.match.vhost is not None else (
        istio.ASMLocalRateLimiterConfigsMatchVhost())
    port = vh.port or 0
    name = f"{vh.name}:{port}" if gateway else f"inbound|http|{port}"
    route_name = vh.route.name_match if vh.route is not None else None
    match = istio.EnvoyFilterConfigPatchesMatch(
        context=istio.EnvoyFilterConfigPatchesMatchContext(context),
        route_configuration=istio.EnvoyFilterConfigPatchesMatchRouteConfiguration(
            port_number=port if gateway else None,
            vhost=istio.EnvoyFilterConfigPatchesMatchRouteConfigurationVhost(
                name=name, route=istio.EnvoyFilterConfigPatchesMatchRouteConfigurationVhostRoute(
                    name=route_name or None))))
    value = rc.Route()
    value.typed_per_filter_config[FILTER].CopyFrom(pack(route_config(rule)))
    return LimiterPatch(source, index, "HTTP_ROUTE", "MERGE", context, match, value)


def _body_patch(source: str, index: int, context: str, port: int, body: str, status: int) -> LimiterPatch:
    """The body of the port's limited responses: Envoy's local rate limit has none of its own, so the HTTP
    connection manager's local reply maps its local replies of the limit's status to it."""
    match = istio.EnvoyFilterConfigPatchesMatch(
        context=istio.EnvoyFilterConfigPatchesMatchContext(context),
        listener=istio.EnvoyFilterConfigPatchesMatchListener(
            port_number=port, filter_chain=istio.EnvoyFilterConfigPatchesMatchListenerFilterChain(
                filter=istio.EnvoyFilterConfigPatchesMatchListenerFilterChainFilter(name=HCM))))
    hcm = hcm_pb2.HttpConnectionManager()
    mapper = hcm.local_reply_config.mappers.add()
    # The filter's flag (RL) is set after its local reply is mapped; its status is not (mappers see local replies
    # only: an upstream's 429 keeps its own body).
    cmp = mapper.filter.status_code_filter.comparison
    cmp.op = cmp.EQ
    cmp.value.default_value = status
    cmp.value.runtime_key = "meshplane.local_rate_limit.status"
    mapper.body.inline_string = body
    value = lc_pb2.Filter(name=HCM, typed_config=pack(hcm))
    return LimiterPatch(source, index, "NETWORK_FILTER", "MERGE", context, match, value)


def limiter_patches(proxy: Proxy, limiters: Sequence[Limiter]) -> list[LimiterPatch]:
    """The patches of the limiters selecting ``proxy``: the filter once per listener port a rule names, then a route
    MERGE per rule (a later rule on the same routes wins, as a later EnvoyFilter MERGE does)."""
    gateway = proxy.type is ProxyType.ROUTER
    context = "GATEWAY" if gateway else "SIDECAR_INBOUND"
    filters: list[LimiterPatch] = []
    routes: list[LimiterPatch] = []
    ports: set[int] = set()
    bodies: set[int] = set()
    for obj in selecting(proxy, limiters):
        source = source_of(obj)
        for i, rule in enumerate(obj.spec.configs):
            vh = rule.match.vhost if rule.match is not None else None
            if vh is None or not vh.port or rule.limit is None:
                continue  # refused at admission
            # A gateway's listener listens on the port its Service port maps to (the local runtime moves them).
            listen = proxy.gateway_ports.get(vh.port, vh.port) if gateway else vh.port
            if listen not in ports:
                ports.add(listen)
                filters.append(_filter_patch(source, i, context, listen))
            body = rule.limit.custom_response_body
            if body and listen not in bodies:
                bodies.add(listen)  # the first rule's body of a port is that port's (one local reply per listener)
                filters.append(_body_patch(source, i, context, listen, body, rule.limit.status or 429))
            routes.append(_route_patch(source, i, context, gateway, rule))
    return filters + routes


__all__ = ["FILTER", "LIMITED_HEADER", "SOURCE_KIND", "LimiterPatch", "header_matcher", "limiter_patches",
           "route_config", "selecting", "source_of"]
