"""LDS for sidecars (gateways are in ``gateway``).

Two interception modes (node metadata ``INTERCEPTION_MODE``):

* ``NONE`` (the local runtime): the application uses its sidecar as an explicit HTTP proxy (``http_proxy``), so
  the sidecar binds one HTTP listener on its own address at ``OUTBOUND_PORT`` (15001) routed by Host header with
  route configuration ``http_proxy``. Inbound listeners bind the instance's address on each ``INBOUND_PORTS``
  port and forward to the application at ``APP_ADDRESS``.
* ``REDIRECT`` (Kubernetes with iptables): Istio's ``virtualOutbound`` (15001) and ``virtualInbound`` (15006)
  listeners hand connections to the per-port listeners by original destination.

In ``REDIRECT`` mode the per-port outbound listeners (``0.0.0.0_9080`` with RDS "9080", TCP ``<vip>_<port>``,
TLS by SNI) are generated with ``bind_to_port: false``, as Istio does: they receive connections only through the
virtual listener. ``NONE`` mode has no listener that hands connections over by original destination, so it gets
no per-port listeners (nor their route configurations): they could never be reached, and at 1,000 services they
were ~30 % of every sidecar's configuration.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2

from meshplane.model.proxy import InboundPort, Proxy, ProxyType
from meshplane.model.resources import SERVICE_ENTRIES, TRAFFIC_LABELS
from meshplane.model.service import Protocol, Service, ServicePort, parse_protocol
from meshplane.model.spec import MutualTLSMode
from meshplane.model.spec import ServiceEntry as ServiceEntrySpec
from meshplane.translate import telemetry
from meshplane.translate.accesslog import authz_access_logs
from meshplane.translate.authz import authz_tcp_filters
from meshplane.translate.clusters import known_cluster_names, uses_dynamic_forward_proxy
from meshplane.translate.common import BLACKHOLE, PASSTHROUGH, cluster_name, duration, pack, selects_workload
from meshplane.translate.context import MESH_GATEWAY, PushContext
from meshplane.translate.filters import http_connection_manager, tcp_proxy, tls_inspector
from meshplane.translate.hosts import resolve_host
from meshplane.translate.httproute import RouteScope
from meshplane.translate.httpsecurity import security_http_filters
from meshplane.translate.memo import Slot
from meshplane.translate.nametable import service_vips
from meshplane.translate.peerauthn import inbound_mtls_mode
from meshplane.translate.routes import HTTP_PROXY_ROUTE
from meshplane.translate.tcproute import service_tcp_targets, tls_chains
from meshplane.translate.telemetryapi import TelemetryPolicy, telemetry_policy
from meshplane.translate.tls import mesh_inbound_tls
from meshplane.translate.tracing import hcm_tracing
from meshplane.translate.trafficlabel import attach, inbound_script


def _address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def _listener(name: str, ip: str, port: int, bind: bool = True) -> listener_pb2.Listener:
    lst = listener_pb2.Listener(name=name, address=_address(ip, port))
    if not bind:
        lst.bind_to_port.value = False
    return lst


# (endpoint address, port) -> protocol: from endpoints, so rebuilt after every push.
_INBOUND_PROTOCOLS: Slot[None, Mapping[tuple[str, int], Protocol]] = Slot("inbound-protocols")
# The ServiceEntries selecting a workload (namespace, labels), with their services: config only.
_SELECTING_ENTRIES: Slot[tuple[str, tuple[tuple[str, str], ...]], tuple[tuple[ServiceEntrySpec, Service], ...]] = Slot(
    "selecting-service-entries", endpoint_free=True)
# (endpoint address, port) -> the service selecting it, for the metrics' destination_service.
_INBOUND_SERVICES: Slot[None, Mapping[tuple[str, int], Service]] = Slot("inbound-services")
# Inbound TCP authorization filters of a workload (by namespace and labels).
_TCP_SECURITY_FILTERS: Slot[tuple[str, tuple[tuple[str, str], ...]], list[listener_components_pb2.Filter]] = Slot(
    "inbound-tcp-security-filters")


def _inbound_protocols(ctx: PushContext) -> Mapping[tuple[str, int], Protocol]:
    """(endpoint address, endpoint port) -> protocol of the service port that selects it."""
    def build() -> Mapping[tuple[str, int], Protocol]:
        table: dict[tuple[str, int], Protocol] = {}
        for host, eps in ctx.registry.endpoints.items():
            svc = ctx.service(host)
            if svc is None:
                continue
            for sp in svc.ports:
                for e in eps:
                    table.setdefault((e.address, e.port_for(sp)), sp.protocol)
        return table

    return ctx.memo.get_or_build(_INBOUND_PROTOCOLS, None, build)


def _selecting_service_entry(proxy: Proxy, ip: InboundPort, ctx: PushContext) -> Service | None:
    """A ServiceEntry whose workloadSelector selects this proxy and one of whose ports lands on ``ip`` (by target
    port, number or name): from config alone, so it is known when the proxy's first listeners are built, before
    its own endpoint is registered (an endpoint-only push rebuilds no listener)."""
    def build() -> tuple[tuple[ServiceEntrySpec, Service], ...]:
        found = []
        for obj in sorted(ctx.config.of(SERVICE_ENTRIES), key=lambda o: (o.meta.namespace, o.meta.name)):
            spec = obj.spec
            assert isinstance(spec, ServiceEntrySpec)
            if spec.workload_selector is None or not spec.hosts or not selects_workload(
                    obj.meta, spec.workload_selector, proxy):
                continue
            svc = ctx.service(resolve_host(spec.hosts[0], obj.meta.namespace, ctx.mesh.domain_suffix))
            if svc is not None:
                found.append((spec, svc))
        return tuple(found)

    # Once per workload (namespace and labels) and config version, not per inbound port and proxy.
    selecting = ctx.memo.get_or_build(_SELECTING_ENTRIES, (proxy.namespace, tuple(sorted(proxy.labels.items()))),
                                      build)
    for spec, svc in selecting:
        if any(ip.port in (sp.target_port, sp.number) or (ip.name and ip.name == sp.name) for sp in spec.ports):
            return svc
    return None


def inbound_service(proxy: Proxy, ip: InboundPort, ctx: PushContext) -> Service | None:
    """The service that selects this workload on this port (the first by host name when several do): Istio's
    ``destination_service`` of what arrives there. Selection by config first, else by the registry's endpoints
    (a Kubernetes member's services, whose selectors the registry keeps as endpoints)."""
    found = _selecting_service_entry(proxy, ip, ctx)
    if found is not None:
        return found

    def build() -> Mapping[tuple[str, int], Service]:
        table: dict[tuple[str, int], Service] = {}
        for host in sorted(ctx.registry.endpoints):
            svc = ctx.service(host)
            if svc is None:
                continue
            for sp in svc.ports:
                for e in ctx.registry.endpoints[host]:
                    table.setdefault((e.address, e.port_for(sp)), svc)
        return table

    table = ctx.memo.get_or_build(_INBOUND_SERVICES, None, build)
    for addr in proxy.ip_addresses:
        svc = table.get((addr, ip.port))
        if svc is not None:
            return svc
    return None


def inbound_protocol(proxy: Proxy, ip: InboundPort, ctx: PushContext) -> Protocol:
    if ip.protocol:
        return parse_protocol(ip.protocol)
    if ip.name:
        guessed = parse_protocol("", ip.name)
        if guessed is not Protocol.TCP:
            return guessed
    table = _inbound_protocols(ctx)
    for addr in proxy.ip_addresses:
        p = table.get((addr, ip.port))
        if p is not None:
            return p
    return Protocol.TCP


def security_tcp_filters(proxy: Proxy, ctx: PushContext) -> list[listener_components_pb2.Filter]:
    """Network RBAC / ext_authz (AuthorizationPolicy) for inbound TCP, before ``tcp_proxy``."""
    return ctx.memo.get_or_build(_TCP_SECURITY_FILTERS, (proxy.namespace, tuple(sorted(proxy.labels.items()))),
                                 lambda: authz_tcp_filters(proxy, ctx))


def _inbound_chains(proxy: Proxy, ip: InboundPort, ctx: PushContext,
                    stat: str) -> list[listener_components_pb2.FilterChain]:
    """The chains of one inbound port, by its PeerAuthentication mode (see ``peerauthn``)."""
    cluster = cluster_name("inbound", ip.port)
    proto = inbound_protocol(proxy, ip, ctx)
    if proto.is_http:
        rcfg = route_pb2.RouteConfiguration(name=cluster)
        rcfg.validate_clusters.value = False
        vh = rcfg.virtual_hosts.add(name=f"inbound|http|{ip.port}", domains=["*"])
        attach([vh], inbound_script(proxy, ctx.config.of(TRAFFIC_LABELS)))  # TrafficLabel context recorder
        r = vh.routes.add(name="default")
        r.match.prefix = "/"
        r.route.cluster = cluster
        r.route.timeout.CopyFrom(duration(0))
        r.route.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration(0))
    service = telemetry.ServiceLabels.of(inbound_service(proxy, ip, ctx))
    policy = telemetry_policy(proxy, ctx)
    identity = telemetry.proxy_identity(proxy, ctx.mesh.trust_domain)  # inbound listeners are this proxy's alone

    def filters(mtls: bool) -> list[listener_components_pb2.Filter]:
        """The chain's filters; the metrics say whether the connection was mutual TLS, so two variants."""
        if proto.is_http:
            logs = [*authz_access_logs(proxy),  # RBAC decisions, for the audit
                    *telemetry.inbound_http_logs(service, policy, mtls=mtls, grpc=proto is Protocol.GRPC,
                                                 identity=identity)]
            return [http_connection_manager(stat, route_config=rcfg, security_filters=security_http_filters(proxy, ctx),
                                            sidecar_inbound=True, access_logs=logs,
                                            peer_filters=telemetry.inbound_peer_filters(policy, mtls=mtls,
                                                                                        identity=identity),
                                            tracing=hcm_tracing(policy.trace(client=False)))]
        return [*security_tcp_filters(proxy, ctx),
                tcp_proxy(stat, cluster,
                          access_logs=telemetry.inbound_tcp_logs(service, policy, mtls=mtls, identity=identity),
                          connect_after_tls=mtls)]

    mode = inbound_mtls_mode(proxy, ip, ctx)
    if mode is MutualTLSMode.DISABLE:
        return [listener_components_pb2.FilterChain(name=cluster, filters=filters(False))]
    mtls = listener_components_pb2.FilterChain(name=f"{cluster}-mtls", filters=filters(True))
    mtls.transport_socket.name = "envoy.transport_sockets.tls"
    mtls.transport_socket.typed_config.CopyFrom(pack(mesh_inbound_tls(ctx.mesh, http=proto.is_http)))
    if mode is MutualTLSMode.STRICT:
        return [mtls]  # a plaintext client fails the TLS handshake
    mtls.filter_chain_match.transport_protocol = "tls"
    plain = listener_components_pb2.FilterChain(name=cluster, filters=filters(False))
    plain.filter_chain_match.transport_protocol = "raw_buffer"
    return [mtls, plain]


