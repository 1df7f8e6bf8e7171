"""Multi-network: east-west gateways and the EDS rewrite that sends cross-network traffic through them.

Why: a workload in another network has no route from here, only that network's east-west gateway has, so
Istio never sends to a remote network's endpoints directly. Two halves, both pure:

* **Sidecars (and other gateways).** In a ClusterLoadAssignment, endpoints on the proxy's own network stay as
  they are; the endpoints of another network are replaced by that network's east-west gateway
  (``address:15443``), one endpoint per (network, locality) with the weight of the endpoints it stands for, the
  locality, network and cluster of those endpoints (so locality priorities and ``failoverPriority`` still see
  them), and the ``tlsMode: istio`` metadata that makes the cluster's auto mTLS transport socket apply: ISTIO_MUTUAL
  with SNI ``outbound_.PORT_.SUBSET_.HOST`` (``tls.upstream_tls``). The destination sidecar terminates that
  mTLS session. Once any east-west gateway exists (Istio's "multi-network enabled"), a network without one gets
  nothing: its endpoints are dropped, never reached directly. With no east-west gateway at all the mesh is one
  flat network and EDS is unchanged, as in Istio.
* **East-west gateways** (a router proxy labelled ``istio: eastwestgateway``, or one selected by a Gateway whose
  server says ``tls.mode: AUTO_PASSTHROUGH``). Like Istio's ``sni-dnat`` router mode, it gets one plaintext EDS
  cluster per outbound cluster, named after the SNI (``outbound_.PORT_.SUBSET_.HOST``), sharing the outbound
  cluster's ClusterLoadAssignment (which for this gateway holds only the endpoints of its own network), and a
  listener on 15443 (or the AUTO_PASSTHROUGH server's port) with the TLS inspector and one filter chain per SNI
  name that TCP-proxies the still-encrypted stream to that cluster.
  The gateway never terminates the client's mTLS (AUTO_PASSTHROUGH). A labelled east-west gateway needs no
  Gateway resource; Istio's ``expose-services`` Gateway (AUTO_PASSTHROUGH on 15443) is accepted as well.

Gateways are found in the registry: an endpoint (of any service, e.g. the runtime's ``istio-eastwestgateway``
ServiceEntry or a Kubernetes Service) labelled ``istio: eastwestgateway`` is its network's gateway (its network
from ``topology.istio.io/network``); the index is built once per push context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2

from meshplane.model import spec as istio
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.service import EASTWEST_LABEL, Endpoint, ServicePort
from meshplane.translate.context import PushContext
from meshplane.translate.filters import tcp_proxy, tls_inspector
from meshplane.translate.memo import Slot
from meshplane.translate.tls import TLS_MODE_LABEL

EASTWEST_PORT = 15443
NETWORK_LABEL = "topology.istio.io/network"
CLUSTER_LABEL = "topology.istio.io/cluster"
_SNI_PREFIX = "outbound_."


def is_eastwest_gateway(proxy: Proxy) -> bool:
    return proxy.type is ProxyType.ROUTER and proxy.labels.get(EASTWEST_LABEL[0]) == EASTWEST_LABEL[1]


def sni_name(port: int, subset: str, host: str) -> str:
    """Istio's SNI (and sni-dnat cluster name) for ``outbound|PORT|SUBSET|HOST``."""
    return f"{_SNI_PREFIX}{port}_.{subset}_.{host}"


def parse_sni_name(name: str) -> tuple[int, str, str] | None:
    """``outbound_.9080_.v1_.reviews.default.svc.cluster.local`` -> (9080, "v1", host)."""
    if not name.startswith(_SNI_PREFIX):
        return None
    parts = name[len(_SNI_PREFIX):].split("_.", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2]:
        return None
    return int(parts[0]), parts[1], parts[2]


# network -> east-west gateway addresses: from endpoints, so rebuilt after every push.
_GATEWAYS: Slot[None, Mapping[str, tuple[tuple[str, int], ...]]] = Slot("eastwest-gateways")


def network_gateways(ctx: PushContext) -> Mapping[str, tuple[tuple[str, int], ...]]:
    """network -> its east-west gateways' ``(address, port)``, from the registry (healthy endpoints labelled
    ``istio: eastwestgateway``). Memoised per push context (an endpoint change makes a new context)."""
    hit = ctx.memo.get(_GATEWAYS, None)
    if hit is None:
        found: dict[str, set[tuple[str, int]]] = {}
        for host, eps in ctx.registry.endpoints.items():
            svc = ctx.service(host)
            for e in eps:
                if e.labels.get(EASTWEST_LABEL[0]) != EASTWEST_LABEL[1] or not e.healthy:
                    continue
                net = e.network or e.labels.get(NETWORK_LABEL, "")
                if not net:
                    continue
                sp = svc.port(EASTWEST_PORT) if svc is not None else None
                found.setdefault(net, set()).add((e.address, e.port_for(sp) if sp is not None else EASTWEST_PORT))
        hit = ctx.memo.put(_GATEWAYS, None, {net: tuple(sorted(gws)) for net, gws in found.items()})
    return hit


