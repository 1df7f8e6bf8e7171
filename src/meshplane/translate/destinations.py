"""Route destinations -> cluster names: the one reading of an Istio ``Destination`` (host, port, subset).

Istio's rules: the host is a short name (resolved in the VirtualService's namespace) or a FQDN; the port is
required only when the service has several (without one, the route's own port is taken when the service has it,
else its first port); the subset names a DestinationRule subset. HTTP, TCP and TLS routes, mirrors and ASM's
``fallback`` targets all name clusters through :func:`subset_cluster`.
"""

from __future__ import annotations

from meshplane.model import spec as istio
from meshplane.model.names import Hostname
from meshplane.model.service import Service
from meshplane.translate.common import cluster_name
from meshplane.translate.context import PushContext
from meshplane.translate.hosts import resolve_host


def destination_host(dest: istio.Destination | None, vs_namespace: str, ctx: PushContext) -> Hostname:
    """The destination's host, resolved (``reviews`` -> ``reviews.NS.svc.cluster.local``); "" if it has none."""
    return resolve_host((dest.host or "") if dest is not None else "", vs_namespace, ctx.mesh.domain_suffix)


def destination_port(dest: istio.Destination | None, svc: Service, route_port: int) -> int:
    """The service port a destination names: its own, else the only one, else the route's, else the first."""
    number = dest.port.number if dest is not None and dest.port is not None else None
    if number:
        return number
    if len(svc.ports) == 1:
        return svc.ports[0].number
    if route_port and svc.port(route_port) is not None:
        return route_port
    return svc.ports[0].number if svc.ports else 0


def subset_cluster(dest: istio.Destination | None, vs_namespace: str, ctx: PushContext, route_port: int) -> str | None:
    """The outbound cluster a destination names (``outbound|PORT|SUBSET|HOST``), before checking the proxy has
    it; None when the host is no known service."""
    host = destination_host(dest, vs_namespace, ctx)
    svc = ctx.service(host)
    if svc is None:
        return None
    subset = (dest.subset or "") if dest is not None else ""
    if subset.startswith("$"):  # ASM's label-variable subset: the service's cluster, by its subset LB (dynsubset)
        subset = ""
    return cluster_name("outbound", destination_port(dest, svc, route_port), subset, host)
