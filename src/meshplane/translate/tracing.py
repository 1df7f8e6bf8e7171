"""Telemetry ``tracing`` -> the HTTP connection manager's tracing and the providers' clusters.

Why here and not in ``filters``: the HTTP connection manager builder only takes a finished ``Tracing`` message; what
a proxy traces is the Telemetry API's answer (``telemetryapi.TracingRule``), what Envoy needs for it is this module's.

- ``opentelemetry`` providers (and the built-in ``meshplane`` collector) use Envoy's OpenTelemetry tracer, OTLP over
  gRPC; ``zipkin`` providers Envoy's Zipkin tracer (HTTP JSON v2 to ``/api/v2/spans``, 128-bit trace ids).
- A span's service is the proxy's workload: listeners are shared by every proxy of a scope, so the name cannot be in
  them; the tracer's environment resource detector reads ``OTEL_RESOURCE_ATTRIBUTES``, which the agent sets from the
  proxy's identity (``model.peer``).
- A provider whose service is an IP address is reached through a static cluster ``tracing|<name>`` (HTTP/2 for
  OTLP); a mesh host through its outbound cluster ``outbound|<port>||<host>``, as Istio does.
- Sampling: ``random_sampling`` is the percentage of requests without a decision that are traced; a request that
  arrives with a sampled W3C ``traceparent`` (or ``x-b3-sampled``) stays traced, so one trace spans the mesh.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import extension_pb2, grpc_service_pb2
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.tracers.opentelemetry.resource_detectors.v3 import environment_resource_detector_pb2
from envoy.type.tracing.v3 import custom_tag_pb2

from meshplane.translate.common import cluster_name, is_ip_address, pack, static_cluster
from meshplane.translate.context import PushContext
from meshplane.translate.telemetryapi import (
    BUILTIN_TRACING,
    TraceProvider,
    TracingRule,
    trace_provider,
    tracing_in_use,
)

OPENTELEMETRY = "envoy.tracers.opentelemetry"
ZIPKIN = "envoy.tracers.zipkin"
ENV_DETECTOR = "envoy.tracers.opentelemetry.resource_detectors.environment"
ZIPKIN_PATH = "/api/v2/spans"
# A span's name: the host and path it was for, without the query (which may carry anything and would make every name
# unique), e.g. ``reviews:9080/reviews/0``; Envoy's default would be only ``ingress`` or ``egress <host>``.
OPERATION = "%REQ(:AUTHORITY)%%PATH(NQ)%"


def provider_cluster(provider: TraceProvider) -> str:
    if is_ip_address(provider.service):
        return f"tracing|{provider.name}"
    return cluster_name("outbound", provider.port, "", provider.service)


def _tracer(provider: TraceProvider) -> hcm_pb2.HttpConnectionManager.Tracing:
    t = hcm_pb2.HttpConnectionManager.Tracing()
    cluster = provider_cluster(provider)
    if provider.kind == "zipkin":
        z = zipkin_pb2.ZipkinConfig(collector_cluster=cluster, collector_endpoint=ZIPKIN_PATH, trace_id_128bit=True,
                                    collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON)
        z.shared_span_context.value = False
        t.provider.name = ZIPKIN
        t.provider.typed_config.CopyFrom(pack(z))
        return t
    otel = opentelemetry_pb2.OpenTelemetryConfig(
        grpc_service=grpc_service_pb2.GrpcService(envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
            cluster_name=cluster)))
    otel.resource_detectors.append(extension_pb2.TypedExtensionConfig(
        name=ENV_DETECTOR, typed_config=pack(environment_resource_detector_pb2.EnvironmentResourceDetectorConfig())))
    t.provider.name = OPENTELEMETRY
    t.provider.typed_config.CopyFrom(pack(otel))
    return t


def hcm_tracing(rule: TracingRule | None) -> hcm_pb2.HttpConnectionManager.Tracing | None:
    """The ``tracing`` of one HTTP connection manager; None: not traced."""
    if rule is None:
        return None
    t = _tracer(rule.provider) if rule.provider is not None else hcm_pb2.HttpConnectionManager.Tracing()
    t.operation = OPERATION
    t.random_sampling.value = rule.sampling
    t.client_sampling.value = 100.0
    t.overall_sampling.value = 100.0
    for tag in rule.tags:
        ct = t.custom_tags.add(tag=tag.tag)
        if tag.kind == "literal":
            ct.literal.value = tag.value
        elif tag.kind == "environment":
            ct.environment.CopyFrom(custom_tag_pb2.CustomTag.Environment(name=tag.value, default_value=tag.default))
        else:
            ct.request_header.CopyFrom(custom_tag_pb2.CustomTag.Header(name=tag.value, default_value=tag.default))
    return t


def tracing_clusters(ctx: PushContext) -> list[cluster_pb2.Cluster]:
    """Static clusters of the tracing providers that are IP addresses (the built-in collector is one), built only
    while some Telemetry or MeshConfig turns tracing on; mesh hosts already have their outbound clusters."""
    if not tracing_in_use(ctx):
        return []
    names = [BUILTIN_TRACING, *(p.name for p in ctx.mesh.telemetry_providers)]
    out = []
    for name in names:
        provider = trace_provider(name, ctx.mesh)
        if provider is None or not is_ip_address(provider.service):
            continue
        out.append(static_cluster(provider_cluster(provider), provider.service, provider.port,
                                  http2=provider.kind == "opentelemetry"))
    return out


__all__ = ["OPENTELEMETRY", "ZIPKIN", "hcm_tracing", "provider_cluster", "tracing_clusters"]