def _same_network(proxy_network: str, ep: Endpoint) -> bool:
    # An endpoint or proxy without a network is on every network (Istio's rule for unset networks).
    return not proxy_network or not ep.network or ep.network == proxy_network


def through_gateways(proxy: Proxy, eps: Sequence[Endpoint], port: ServicePort,
                     ctx: PushContext) -> list[Endpoint]:
    """The endpoints ``proxy`` should be sent: own network as is, other networks replaced by their east-west
    gateway (see the module docstring); an east-west gateway itself keeps only its own network's endpoints."""
    if is_eastwest_gateway(proxy):
        return [e for e in eps if _same_network(proxy.network, e)]
    if all(_same_network(proxy.network, e) for e in eps):
        return list(eps)  # the common case costs one pass over the endpoints, no registry scan
    gateways = network_gateways(ctx)
    if not gateways:
        return list(eps)  # no east-west gateway anywhere: one flat network (Istio: multi-network not enabled)
    out: list[Endpoint] = []
    remote: dict[tuple[str, object], list[Endpoint]] = {}
    for e in eps:
        if _same_network(proxy.network, e):
            out.append(e)
        else:
            remote.setdefault((e.network, e.locality), []).append(e)
    for (net, _), members in sorted(remote.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        gws = gateways.get(net)
        if not gws:
            continue  # no east-west gateway: unreachable, never direct
        healthy = [m for m in members if m.healthy]
        first = members[0]
        weight = sum(m.weight for m in healthy) or 1
        for address, gw_port in gws:
            out.append(Endpoint(
                address=address, ports={port.name: gw_port},
                labels={TLS_MODE_LABEL: "istio", NETWORK_LABEL: net, CLUSTER_LABEL: first.cluster_id},
                cluster_id=first.cluster_id, network=net, locality=first.locality, healthy=bool(healthy),
                weight=max(1, weight // len(gws)), workload_name=EASTWEST_LABEL[1]))
    return out


# --- the east-west gateway itself ---------------------------------------------------------------------------


def sni_dnat_clusters(outbound: Sequence[cluster_pb2.Cluster]) -> list[cluster_pb2.Cluster]:
    """Plaintext twins of the outbound EDS clusters, named by SNI: the gateway forwards the client's TLS bytes
    unchanged, so it must not originate TLS of its own."""
    out: list[cluster_pb2.Cluster] = []
    for c in outbound:
        if c.type != cluster_pb2.Cluster.EDS or not c.name.startswith("outbound|"):
            continue
        _, port, subset, host = c.name.split("|", 3)
        twin = cluster_pb2.Cluster()
        twin.CopyFrom(c)
        # Same EDS service name as the outbound cluster: one ClusterLoadAssignment (already restricted to the
        # gateway's network) serves both, and endpoint pushes find it by host like any other.
        twin.name = twin.alt_stat_name = sni_name(int(port), subset, host)
        twin.ClearField("transport_socket")
        twin.ClearField("transport_socket_matches")
        twin.ClearField("typed_extension_protocol_options")  # bytes, not HTTP: no codec options
        out.append(twin)
    return out


def _is_auto_passthrough(server: istio.Server) -> bool:
    return server.tls is not None and server.tls.mode is istio.ServerTLSMode.AUTO_PASSTHROUGH


def auto_passthrough_ports(proxy: Proxy, ctx: PushContext) -> list[int]:
    """The ports (as the gateway listens on them) of its AUTO_PASSTHROUGH servers, and 15443 for a labelled
    east-west gateway."""
    ports: set[int] = set()
    for gw in ctx.scope(proxy).gateways:
        for server in gw.servers:
            port = server.port
            if _is_auto_passthrough(server) and port is not None and port.number:
                ports.add(port.target_port or proxy.gateway_listen_port(port.number))
    if is_eastwest_gateway(proxy):
        ports.add(proxy.gateway_listen_port(EASTWEST_PORT))
    return sorted(ports)


def is_sni_dnat(proxy: Proxy, ctx: PushContext) -> bool:
    return proxy.type is ProxyType.ROUTER and bool(auto_passthrough_ports(proxy, ctx))


def sni_dnat_listeners(proxy: Proxy, ctx: PushContext, cluster_names: frozenset[str],
                       taken: frozenset[int] = frozenset()) -> list[listener_pb2.Listener]:
    """One listener per AUTO_PASSTHROUGH port not ``taken`` by another server: TLS inspector, and per SNI-named
    cluster a chain matching that SNI that TCP-proxies to it."""
    names = sorted(n for n in cluster_names if parse_sni_name(n) is not None)
    out: list[listener_pb2.Listener] = []
    for listen_port in auto_passthrough_ports(proxy, ctx):
        if listen_port in taken or not names:
            continue
        lst = listener_pb2.Listener(name=f"{proxy.listen_address}_{listen_port}", address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=proxy.listen_address, port_value=listen_port)))
        lst.listener_filters.append(tls_inspector())
        stat = f"sni_dnat_{listen_port}"
        for name in names:
            chain = listener_components_pb2.FilterChain(name=name, filters=[tcp_proxy(stat, name)])
            chain.filter_chain_match.server_names.append(name)
            lst.filter_chains.append(chain)
        out.append(lst)
    return out
