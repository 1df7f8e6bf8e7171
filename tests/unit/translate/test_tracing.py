"""Telemetry ``tracing`` and MeshConfig tracing providers -> the HTTP connection managers' tracing and the
providers' clusters (``translate.tracing``), validated by a real Envoy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _translate_helpers import (
    bookinfo_registry,
    clusters,
    context,
    envoy_validate,
    gateway,
    hcm_of,
    istio_object,
    listeners,
    sidecar,
)
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2

from meshplane.model.mesh import MeshSettings
from meshplane.model.meshconfig import parse_mesh_config
from meshplane.model.peer import peer_environment
from meshplane.translate.telemetryapi import telemetry_policy

COLLECTOR = MeshSettings(tracing_collector="127.0.0.1:15017")
INBOUND = "inbound_127.0.1.3_9080"  # reviews-v1's


def _telemetry(name: str, ns: str, spec: dict[str, Any], created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    obj = istio_object("Telemetry", name, ns, spec)
    obj["apiVersion"] = "telemetry.istio.io/v1"
    obj["metadata"]["creationTimestamp"] = created
    return obj


def _outbound(proxy: Any, ctx: Any) -> Any:
    (head,) = [lst for name, lst in listeners(proxy, ctx).items() if name.endswith("_15001")]  # the explicit proxy
    h = hcm_of(head.filter_chains[0])
    assert h is not None
    return h


def _inbound(proxy: Any, ctx: Any) -> Any:
    h = hcm_of(listeners(proxy, ctx)[INBOUND].filter_chains[0])
    assert h is not None
    return h


def test_istio_task_telemetry_traces_every_request_to_the_builtin_collector(tmp_path: Path) -> None:
    spec = {"tracing": [{"randomSamplingPercentage": 100.0,
                         "customTags": {"team": {"literal": {"value": "bookinfo"}},
                                       "user": {"header": {"name": "x-user", "defaultValue": "anon"}},
                                       "pod": {"environment": {"name": "POD_NAME"}}}}]}
    ctx = context([*bookinfo_registry(), _telemetry("mesh-default", "istio-system", spec)], COLLECTOR)
    proxy = sidecar("reviews", "v1")
    for h in (_outbound(proxy, ctx), _inbound(proxy, ctx)):
        t = h.tracing
        assert t.random_sampling.value == 100.0 and t.provider.name == "envoy.tracers.opentelemetry"
        assert t.operation == "%REQ(:AUTHORITY)%%PATH(NQ)%"
        otel = opentelemetry_pb2.OpenTelemetryConfig()
        t.provider.typed_config.Unpack(otel)
        assert otel.grpc_service.envoy_grpc.cluster_name == "tracing|meshplane"
        assert [d.name for d in otel.resource_detectors] == [
            "envoy.tracers.opentelemetry.resource_detectors.environment"]
        tags = {c.tag: c for c in t.custom_tags}
        assert tags["team"].literal.value == "bookinfo"
        assert (tags["user"].request_header.name, tags["user"].request_header.default_value) == ("x-user", "anon")
        assert tags["pod"].environment.name == "POD_NAME"
    c = clusters(proxy, ctx)["tracing|meshplane"]
    sa = c.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (sa.address, sa.port_value) == ("127.0.0.1", 15017)
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in c.typed_extension_protocol_options  # gRPC
    assert listeners(proxy, ctx)[INBOUND].traffic_direction == 1  # INBOUND: server spans
    envoy_validate(proxy, ctx, tmp_path)


def test_no_tracing_without_telemetry_or_enable_tracing() -> None:
    ctx = context(bookinfo_registry(), COLLECTOR)
    proxy = sidecar("reviews", "v1")
    assert not _outbound(proxy, ctx).HasField("tracing") and not _inbound(proxy, ctx).HasField("tracing")
    assert "tracing|meshplane" not in clusters(proxy, ctx)


def test_enable_tracing_uses_istio_default_sampling_and_hierarchy_picks_the_most_specific() -> None:
    mesh = parse_mesh_config({"enableTracing": True}, COLLECTOR).settings
    objs = [*bookinfo_registry(),
            _telemetry("ns", "default", {"tracing": [{"randomSamplingPercentage": 0}]}),
            _telemetry("reviews", "default", {
                "selector": {"matchLabels": {"app": "reviews"}},
                "tracing": [{"randomSamplingPercentage": 50, "match": {"mode": "SERVER"}}]})]
    ctx = context(bookinfo_registry(), mesh)
    assert _outbound(sidecar("ratings", "v1"), ctx).tracing.random_sampling.value == 1.0
    ctx = context(objs, mesh)
    reviews = sidecar("reviews", "v1")
    assert _inbound(reviews, ctx).tracing.random_sampling.value == 50.0
    assert not _outbound(reviews, ctx).HasField("tracing"), "mode SERVER: the client side is not traced"
    assert _outbound(sidecar("ratings", "v1"), ctx).tracing.random_sampling.value == 0.0  # the namespace's


def test_extension_providers_opentelemetry_by_host_and_zipkin_by_ip(tmp_path: Path) -> None:
    mesh = parse_mesh_config({"extensionProviders": [
        {"name": "otel", "opentelemetry": {"service": "ratings.default.svc.cluster.local", "port": 9080}},
        {"name": "zipkin", "zipkin": {"service": "127.0.0.9", "port": 9411, "maxTagLength": 10}}]}, COLLECTOR)
    assert [w.split(":")[0] for w in mesh.warnings] == ["extensionProviders[1].zipkin.maxTagLength"]
    otel_ctx = context([*bookinfo_registry(), _telemetry("t", "istio-system", {
        "tracing": [{"providers": [{"name": "otel"}], "randomSamplingPercentage": 10}]})], mesh.settings)
    proxy = sidecar("productpage", "v1")
    otel = opentelemetry_pb2.OpenTelemetryConfig()
    _outbound(proxy, otel_ctx).tracing.provider.typed_config.Unpack(otel)
    assert otel.grpc_service.envoy_grpc.cluster_name == "outbound|9080||ratings.default.svc.cluster.local"
    assert "tracing|otel" not in clusters(proxy, otel_ctx), "a mesh host is reached through its outbound cluster"
    zipkin_ctx = context([*bookinfo_registry(), _telemetry("t", "istio-system", {
        "tracing": [{"providers": [{"name": "zipkin"}]}]})], mesh.settings)
    t = _outbound(proxy, zipkin_ctx).tracing
    z = zipkin_pb2.ZipkinConfig()
    assert t.provider.name == "envoy.tracers.zipkin" and t.provider.typed_config.Unpack(z)
    assert (z.collector_cluster, z.collector_endpoint, z.trace_id_128bit) == ("tracing|zipkin", "/api/v2/spans", True)
    assert t.random_sampling.value == 1.0
    assert "tracing|zipkin" in clusters(proxy, zipkin_ctx)
    envoy_validate(proxy, zipkin_ctx, tmp_path)


def test_disable_span_reporting_and_unknown_provider_report_nothing() -> None:
    ctx = context([*bookinfo_registry(), _telemetry("t", "istio-system", {
        "tracing": [{"disableSpanReporting": True, "randomSamplingPercentage": 100}]})], COLLECTOR)
    t = _outbound(sidecar("reviews", "v1"), ctx).tracing
    assert t.random_sampling.value == 100.0 and not t.HasField("provider")
    ctx = context([*bookinfo_registry(), _telemetry("t", "istio-system", {
        "tracing": [{"providers": [{"name": "nope"}]}]})], COLLECTOR)
    assert not _outbound(sidecar("reviews", "v1"), ctx).tracing.HasField("provider")


def test_gateway_traces_as_a_client_and_spans_name_the_workload() -> None:
    gw = [istio_object("Gateway", "gw", "default", {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]})]
    ctx = context([*bookinfo_registry(), *gw, _telemetry("t", "istio-system", {
        "tracing": [{"randomSamplingPercentage": 100}]})], COLLECTOR)
    proxy = gateway()
    lst = next(iter(listeners(proxy, ctx).values()))
    h = hcm_of(lst.filter_chains[0])
    assert h is not None and h.tracing.provider.name == "envoy.tracers.opentelemetry"
    assert telemetry_policy(proxy, ctx).trace(client=True) is not None
    env = peer_environment({"WORKLOAD_NAME": "reviews-v1", "NAMESPACE": "default", "CLUSTER_ID": "c1"})
    assert env["OTEL_RESOURCE_ATTRIBUTES"].split(",")[0] == "service.name=reviews-v1"