def _needs_tls_inspector(chains: list[listener_components_pb2.FilterChain]) -> bool:
    return any(c.filter_chain_match.transport_protocol for c in chains)


def inbound_listeners(proxy: Proxy, ctx: PushContext) -> list[listener_pb2.Listener]:
    out = []
    if proxy.interception_mode == "REDIRECT":
        lst = _listener("virtualInbound", "0.0.0.0", 15006)
        lst.traffic_direction = base_pb2.INBOUND  # server spans (tracing)
        lst.listener_filters.append(listener_components_pb2.ListenerFilter(
            name="envoy.filters.listener.original_dst", typed_config=pack(original_dst_pb2.OriginalDst())))
        for ip in proxy.inbound_ports:
            for chain in _inbound_chains(proxy, ip, ctx, f"inbound_0.0.0.0_{ip.port}"):
                chain.filter_chain_match.destination_port.value = ip.port
                lst.filter_chains.append(chain)
        if _needs_tls_inspector(list(lst.filter_chains)):
            lst.listener_filters.append(tls_inspector())
        lst.default_filter_chain.CopyFrom(listener_components_pb2.FilterChain(
            name="inbound-blackhole", filters=[tcp_proxy("InboundBlackHole", BLACKHOLE)]))
        return [lst]
    for ip in proxy.inbound_ports:
        name = f"inbound_{proxy.listen_address}_{ip.port}"
        lst = _listener(name, proxy.listen_address, ip.port)
        lst.traffic_direction = base_pb2.INBOUND
        lst.filter_chains.extend(_inbound_chains(proxy, ip, ctx, f"inbound_{proxy.listen_address}_{ip.port}"))
        if _needs_tls_inspector(list(lst.filter_chains)):
            lst.listener_filters.append(tls_inspector())
        out.append(lst)
    return out


