"""Mesh-wide settings translation needs (Istio's MeshConfig subset). Passed explicitly, never read at import."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExtAuthzProvider:
    """An external authorizer AuthorizationPolicy ``CUSTOM`` names (Istio's ``extensionProviders`` entry).

    ``address`` is ``HOST:PORT`` of a gRPC ``envoy.service.auth.v3.Authorization`` server (e.g. OPA next to the
    workload, on loopback); translation gives it a static cluster ``extauthz|<name>``."""

    name: str
    address: str
    timeout_s: float = 1.0
    fail_open: bool = False
    # Headers of the request sent to the authorizer (all when empty).
    include_request_headers: tuple[str, ...] = ()

    @property
    def grpc(self) -> bool:
        """Whether the authorizer speaks gRPC (the only kind a TCP connection can be checked with)."""
        return True


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
    # ISTIO_MUTUAL for endpoints labelled ``security.istio.io/tlsMode: istio`` (they have a sidecar), plaintext for
    # the others, through Envoy's transport_socket_matches.
    auto_mtls: bool = True
    # AuthorizationPolicy CUSTOM providers by name.
    ext_authz_providers: tuple[ExtAuthzProvider, ...] = ()

    def ext_authz_provider(self, name: str) -> ExtAuthzProvider | None:
        return next((p for p in self.ext_authz_providers if p.name == name), None)
