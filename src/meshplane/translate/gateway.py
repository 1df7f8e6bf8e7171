"""Gateways (proxy type ``router``): listeners from the servers of the Gateways that select the proxy, and
route configurations from the VirtualServices bound to those Gateways.

A Gateway server's port is the gateway Service's port; the Envoy listens on the port the proxy's
``GATEWAY_PORTS`` metadata maps it to (80 -> 8080 when run without root), like Istio's gateway pods behind
their Service. Route configurations are named as Istio names them: ``http.80`` for plain HTTP servers of a port,
``https.443.NAME.GATEWAY.NAMESPACE`` for each terminated HTTPS server.
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from meshplane.model import spec as istio
from meshplane.model.proxy import Proxy
from meshplane.model.spec import ServerTLSMode
from meshplane.translate import telemetry
from meshplane.translate.authz import authz_tcp_filters
from meshplane.translate.clusters import known_cluster_names
from meshplane.translate.context import GatewayRec, PushContext, VirtualServiceRec
from meshplane.translate.eastwest import sni_dnat_listeners
from meshplane.translate.filters import http_connection_manager, tcp_proxy, tls_inspector
from meshplane.translate.hosts import hosts_intersect, more_specific, namespace_matches
from meshplane.translate.httproute import RouteScope, http_routes
from meshplane.translate.httpsecurity import security_http_filters
from meshplane.translate.tcproute import tcp_targets, tls_chains
from meshplane.translate.telemetryapi import telemetry_policy
from meshplane.translate.tls import gateway_server_tls, transport_socket
from meshplane.translate.tracing import hcm_tracing

_NO_TLS = istio.ServerTLSSettings()
_PASSTHROUGH = frozenset({ServerTLSMode.PASSTHROUGH, ServerTLSMode.AUTO_PASSTHROUGH})
_HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})


@dataclass(frozen=True, slots=True)
class Server:
    gateway: GatewayRec
    spec: istio.Server
    port: int  # the Service port the Gateway names
    listen_port: int
    protocol: str
    port_name: str
    hosts: tuple[tuple[str, str], ...]  # (namespace pattern, host pattern)

    @property
    def tls(self) -> istio.ServerTLSSettings:
        return self.spec.tls or _NO_TLS

    @property
    def tls_mode(self) -> ServerTLSMode:
        return self.tls.mode or ServerTLSMode.SIMPLE

    @property
    def is_passthrough(self) -> bool:
        return self.protocol in ("TLS", "HTTPS") and self.tls_mode in _PASSTHROUGH

    @property
    def is_http(self) -> bool:
        return self.protocol in _HTTP_PROTOCOLS

    @property
    def is_https(self) -> bool:
        return self.protocol == "HTTPS" and not self.is_passthrough

    def route_name(self) -> str:
        if self.is_https:
            return f"https.{self.port}.{self.port_name}.{self.gateway.name}.{self.gateway.namespace}"
        return f"http.{self.port}"

    def sni_names(self) -> list[str]:
        return sorted({h for _, h in self.hosts if h != "*"})

    def admits(self, vs: VirtualServiceRec, host: str) -> str | None:
        """The domain this server serves ``host`` of ``vs`` under, or None."""
        for ns, pattern in self.hosts:
            if namespace_matches(ns, vs.namespace, self.gateway.namespace) and hosts_intersect(pattern, host):
                return more_specific(pattern, host)
        return None


def _server_hosts(spec: istio.Server) -> tuple[tuple[str, str], ...]:
    """``ns/host`` patterns as (namespace, host); a bare host is in any namespace; no hosts is ``*``."""
    out = []
    for h in spec.hosts or ("*",):
        ns, sep, host = h.partition("/")
        out.append((ns, host) if sep else ("*", ns))
    return tuple(out)


def _server(gw: GatewayRec, spec: istio.Server, proxy: Proxy) -> Server | None:
    port = spec.port or istio.Port()
    if not port.number:
        return None
    listen = port.target_port or proxy.gateway_listen_port(port.number)
    return Server(gw, spec, port.number, listen, (port.protocol or "HTTP").upper(), port.name or str(port.number),
                  _server_hosts(spec))


def gateway_servers(proxy: Proxy, ctx: PushContext) -> dict[int, list[Server]]:
    out: dict[int, list[Server]] = {}
    for gw in ctx.scope(proxy).gateways:
        for spec in gw.servers:
            server = _server(gw, spec, proxy)
            if server is not None:
                out.setdefault(server.listen_port, []).append(server)
    return out


def _bound(ctx: PushContext, server: Server) -> tuple[VirtualServiceRec, ...]:
    return ctx.index.gateway_virtual_services.get(server.gateway.key, ())


def _route_config(name: str, servers: list[Server], proxy: Proxy, ctx: PushContext) -> route_pb2.RouteConfiguration:
    clusters = known_cluster_names(proxy, ctx)
    cfg = route_pb2.RouteConfiguration(name=name)
    cfg.validate_clusters.value = False
    vhosts: dict[str, rc.VirtualHost] = {}
    seen_vs: set[tuple[str, str, str]] = set()
    for server in servers:
        scope = RouteScope(proxy, ctx, server.port, frozenset({server.gateway.key}), clusters)
        redirect = server.is_http and bool(server.tls.https_redirect)
        for vs in _bound(ctx, server):
            if not vs.spec.http:
                continue
            for host in vs.hosts:
                domain = server.admits(vs, host)
                if domain is None or (vs.namespace, vs.name, domain) in seen_vs:
                    continue
                seen_vs.add((vs.namespace, vs.name, domain))
                vh = vhosts.get(domain)
                if vh is None:
                    domains = [domain] if "*" in domain else [domain, f"{domain}:*"]
                    vh = rc.VirtualHost(name=f"{domain}:{server.port}", domains=domains)
                    vhosts[domain] = vh
                if redirect:
                    vh.require_tls = rc.VirtualHost.ALL
                vh.routes.extend(http_routes(vs, scope))
    for domain in sorted(vhosts, key=lambda d: (d == "*", d.startswith("*"), d)):
        cfg.virtual_hosts.append(vhosts[domain])
    if not cfg.virtual_hosts:
        vh = cfg.virtual_hosts.add(name=f"blackhole:{servers[0].port if servers else 0}", domains=["*"])
        r = vh.routes.add(name="no-virtual-service")
        r.match.prefix = "/"
        r.direct_response.status = 404
    return cfg


def gateway_route_configs(proxy: Proxy, ctx: PushContext) -> list[route_pb2.RouteConfiguration]:
    by_name: dict[str, list[Server]] = {}
    for servers in gateway_servers(proxy, ctx).values():
        for s in servers:
            if s.is_http or s.is_https:
                by_name.setdefault(s.route_name(), []).append(s)
    return [_route_config(name, servers, proxy, ctx) for name, servers in sorted(by_name.items())]


def _chain_key(chain: listener_components_pb2.FilterChain) -> tuple[object, ...]:
    m = chain.filter_chain_match
    return (tuple(m.server_names), m.transport_protocol, tuple(m.application_protocols))


def _server_chains(s: Server, proxy: Proxy, ctx: PushContext, clusters: frozenset[str],
                   stat: str) -> list[listener_components_pb2.FilterChain]:
    """The filter chains of one non-HTTP server: terminated HTTPS to its route configuration, TLS passthrough by
    the SNI of the bound ``tls`` routes, TCP (or TLS terminated here) by the first bound ``tcp`` route."""
    scope = RouteScope(proxy, ctx, s.port, frozenset({s.gateway.key}), clusters)
    policy = telemetry_policy(proxy, ctx)
    ident = telemetry.proxy_identity(proxy)  # a gateway's listeners are its own: its labels are fixed
    if s.is_https:
        chain = listener_components_pb2.FilterChain(
            filters=[http_connection_manager(stat, rds=s.route_name(), gateway=True,
                                             security_filters=security_http_filters(proxy, ctx),
                                             access_logs=telemetry.outbound_http_logs(policy, ident),
                                             peer_filters=telemetry.outbound_peer_filters(policy, ident),
                                             tracing=hcm_tracing(policy.trace(client=True)))],
            transport_socket=transport_socket(gateway_server_tls(s.tls, ctx.mesh, ["h2", "http/1.1"])))
        chain.filter_chain_match.server_names.extend(s.sni_names())
        return [chain]
    chains = []
    if s.is_passthrough:
        for vs in _bound(ctx, s):
            for sni, targets in tls_chains(vs, scope):
                chain = listener_components_pb2.FilterChain(filters=[*authz_tcp_filters(proxy, ctx), tcp_proxy(
                    stat, weighted=targets, access_logs=telemetry.outbound_tcp_logs(policy, ident))])
                chain.filter_chain_match.server_names.extend(sorted({h for h in sni if s.admits(vs, h) is not None}))
                chains.append(chain)
        return chains
    for vs in _bound(ctx, s):
        tcp_to = tcp_targets(vs, scope)
        if tcp_to:
            chain = listener_components_pb2.FilterChain(filters=[*authz_tcp_filters(proxy, ctx), tcp_proxy(
                stat, weighted=tcp_to, access_logs=telemetry.outbound_tcp_logs(policy, ident))])
            if s.protocol == "TLS":
                chain.filter_chain_match.server_names.extend(s.sni_names())
                chain.transport_socket.CopyFrom(transport_socket(gateway_server_tls(s.tls, ctx.mesh)))
            return [chain]
    return []


def gateway_listeners(proxy: Proxy, ctx: PushContext) -> list[listener_pb2.Listener]:
    out: list[listener_pb2.Listener] = []
    clusters = known_cluster_names(proxy, ctx)
    for listen_port, servers in sorted(gateway_servers(proxy, ctx).items()):
        name = f"{proxy.listen_address}_{listen_port}"
        lst = listener_pb2.Listener(name=name, address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=proxy.listen_address, port_value=listen_port)), traffic_direction=base_pb2.OUTBOUND)
        stat = f"outbound_{proxy.listen_address}_{listen_port}"
        chains: list[listener_components_pb2.FilterChain] = []
        first = servers[0]
        if first.is_http:
            policy = telemetry_policy(proxy, ctx)
            ident = telemetry.proxy_identity(proxy)
            chains.append(listener_components_pb2.FilterChain(
                filters=[http_connection_manager(stat, rds=first.route_name(), gateway=True,
                                                 security_filters=security_http_filters(proxy, ctx),
                                                 access_logs=telemetry.outbound_http_logs(policy, ident),
                                                 peer_filters=telemetry.outbound_peer_filters(policy, ident),
                                                 tracing=hcm_tracing(policy.trace(client=True)))]))
        else:
            need_inspector = False
            for s in servers:
                if s.tls_mode is ServerTLSMode.AUTO_PASSTHROUGH:
                    continue  # routed by SNI to sni-dnat clusters, not by VirtualServices (``eastwest``)
                server_chains = _server_chains(s, proxy, ctx, clusters, stat)
                chains += server_chains
                need_inspector = need_inspector or s.is_https or s.is_passthrough or (
                    s.protocol == "TLS" and bool(server_chains))
            if need_inspector:
                lst.listener_filters.append(tls_inspector())
        unique: dict[tuple[object, ...], listener_components_pb2.FilterChain] = {}
        for c in chains:
            unique.setdefault(_chain_key(c), c)
        if not unique:
            continue
        lst.filter_chains.extend(unique.values())
        out.append(lst)
    taken = frozenset(lst.address.socket_address.port_value for lst in out)
    out.extend(sni_dnat_listeners(proxy, ctx, clusters, taken))  # east-west gateway (AUTO_PASSTHROUGH)
    return out