def _fallback_cluster(policy: str) -> str:
    return BLACKHOLE if policy == "REGISTRY_ONLY" else PASSTHROUGH


def outbound_port_listeners(proxy: Proxy, ctx: PushContext) -> list[listener_pb2.Listener]:
    """Istio's per-port outbound listeners (never bound: reached through a virtual listener, which only REDIRECT
    mode has; none in NONE mode)."""
    if proxy.interception_mode == "NONE":
        return []
    scope = ctx.scope(proxy)
    policy = telemetry_policy(proxy, ctx)
    clusters = known_cluster_names(proxy, ctx)
    dfp = uses_dynamic_forward_proxy(proxy)
    http_ports: set[int] = set()
    tls_ports: dict[int, list[tuple[Service, ServicePort]]] = {}
    tcp: list[tuple[Service, ServicePort]] = []
    for svc in scope.services:
        for p in svc.ports:
            if p.protocol.is_http:
                http_ports.add(p.number)
            elif p.protocol.is_tls:
                tls_ports.setdefault(p.number, []).append((svc, p))
            else:
                tcp.append((svc, p))
    out: dict[str, listener_pb2.Listener] = {}
    for number in sorted(http_ports):
        name = f"0.0.0.0_{number}"
        lst = _listener(name, "0.0.0.0", number, bind=False)
        lst.traffic_direction = base_pb2.OUTBOUND
        lst.filter_chains.add(filters=[http_connection_manager(
            f"outbound_0.0.0.0_{number}", rds=str(number), dynamic_forward_proxy=dfp,
            access_logs=telemetry.outbound_http_logs(policy), peer_filters=telemetry.outbound_peer_filters(policy),
            tracing=hcm_tracing(policy.trace(client=True)))])
        out[name] = lst
    fallback = _fallback_cluster(scope.outbound_policy)
    for number, members in sorted(tls_ports.items()):
        if number in http_ports:
            continue
        name = f"0.0.0.0_{number}"
        lst = _listener(name, "0.0.0.0", number, bind=False)
        lst.listener_filters.append(tls_inspector())
        used: set[str] = set()
        rscope = RouteScope(proxy, ctx, number, frozenset({MESH_GATEWAY}), clusters)
        for svc, p in members:
            vs = ctx.virtual_service_for(svc.hostname, proxy.namespace)
            routed = tls_chains(vs, rscope) if vs is not None else []
            if not routed:
                routed = [([svc.hostname], [(cluster_name("outbound", p.number, "", svc.hostname), 100)])]
            for sni, targets in routed:
                names = [h for h in (sni or [svc.hostname]) if h not in used]
                if not names:
                    continue
                used.update(names)
                chain = lst.filter_chains.add(filters=[tcp_proxy(
                    f"outbound|{number}||{names[0]}", weighted=targets,
                    access_logs=telemetry.outbound_tcp_logs(policy))])
                chain.filter_chain_match.server_names.extend(names)
        lst.default_filter_chain.CopyFrom(listener_components_pb2.FilterChain(
            name="fallback", filters=[tcp_proxy(fallback, fallback)]))
        out[name] = lst
    for svc, p in tcp:
        vips = [a for a in svc.addresses if "/" not in a]
        targets = service_tcp_targets(svc, p, proxy, ctx, clusters)
        # A service without addresses is reached at its auto-allocated VIP (what the DNS proxy answers) and,
        # as before, on 0.0.0.0:PORT when no other service took that port.
        auto = [] if vips else [a for a in service_vips(svc, ctx) if a not in vips]
        for ip in vips or [*auto, "0.0.0.0"]:
            name = f"{ip}_{p.number}"
            if name in out or (ip == "0.0.0.0" and p.number in http_ports):
                continue
            lst = _listener(name, ip, p.number, bind=False)
            lst.filter_chains.add(filters=[tcp_proxy(f"outbound|{p.number}||{svc.hostname}", weighted=targets,
                                                     access_logs=telemetry.outbound_tcp_logs(policy))])
            out[name] = lst
    return [out[k] for k in sorted(out)]


