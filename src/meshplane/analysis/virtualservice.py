"""VirtualService analyzers: what a VirtualService names must exist, and every rule must be reachable.

The checks and their wording follow Istio's (``pkg/config/analysis/analyzers/virtualservice``: gateways.go,
destinationhosts.go, destinationrules.go, conflictingmeshgatewayhosts.go; unreachable rules come from its
validation, ``analyzeUnreachableHTTPRules``): a route to a subset no DestinationRule defines is a 503 at run time,
and a rule after a catch-all never matches; both are silent in the data plane, hence reported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from meshplane.analysis import messages as m
from meshplane.analysis.context import Context
from meshplane.model.resources import VIRTUAL_SERVICES
from meshplane.model.spec import ConfigObject, Destination, RouteDestination, VirtualService
from meshplane.translate.hosts import hosts_intersect

MESH = "mesh"
VS = ConfigObject[VirtualService]


def _gateway_key(ref: str, namespace: str) -> str:
    return ref if "/" in ref else f"{namespace}/{ref}"


def _destinations(vs: VirtualService) -> Iterator[tuple[str, Destination]]:
    """(what, destination) for every destination: ``host`` for routes, ``mirror host`` for mirrors."""
    for http in vs.http:
        for rd in http.route:
            if rd.destination is not None:
                yield "host", rd.destination
        if http.mirror is not None:
            yield "mirror host", http.mirror
        for mp in http.mirrors:
            if mp.destination is not None:
                yield "mirror host", mp.destination
    routes: list[RouteDestination] = [r for tcp in vs.tcp for r in tcp.route]
    routes.extend(r for tls in vs.tls for r in tls.route)
    for r in routes:
        if r.destination is not None:
            yield "host", r.destination


def check_gateways(ctx: Context, obj: VS) -> None:
    """IST0101 (gateway not found), IST0132 (no VirtualService host is served by the gateway)."""
    ns = obj.meta.namespace
    refs = list(obj.spec.gateways)
    for http in obj.spec.http:
        for match in http.match:
            refs.extend(g for g in match.gateways if g not in refs)
    for ref in refs:
        if ref == MESH:
            continue
        gw = ctx.gateways.get(_gateway_key(ref, ns))
        if gw is None:
            ctx.report(obj, m.REFERENCED_RESOURCE_NOT_FOUND, "gateway", ref)
            continue
        if obj.spec.hosts and not _hosts_in_gateway(obj.spec.hosts, ns, gw):
            ctx.report(obj, m.VS_HOST_NOT_FOUND_IN_GATEWAY, list(obj.spec.hosts), obj.meta.key, gw.meta.key)


def _hosts_in_gateway(hosts: Sequence[str], vs_namespace: str, gw: ConfigObject[Any]) -> bool:
    for server in gw.spec.servers:
        for sh in server.hosts:
            scope, _, host = sh.rpartition("/")
            if scope not in ("", "*", vs_namespace) and not (scope == "." and vs_namespace == gw.meta.namespace):
                continue
            if any(hosts_intersect(host, h) for h in hosts):
                return True
    return False


def check_destinations(ctx: Context, obj: VS) -> None:
    """IST0101: a destination host no service has, a port the service does not expose, a subset no
    DestinationRule of that host defines."""
    ns = obj.meta.namespace
    for what, dest in _destinations(obj.spec):
        host = dest.host or ""
        if not host:
            continue
        if not ctx.service_exists(host, ns):
            ctx.report(obj, m.REFERENCED_RESOURCE_NOT_FOUND, what, host)
            continue
        number = dest.port.number if dest.port is not None else None
        ports = ctx.service_ports(host, ns)
        if number is not None and ports is not None and number not in ports:
            ctx.report(obj, m.REFERENCED_RESOURCE_NOT_FOUND, "host:port", f"{host}:{number}")
        if dest.subset and dest.subset not in ctx.subsets.get(ctx.resolve(host, ns), frozenset()):
            kind = "host+subset in destinationrule" if what == "host" else "mirror+subset in destinationrule"
            ctx.report(obj, m.REFERENCED_RESOURCE_NOT_FOUND, kind, f"{host}+{dest.subset}")


def check_mesh_host_conflicts(ctx: Context) -> None:
    """IST0109: two VirtualServices bound to the mesh gateway and exported everywhere for one host (Istio then
    picks one of them; which one is not defined)."""
    by_host: dict[str, list[VS]] = {}
    for obj in ctx.of(VIRTUAL_SERVICES):
        spec: VirtualService = obj.spec
        if spec.gateways and MESH not in spec.gateways:
            continue
        if spec.export_to and "*" not in spec.export_to:
            continue
        for host in spec.hosts:
            by_host.setdefault(ctx.resolve(host, obj.meta.namespace), []).append(obj)
    for host, objs in sorted(by_host.items()):
        unique = {o.meta.key: o for o in objs}
        if len(unique) < 2:
            continue
        names = ",".join(sorted(unique))
        for o in unique.values():
            ctx.report(o, m.CONFLICTING_MESH_GATEWAY_VS_HOSTS, names, host)


def _rule_name(name: str | None, n: int) -> str:
    return f'"{name}"' if name else f"#{n}"


def _unreachable(routes: Sequence[Any], key: Callable[[Any], str], named: bool,
                 unused: Callable[[str, str], None], ineffective: Callable[[str, str, str], None]) -> None:
    """Istio's ``analyzeUnreachable*Rules``: a rule after one without matches, and a match equal to an earlier
    one (compared without its name)."""
    seen: dict[str, int] = {}
    empty_at = -1
    for n, route in enumerate(routes):
        rname = _rule_name(route.name if named else None, n)
        if not route.match:
            if empty_at >= 0:
                unused(rname, "only the last rule can have no matches")
            empty_at = n
            continue
        dups = 0
        for mn, match in enumerate(route.match):
            if empty_at >= 0:
                unused(rname, "route without matches defined before")
                continue
            k = key(match)
            if k in seen:
                dn = seen[k]
                ineffective(rname, _rule_name(match.name if named else None, mn),
                            _rule_name(routes[dn].name if named else None, dn))
                dups += 1
                continue
            seen[k] = n
        if dups == len(route.match):
            unused(rname, "all matches used by prior rules")


def check_unreachable_rules(ctx: Context, obj: VS) -> None:
    """IST0130 (a rule never used), IST0131 (a match never used)."""
    def unused(rule: str, reason: str) -> None:
        ctx.report(obj, m.VS_UNREACHABLE_RULE, rule, reason)

    def ineffective(rule: str, match: str, dup: str) -> None:
        ctx.report(obj, m.VS_INEFFECTIVE_MATCH, rule, match, dup)

    _unreachable(obj.spec.http, lambda mt: repr(dataclasses.replace(mt, name=None)), True, unused, ineffective)
    _unreachable(obj.spec.tcp, repr, False, unused, ineffective)
    _unreachable(obj.spec.tls, repr, False, unused, ineffective)


def analyze(ctx: Context) -> None:
    for obj in ctx.of(VIRTUAL_SERVICES):
        check_gateways(ctx, obj)
        check_destinations(ctx, obj)
        check_unreachable_rules(ctx, obj)
    check_mesh_host_conflicts(ctx)


__all__ = ["analyze"]
