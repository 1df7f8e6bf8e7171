"""The DNS name table of a proxy (NDS) and the virtual IPs auto-allocated to services that have none.

Why auto-allocation: with transparent capture an application connects to an address, and the sidecar learns the
destination from the original destination only. ServiceEntries without ``addresses`` (every service of the local
runtime, most external hosts) would all share ``0.0.0.0:PORT``: Istio's DNS proxy therefore answers them with a
virtual IP from the reserved class ``240.240.0.0/16`` and its listeners match on it. The allocation is a pure
function of the mesh's service host names (a stable hash, probing the next free address on a collision), so the
name table a DNS proxy receives and the per-VIP TCP listeners always agree.

The table holds every service the proxy sees (its Sidecar scope), by host name. Hosts of the form
``NAME.NAMESPACE.svc.<domain>`` are marked ``Kubernetes`` with their short name and namespace, so the agent also
answers ``NAME.NAMESPACE`` and, in the same namespace, ``NAME``, as a pod's resolver does. A wildcard host
(``*.example.com``) is in the table only with addresses of its own (the agent then answers every name under it with
them, the most specific wildcard first, as Istio's agent does); it never gets a virtual IP: one address for every
name under it would hide which name the application asked for, so such names are forwarded upstream.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from typing import Any

from meshplane.model import nds
from meshplane.model.proxy import Proxy
from meshplane.model.service import Resolution, Service
from meshplane.translate.common import is_ip_address
from meshplane.translate.context import PushContext
from meshplane.translate.memo import Slot

AUTO_VIP_NETWORK = ipaddress.IPv4Network("240.240.0.0/16")
_SIZE = AUTO_VIP_NETWORK.num_addresses - 2  # neither .0.0 nor .255.255

_AUTO_VIPS: Slot[None, Mapping[str, str]] = Slot("auto-vips", endpoint_free=True)
_TABLES: Slot[tuple[object, ...], Any] = Slot("name-tables", endpoint_free=True)


def _static_addresses(svc: Service) -> list[str]:
    return [a for a in svc.addresses if "/" not in a and is_ip_address(a)]


# Istio's opt-out, a label of the ServiceEntry: "false" (any case) keeps its hosts out of auto-allocation.
AUTO_ALLOCATE_LABEL = "networking.istio.io/enable-autoallocate-ip"


def needs_auto_vip(svc: Service) -> bool:
    """Whether ``svc`` gets a virtual IP: no address of its own, no wildcard host, a resolution that sends the
    connection to the service's endpoints, and no opt-out label. With resolution ``NONE`` the proxy connects to
    the address the application dialled (ORIGINAL_DST): a VIP there would be dialled itself and fail, so, as in
    Istio, such a host gets none and its name is resolved upstream to its real address."""
    return (not _static_addresses(svc) and not svc.hostname.startswith("*")
            and svc.resolution is not Resolution.NONE
            and svc.labels.get(AUTO_ALLOCATE_LABEL, "").lower() != "false")


def allocate(hosts: list[str]) -> dict[str, str]:
    """host -> an address in 240.240.0.0/16, stable for a host as long as no earlier host (in sorted order) takes
    its hashed slot. Pure."""
    base = int(AUTO_VIP_NETWORK.network_address)
    taken: set[int] = set()
    out: dict[str, str] = {}
    for host in sorted(set(hosts)):
        slot = int.from_bytes(hashlib.blake2b(host.encode(), digest_size=4).digest(), "big") % _SIZE
        for i in range(_SIZE):
            cand = (slot + i) % _SIZE
            if cand not in taken:
                taken.add(cand)
                out[host] = str(ipaddress.IPv4Address(base + 1 + cand))
                break
    return out


def auto_vips(ctx: PushContext) -> Mapping[str, str]:
    """The auto-allocated virtual IP of every service without one, by host name."""
    def build() -> Mapping[str, str]:
        return allocate([str(s.hostname) for s in ctx.registry.services.values() if needs_auto_vip(s)])

    return ctx.memo.get_or_build(_AUTO_VIPS, None, build)


def service_vips(svc: Service, ctx: PushContext) -> list[str]:
    """The addresses a connection to ``svc`` goes to: its own, else its auto-allocated one."""
    static = _static_addresses(svc)
    if static:
        return static
    vip = auto_vips(ctx).get(str(svc.hostname))
    return [vip] if vip else []


def _kubernetes_parts(host: str, suffix: str) -> tuple[str, str] | None:
    tail = f".svc.{suffix}"
    if not host.endswith(tail):
        return None
    parts = host[: -len(tail)].split(".")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def build_name_table(proxy: Proxy, ctx: PushContext) -> Any:
    """The NameTable for ``proxy``: every visible service host with its addresses."""
    scope = ctx.scope(proxy)

    def build() -> Any:
        table = nds.NameTable()
        suffix = ctx.mesh.domain_suffix or "cluster.local"
        for svc in scope.services:
            host = str(svc.hostname)
            ips = service_vips(svc, ctx)  # a wildcard host: its own addresses only (needs_auto_vip)
            if not ips:
                continue
            info = table.table[host]
            info.ips.extend(ips)
            parts = _kubernetes_parts(host, suffix)
            if parts is not None:
                info.registry, (info.shortname, info.namespace) = nds.KUBERNETES, parts
            else:
                info.registry = nds.EXTERNAL
        return table

    return ctx.memo.get_or_build(_TABLES, (scope.key,), build)