def head_listener(proxy: Proxy, outbound_policy: str, policy: TelemetryPolicy) -> listener_pb2.Listener:
    """The sidecar's entry listener: the explicit HTTP proxy on the instance's own address (NONE mode), or
    ``virtualOutbound`` (REDIRECT), which hands connections to the per-port listeners."""
    if proxy.interception_mode == "NONE":
        identity = telemetry.proxy_identity(proxy)  # this listener is the proxy's alone: its labels are fixed
        name = f"{proxy.listen_address}_{proxy.outbound_port}"
        lst = _listener(name, proxy.listen_address, proxy.outbound_port)
        lst.traffic_direction = base_pb2.OUTBOUND  # client spans (tracing)
        lst.filter_chains.add(filters=[http_connection_manager(
            f"outbound_http_proxy_{proxy.outbound_port}", rds=HTTP_PROXY_ROUTE, explicit_proxy=True,
            dynamic_forward_proxy=True, access_logs=telemetry.outbound_http_logs(policy, identity),
            peer_filters=telemetry.outbound_peer_filters(policy, identity),
            tracing=hcm_tracing(policy.trace(client=True)))])
        return lst
    fallback = _fallback_cluster(outbound_policy)
    lst = _listener("virtualOutbound", "0.0.0.0", proxy.outbound_port)
    lst.use_original_dst.value = True
    lst.default_filter_chain.CopyFrom(listener_components_pb2.FilterChain(
        name=fallback, filters=[tcp_proxy(fallback, fallback)]))
    return lst


def sidecar_listeners(proxy: Proxy, ctx: PushContext) -> list[listener_pb2.Listener]:
    out = [head_listener(proxy, ctx.scope(proxy).outbound_policy, telemetry_policy(proxy, ctx))]
    out.extend(outbound_port_listeners(proxy, ctx))
    out.extend(inbound_listeners(proxy, ctx))
    return out


def build_listeners(proxy: Proxy, ctx: PushContext) -> list[listener_pb2.Listener]:
    if proxy.type is ProxyType.ROUTER:
        from meshplane.translate.gateway import gateway_listeners

        return gateway_listeners(proxy, ctx)
    return sidecar_listeners(proxy, ctx)


__all__ = ["build_listeners", "head_listener", "inbound_listeners", "outbound_port_listeners", "rc",
           "sidecar_listeners"]
