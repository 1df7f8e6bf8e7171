"""Mesh-wide settings (Istio's MeshConfig, as ``model.meshconfig`` reads it): what translation needs, passed
explicitly, never read at import. In ``model`` so that admission (``api``) and translation see one type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BodyInCheck:
    """``includeRequestBodyInCheck``: buffer the request body (up to ``max_request_bytes``) into the check."""

    max_request_bytes: int = 0
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


@dataclass(frozen=True, slots=True)
class ExtAuthzProvider:
    """An external authorizer AuthorizationPolicy ``CUSTOM`` names (Istio's ``extensionProviders`` entry
    ``envoyExtAuthzHttp`` when ``http``, else ``envoyExtAuthzGrpc``).

    ``service`` is a mesh host name (its cluster ``outbound|port||service`` is used, as Istio does) or an IP
    address (a static cluster ``extauthz|<name>``: an authorizer next to the workload, on loopback)."""

    name: str
    service: str
    port: int
    http: bool = False
    timeout_s: float = 600.0  # Istio's default
    fail_open: bool = False
    status_on_error: int = 0  # 0: Envoy's default (403)
    clear_route_cache: bool = False
    body: BodyInCheck | None = None
    # HTTP only (Istio refuses them on gRPC providers too).
    path_prefix: str = ""
    include_request_headers: tuple[str, ...] = ()  # Istio's wildcard forms: "abc", "abc*", "*abc"
    include_additional_headers: tuple[tuple[str, str], ...] = ()
    headers_to_upstream_on_allow: tuple[str, ...] = ()
    headers_to_downstream_on_allow: tuple[str, ...] = ()
    headers_to_downstream_on_deny: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return f"{self.service}:{self.port}"

    @property
    def grpc(self) -> bool:
        """Whether the authorizer speaks gRPC (the only kind a TCP connection can be checked with)."""
        return not self.http


@dataclass(frozen=True, slots=True)
class TelemetryProvider:
    """An ``extensionProviders`` entry for the Telemetry API (tracing, access logs, metrics): parsed and kept with
    its fields as given (``kind`` is Istio's key, e.g. ``opentelemetry``); read by ``translate.telemetryapi``
    (``envoyFileAccessLog`` access logs; ``opentelemetry`` and ``zipkin`` tracing)."""

    name: str
    kind: str
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class MeshSettings:
    trust_domain: str = "cluster.local"
    # The DNS suffix short names are qualified with: reviews -> reviews.<ns>.svc.<domain_suffix>.
    domain_suffix: str = "cluster.local"
    root_namespace: str = "istio-system"
    outbound_traffic_policy: str = "ALLOW_ANY"  # or REGISTRY_ONLY
    # Prioritise endpoints by locality relative to the proxy. Unlike Istio, also without outlierDetection
    # when ``locality_lb_requires_outlier_detection`` is False (Istio's most reported locality trap).
    locality_lb_enabled: bool = True
    locality_lb_requires_outlier_detection: bool = False
    # Failover that does not depend on the user remembering outlierDetection: while locality load balancing is on,
    # an EDS cluster whose DestinationRule says nothing about outlierDetection gets this passive health check
    # (consecutive gateway failures: 502/503/504 and connect failures; an application's own 500s eject nothing),
    # so a zone whose instances die is ejected before the control plane hears of it. 0 turns it off.
    failover_consecutive_gateway_errors: int = 5
    failover_ejection_interval_s: float = 1.0
    failover_base_ejection_s: float = 5.0
    connect_timeout_s: float = 10.0
    # Name of the bootstrap cluster serving SDS (the agent's local socket), as Istio's "sds-grpc".
    sds_cluster: str = "sds-grpc"
    # Inbound listeners also accept ISTIO_MUTUAL (permissive: TLS and plaintext chains). Needs SDS secrets.
    inbound_mtls: bool = False
    # Default HTTP retries when a VirtualService route says nothing (Istio: 2).
    default_retry_attempts: int = 2
    # The SDS resource names of the workload certificate and the trust bundle (Istio's names).
    workload_secret: str = "default"
    root_secret: str = "ROOTCA"
    # Auto mTLS (Istio's enableAutoMtls): clusters of MESH_INTERNAL services without DestinationRule TLS use
    # ISTIO_MUTUAL for endpoints labelled ``security.istio.io/tlsMode: istio`` (they have a sidecar) unless their
    # PeerAuthentication makes the port DISABLE, plaintext for the others, through Envoy's transport_socket_matches.
    auto_mtls: bool = True
    # AuthorizationPolicy CUSTOM providers by name.
    ext_authz_providers: tuple[ExtAuthzProvider, ...] = ()
    # Telemetry API providers (MeshConfig extensionProviders other than ext_authz).
    telemetry_providers: tuple[TelemetryProvider, ...] = ()
    # MeshConfig's mesh-wide access log and tracing switch (``translate.telemetryapi``).
    access_log_file: str = ""
    access_log_format: str = ""
    access_log_encoding: str = ""
    enable_tracing: bool = False
    # host:port of the control plane's own OTLP/gRPC trace collector (``rpc.otlp``), the built-in tracing provider
    # ``meshplane``; empty: none (tracing then needs an ``opentelemetry``/``zipkin`` extension provider).
    tracing_collector: str = ""
    default_config: tuple[tuple[str, str], ...] = ()

    def ext_authz_provider(self, name: str) -> ExtAuthzProvider | None:
        return next((p for p in self.ext_authz_providers if p.name == name), None)
