"""A pure simulation of Envoy's HTTP routing over generated RouteConfigurations (Istio's pilot/pkg/simulation
idea): which virtual host and route a request (host, path, headers) selects, and where the route sends it.

Fast tests check routing decisions with this instead of starting Envoy; the e2e tests check the same decisions
through real Envoys. It follows Envoy's documented matching order: exact domain, then the longest suffix
wildcard (``*.example.com``), then the longest prefix wildcard (``example.*``), then ``*``; routes in order, the
first whose path, headers and query parameters all match wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import string_pb2


@dataclass(frozen=True, slots=True)
class RouteDecision:
    virtual_host: str
    route: str
    cluster: str = ""  # single destination
    weighted: tuple[tuple[str, int], ...] = ()  # weighted destinations
    redirect: str = ""  # "host path code" for redirects
    direct_status: int = 0
    route_proto: rc.Route | None = field(default=None, compare=False, repr=False)

    @property
    def clusters(self) -> tuple[str, ...]:
        return (self.cluster,) if self.cluster else tuple(c for c, _ in self.weighted)


def _domain_rank(domain: str, host: str) -> tuple[int, int] | None:
    host = host.lower()
    d = domain.lower()
    if d == host:
        return (0, 0)
    if d == "*":
        return (3, 0)
    if d.startswith("*") and host.endswith(d[1:]) and len(host) > len(d) - 1:
        return (1, -len(d))
    if d.endswith("*") and host.startswith(d[:-1]) and len(host) > len(d) - 1:
        return (2, -len(d))
    return None


def select_virtual_host(cfg: route_pb2.RouteConfiguration, host: str) -> rc.VirtualHost | None:
    best: tuple[tuple[int, int], rc.VirtualHost] | None = None
    for vh in cfg.virtual_hosts:
        for d in vh.domains:
            rank = _domain_rank(d, host)
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, vh)
    return best[1] if best else None


def string_matches(m: string_pb2.StringMatcher, value: str) -> bool:
    kind = m.WhichOneof("match_pattern")
    a = value.lower() if m.ignore_case else value
    if kind == "exact":
        return bool(a == (m.exact.lower() if m.ignore_case else m.exact))
    if kind == "prefix":
        return a.startswith(m.prefix.lower() if m.ignore_case else m.prefix)
    if kind == "suffix":
        return a.endswith(m.suffix.lower() if m.ignore_case else m.suffix)
    if kind == "contains":
        return (m.contains.lower() if m.ignore_case else m.contains) in a
    if kind == "safe_regex":
        return re.fullmatch(m.safe_regex.regex, value) is not None
    return False


def _header_ok(hm: rc.HeaderMatcher, headers: Mapping[str, str]) -> bool:
    value = headers.get(hm.name.lower())
    kind = hm.WhichOneof("header_match_specifier")
    if kind == "present_match":
        ok = (value is not None) == hm.present_match
    elif value is None:
        ok = False
    elif kind == "string_match":
        ok = string_matches(hm.string_match, value)
    elif kind == "exact_match":
        ok = bool(value == hm.exact_match)
    elif kind == "prefix_match":
        ok = value.startswith(hm.prefix_match)
    else:
        ok = True
    return bool(ok != hm.invert_match)


def route_matches(m: rc.RouteMatch, path: str, headers: Mapping[str, str]) -> bool:
    path_only, _, query = path.partition("?")
    case = m.case_sensitive.value if m.HasField("case_sensitive") else True
    p = path_only if case else path_only.lower()
    kind = m.WhichOneof("path_specifier")
    if (kind == "connect_matcher") != (headers.get(":method") == "CONNECT"):
        return False  # CONNECT requests have no path: only connect_matcher routes take them
    if kind == "prefix":
        if not p.startswith(m.prefix if case else m.prefix.lower()):
            return False
    elif kind == "path":
        if p != (m.path if case else m.path.lower()):
            return False
    elif kind == "safe_regex":
        if re.fullmatch(m.safe_regex.regex, path_only) is None:
            return False
    elif kind == "path_separated_prefix":
        pre = m.path_separated_prefix
        if not (path_only == pre or path_only.startswith(pre + "/")):
            return False
    if not all(_header_ok(h, headers) for h in m.headers):
        return False

    params = dict(parse_qsl(query, keep_blank_values=True))
    for q in m.query_parameters:
        v = params.get(q.name)
        if q.WhichOneof("query_parameter_match_specifier") == "present_match":
            if v is None:
                return False
        elif v is None or not string_matches(q.string_match, v):
            return False
    return True


def simulate(configs: Iterable[route_pb2.RouteConfiguration], route_name: str, host: str, path: str = "/",
             headers: Mapping[str, str] | None = None, method: str = "GET") -> RouteDecision | None:
    """The decision of route configuration ``route_name`` for a request; None if no route matches (404)."""
    cfg = next((c for c in configs if c.name == route_name), None)
    if cfg is None:
        raise KeyError(f"no route configuration named {route_name!r}")
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs.setdefault(":authority", host)
    hdrs.setdefault(":method", method)
    hdrs.setdefault(":path", path)
    vh = select_virtual_host(cfg, host)
    if vh is None:
        return None
    for r in vh.routes:
        if not route_matches(r.match, path, hdrs):
            continue
        action = r.WhichOneof("action")
        if action == "route":
            if r.route.WhichOneof("cluster_specifier") == "weighted_clusters":
                return RouteDecision(vh.name, r.name, weighted=tuple(
                    (c.name, c.weight.value) for c in r.route.weighted_clusters.clusters), route_proto=r)
            return RouteDecision(vh.name, r.name, cluster=r.route.cluster, route_proto=r)
        if action == "redirect":
            rd = r.redirect
            return RouteDecision(vh.name, r.name, redirect=f"{rd.host_redirect} {rd.path_redirect} "
                                 f"{rd.response_code}", route_proto=r)
        if action == "direct_response":
            return RouteDecision(vh.name, r.name, direct_status=r.direct_response.status, route_proto=r)
    return None
