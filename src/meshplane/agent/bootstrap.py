"""The Envoy bootstrap that connects a sidecar or gateway to meshplane over ADS.

Why a builder and not a template: the bootstrap carries the proxy's identity (node id, metadata, locality) and the
protocol choices the server depends on (ADS over gRPC, ``set_node_on_first_message_only``, State-of-the-World or
Delta). A typed dict is easy to check in tests and to write as JSON (Envoy reads ``.json`` bootstraps); YAML
or binary protobuf are one serialization away. Everything else Envoy learns over xDS.

Limits for a sidecar: an overload manager caps downstream connections (a sidecar should never hold tens of
thousands), and the layered runtime has a static layer (defaults) under an admin layer (so an operator can tune
a live proxy through ``/runtime_modify``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshplane.agent.statsdecode import decoder_lua
from meshplane.model.peer import identity_of
from meshplane.model.proxy import Locality

XDS_CLUSTER = "xds-grpc"
SDS_CLUSTER = "sds-grpc"  # MeshSettings.sds_cluster: what the translated TLS contexts fetch secrets from
EXTAUTHZ_CLUSTER = "opa-extauthz"  # translate.opa: the agent's ext_authz server evaluating ASMOPAPolicies
STATS_CLUSTER = "prometheus_stats"
AGENT_CLUSTER = "agent"  # the agent's status port, behind Envoy's health port (Istio's cluster of that name)
STATS_PORT = 15090  # Istio's port for a proxy's Prometheus metrics



def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:15010"`` or ``"[::1]:15010"`` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r}: expected HOST:PORT")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"address {address!r}: expected HOST:PORT")
    return host, int(port)


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _socket(address: str) -> dict[str, Any]:
    host, port = split_address(address)
    return {"socket_address": {"address": host, "port_value": port}}


def _node_cluster(node_id: str, metadata: Mapping[str, Any]) -> str:
    """Envoy's ``node.cluster`` (required with ADS): ``WORKLOAD.NAMESPACE`` like Istio's service cluster."""
    parts = node_id.split("~")
    pod_ns = parts[2] if len(parts) == 4 else node_id
    namespace = str(metadata.get("NAMESPACE") or pod_ns.partition(".")[2] or "default")
    workload = str(metadata.get("WORKLOAD_NAME") or pod_ns.partition(".")[0] or "proxy")
    return f"{workload}.{namespace}"


def build_bootstrap(
    node_id: str,
    metadata: Mapping[str, Any],
    locality: Locality,
    xds_address: str,
    admin_address: str,
    *,
    delta: bool = False,
    max_downstream_connections: int = 10_000,
    xds_connect_timeout_s: float = 1.0,
    sds_socket: str | None = None,
    extauthz_socket: str | None = None,
    stats_address: str | None = None,
    xds_keepalive_interval_s: float = 30.0,
    trust_domain: str = "cluster.local",
    health_address: str | None = None,
    status_address: str | None = None,
) -> dict[str, Any]:
    """A complete Envoy v3 bootstrap: ADS to ``xds_address`` for listeners and clusters, admin on
    ``admin_address``. ``xds_address`` may list several replicas (``h1:p1,h2:p2``, docs/ha.md): they become the
    endpoints of the ``xds-grpc`` cluster, checked by a TCP health check, and the ADS stream reconnects quickly
    (backoff 0.1-1 s) to a live one when its replica goes away, Envoy serving its last configuration meanwhile.
    ``metadata`` becomes ``node.metadata`` (see docs/proxy-metadata.md for the keys).
    ``sds_socket``: the agent's SDS server (Unix socket path), as the static cluster ``sds-grpc``;
    ``extauthz_socket``: the agent's ext_authz server, as the static cluster ``opa-extauthz``;
    ``stats_address``: where Prometheus scrapes the proxy (``/stats/prometheus``, Istio's port 15090), with the
    mesh metrics under Istio's names and labels (``istio_requests_total``; see ``translate.telemetry``), decoded
    by ``agent.statsdecode`` with this proxy's own identity (from ``metadata``; its principal in ``trust_domain``).
    ``health_address``: Istio's health port (15021): ``/healthz/ready`` there is answered by the agent's status
    port at ``status_address`` (503 while the instance is not ready; 503 from Envoy when the agent is gone), so a
    load balancer or a readiness probe asks Envoy itself, as with Istio's sidecars and gateways.
    ``xds_keepalive_interval_s``: how often Envoy pings the xDS connection (HTTP/2 PING; a dead control plane is
    noticed within that plus 10 s); the server accepts pings down to one a second (xds.XdsSettings)."""
    node_locality = {k: v for k, v in (("region", locality.region), ("zone", locality.zone),
                                       ("sub_zone", locality.subzone)) if v}
    node: dict[str, Any] = {
        "id": node_id,
        "cluster": _node_cluster(node_id, metadata),
        "metadata": dict(metadata),
    }
    if not sds_socket:  # no ``sds-grpc``: tell the control plane not to offer auto mTLS (docs/proxy-metadata.md)
        node["metadata"].setdefault("SDS", "false")
    if node_locality:
        node["locality"] = node_locality
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    xds_endpoints = xds_addresses(xds_address)
    local = [_pipe_cluster(name, path) for name, path in ((SDS_CLUSTER, sds_socket),
                                                          (EXTAUTHZ_CLUSTER, extauthz_socket)) if path]
    listeners: list[dict[str, Any]] = []
    if stats_address:
        listeners.append(_stats_listener(stats_address, _own_identity(metadata, trust_domain)))
        local.append(_static_cluster(STATS_CLUSTER, _socket(admin_address)))
    if health_address and status_address:
        listeners.append(_health_listener(health_address))
        local.append(_static_cluster(AGENT_CLUSTER, _socket(status_address)))
    return {
        "node": node,
        "admin": {"address": _socket(admin_address)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": _xds_grpc(len(xds_endpoints))}],
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {
            "clusters": [{
                "name": XDS_CLUSTER,
                "type": "STATIC",
                "connect_timeout": f"{xds_connect_timeout_s}s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {
                            "connection_keepalive": {"interval": _duration(xds_keepalive_interval_s),
                                                     "timeout": "10s"},
                        }},
                    },
                },
                "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
                "load_assignment": {
                    "cluster_name": XDS_CLUSTER,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(a)}} for a in xds_endpoints]}],
                },
                **_xds_health_check(len(xds_endpoints)),
            }, *local],
            "listeners": listeners,
        },
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": {
                    # As Istio: regexes in user config (VirtualService matches) may exceed RE2's default size.
                    "re2.max_program_size.error_level": 32768,
                }},
                {"name": "admin", "admin_layer": {}},
            ],
        },
        "overload_manager": {
            "resource_monitors": [{
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                             "DownstreamConnectionsConfig",
                    "max_active_downstream_connections": max_downstream_connections,
                },
            }],
        },
    }


def xds_addresses(xds: str) -> list[str]:
    """The ``HOST:PORT`` of each control-plane replica in a comma-separated list (one, without replicas)."""
    return [a.strip() for a in xds.split(",") if a.strip()]


def _xds_grpc(replicas: int) -> dict[str, Any]:
    grpc: dict[str, Any] = {"cluster_name": XDS_CLUSTER}
    if replicas > 1:
        # Envoy's default stream backoff (0.5 s doubling to 30 s) would leave a proxy long on a dead replica.
        grpc["retry_policy"] = {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}}
    return grpc


def _xds_health_check(replicas: int) -> dict[str, Any]:
    """With several replicas, a TCP check takes a dead one out of the ADS cluster within about a second, so a
    reconnecting stream is not sent to it."""
    if replicas < 2:
        return {}
    return {"health_checks": [{
        "timeout": "0.5s",
        "interval": "1s",
        "no_traffic_interval": "1s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "tcp_health_check": {},
    }]}


def _own_identity(metadata: Mapping[str, Any], trust_domain: str) -> dict[str, str]:
    """The labels this proxy's agent fills into its mesh metrics: ``model.peer``'s fields and its SPIFFE id."""
    own = identity_of(metadata)
    namespace = str(metadata.get("NAMESPACE") or "default")
    account = str(metadata.get("SERVICE_ACCOUNT") or "default")
    own["principal"] = f"spiffe://{trust_domain}/ns/{namespace}/sa/{account}"
    return own


_ROUTER = {"name": "envoy.filters.http.router", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def _http_listener(name: str, address: str, *, stat_prefix: str, vhost: str, routes: list[dict[str, Any]],
                   filters: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """A static listener ``name`` of one HTTP connection manager: one catch-all virtual host ``vhost`` with
    ``routes``, ``filters`` before the router."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "route_config": {"virtual_hosts": [{"name": vhost, "domains": ["*"], "routes": routes}]},
        "http_filters": [*filters, _ROUTER],
    }
    return {"name": name, "address": _socket(address),
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def _stats_listener(address: str, own: Mapping[str, str]) -> dict[str, Any]:
    decoder = {"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": decoder_lua(own)}}}
    return _http_listener("prometheus_stats", address, stat_prefix="prometheus_stats", vhost="stats",
                          routes=[{"match": {"prefix": "/stats/prometheus"}, "route": {"cluster": STATS_CLUSTER}}],
                          filters=(decoder,))


def _health_listener(address: str) -> dict[str, Any]:
    """Istio's 15021: ``/healthz/ready`` to the agent's status port, anything else 404."""
    ready = {"match": {"path": "/healthz/ready"}, "route": {"cluster": AGENT_CLUSTER, "timeout": "5s"}}
    return _http_listener("health", address, stat_prefix="agent", vhost="health",
                          routes=[ready, {"match": {"prefix": "/"}, "direct_response": {"status": 404}}])


def _static_cluster(name: str, address: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": address}}]}]}}


def _pipe_cluster(name: str, path: str) -> dict[str, Any]:
    """A static HTTP/2 (gRPC) cluster to a local Unix socket served by the agent."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": path}}}}]}],
        },
    }
