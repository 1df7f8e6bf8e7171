"""Gateway analyzers: the selector must select gateway instances that expose each server port, and two Gateways
must not claim the same port and host on the same instances.

From Istio's ``analyzers/gateway`` (gateway.go, conflictinggateway.go). meshplane's workload instances are
WorkloadEntries (the local runtime's, an agent's) or a member cluster's endpoints; a gateway's ports are the ones
its instance declares (IST0104), and the ServiceEntry in front of it, when there is one, must expose them too
(IST0162). Istio selects gateway pods in every namespace, and so does this.
"""

from __future__ import annotations

from typing import Any

from meshplane.analysis import messages as m
from meshplane.analysis.context import Context, Workload, selector_string
from meshplane.model.resources import GATEWAYS
from meshplane.model.spec import ConfigObject, Gateway

GW = ConfigObject[Gateway]


def check_selector_and_ports(ctx: Context, obj: GW) -> None:
    selector = dict(obj.spec.selector)
    if not selector:
        return
    sel = selector_string(selector)
    workloads = ctx.selected(selector)
    if not workloads:
        ctx.report(obj, m.REFERENCED_RESOURCE_NOT_FOUND, "selector", sel)
        return
    declared = {p for w in workloads for p in w.ports}
    services = ctx.services_selecting(workloads)
    service_ports = {p for _, ports in services for p in ports}
    for server in obj.spec.servers:
        number = server.port.number if server.port is not None else None
        if number is None:
            continue
        if declared and number not in declared:
            ctx.report(obj, m.GATEWAY_PORT_NOT_ON_WORKLOAD, sel, number)
        elif services and number not in service_ports:
            ctx.report(obj, m.GATEWAY_PORT_NOT_DEFINED_ON_SERVICE, number, sel)


def _same_instances(ctx: Context, a: dict[str, str], b: dict[str, str]) -> bool:
    if a == b:
        return True
    sa = {_wkey(w) for w in ctx.selected(a)}
    return any(_wkey(w) in sa for w in ctx.selected(b))


def _wkey(w: Workload) -> tuple[str, str]:
    return w.namespace, w.name


def _hosts(server: Any) -> set[tuple[str, str]]:
    return {(h.rpartition("/")[2], server.bind or "") for h in server.hosts}


def check_conflicts(ctx: Context) -> None:
    """IST0145: servers of two Gateways on the same port of the same instances with a host (and bind) in
    common."""
    gateways = list(ctx.of(GATEWAYS))
    for obj in gateways:
        selector = dict(obj.spec.selector)
        for server in obj.spec.servers:
            port = server.port.number if server.port is not None else None
            if port is None:
                continue
            mine = _hosts(server)
            others = sorted({
                other.meta.key for other in gateways if other.meta.key != obj.meta.key
                and _same_instances(ctx, selector, dict(other.spec.selector))
                for os in other.spec.servers
                if os.port is not None and os.port.number == port and mine & _hosts(os)})
            if others:
                ctx.report(obj, m.CONFLICTING_GATEWAYS, ",".join(others), selector_string(selector), str(port),
                           ",".join(server.hosts))


def analyze(ctx: Context) -> None:
    for obj in ctx.of(GATEWAYS):
        check_selector_and_ports(ctx, obj)
    check_conflicts(ctx)


__all__ = ["analyze"]
