"""The Telemetry API resolver (``translate.telemetryapi``): Istio's per-field hierarchy, the CEL attributes it
translates, MeshConfig's mesh-wide access log, and what the listeners then carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _translate_helpers import (
    bookinfo_registry,
    context,
    decode,
    envoy_validate,
    gateway,
    hcm_of,
    istio_object,
    listeners,
    service_entry,
    sidecar,
    workload_entry,
)
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stats.v3 import stats_pb2

from meshplane.model import xdstypes
from meshplane.model.mesh import MeshSettings, TelemetryProvider
from meshplane.model.statname import decode_name
from meshplane.model.telemetry import cel_to_format, code_filter
from meshplane.translate import telemetry
from meshplane.translate.telemetryapi import DEFAULT, DEFAULT_TEXT_FORMAT, telemetry_policy


def _telemetry(name: str, ns: str, spec: dict[str, Any], created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    obj = istio_object("Telemetry", name, ns, spec)
    obj["apiVersion"] = "telemetry.istio.io/v1"
    obj["metadata"]["creationTimestamp"] = created
    return obj


def _disable(metric: str, mode: str = "CLIENT_AND_SERVER") -> dict[str, Any]:
    return {"metrics": [{"overrides": [{"match": {"metric": metric, "mode": mode}, "disabled": True}]}]}


def test_cel_attributes_headers_and_literals() -> None:
    assert cel_to_format("request.host") == "%REQ(:AUTHORITY)%"
    assert cel_to_format(" request.headers['x-user'] ") == "%REQ(x-user)%"
    assert cel_to_format('response.headers["server"]') == "%RESP(server)%"
    assert cel_to_format("'fixed'") == "fixed"
    assert cel_to_format("request.headers['a'] + 'b'") is None
    assert cel_to_format("'50%'") is None  # a % would be read as an Envoy command
    assert code_filter("response.code >= 400") == (">=", 400)
    assert code_filter("response.code >= 400 && request.method == 'GET'") is None


def test_most_specific_field_wins_and_oldest_within_a_level() -> None:
    objs = [*bookinfo_registry(),
            _telemetry("mesh", "istio-system", _disable("REQUEST_COUNT")),
            _telemetry("ns-old", "default", _disable("REQUEST_DURATION"), "2026-01-01T00:00:00Z"),
            _telemetry("ns-new", "default", _disable("REQUEST_SIZE"), "2026-02-01T00:00:00Z"),
            _telemetry("reviews", "default", {"selector": {"matchLabels": {"app": "reviews"}},
                                              **_disable("RESPONSE_SIZE", "SERVER")}),
            # A root-namespace Telemetry with a selector applies to nothing (Istio ignores it).
            _telemetry("root-selector", "istio-system", {"selector": {"matchLabels": {"app": "ratings"}},
                                                         **_disable("ALL_METRICS")})]
    ctx = context(objs)
    reviews = telemetry_policy(sidecar("reviews", "v1"), ctx)
    assert reviews.metric("RESPONSE_SIZE", client=False)[0] is False
    assert reviews.metric("RESPONSE_SIZE", client=True)[0] is True  # mode SERVER only
    assert reviews.metric("REQUEST_COUNT", client=False)[0] is True, "the workload's metrics replace the parents'"
    ratings = telemetry_policy(sidecar("ratings", "v1"), ctx)
    assert ratings.metric("REQUEST_DURATION", client=True)[0] is False  # the namespace's oldest
    assert ratings.metric("REQUEST_SIZE", client=True)[0] is True
    assert ratings.metric("REQUEST_COUNT", client=True)[0] is True
    other_ns = telemetry_policy(sidecar("ratings", "v1", ns="other"), ctx)
    assert other_ns.metric("REQUEST_COUNT", client=True)[0] is False  # the mesh default
    assert context(bookinfo_registry()) and telemetry_policy(sidecar(), context(bookinfo_registry())) is DEFAULT


def test_target_refs_to_a_gateway_apply_to_its_proxies_at_the_workload_level() -> None:
    web = {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}]}
    objs = [*bookinfo_registry(),
            _telemetry("ns", "default", _disable("REQUEST_SIZE")),
            _telemetry("web", "default", {**web, **_disable("REQUEST_COUNT")}),
            _telemetry("waypoint", "default", {"targetRefs": [{"kind": "Service", "name": "reviews"}],
                                               **_disable("RESPONSE_SIZE")})]
    ctx = context(objs)
    gw = telemetry_policy(gateway({"gateway.networking.k8s.io/gateway-name": "web"}, ns="default"), ctx)
    assert gw.metric("REQUEST_COUNT", client=True)[0] is False
    assert gw.metric("REQUEST_SIZE", client=True)[0] is True, "the workload level replaces the namespace's metrics"
    reviews = telemetry_policy(sidecar("reviews", "v1"), ctx)  # a Service target is for waypoints: not a sidecar
    assert reviews.metric("REQUEST_COUNT", client=True)[0] is True
    assert reviews.metric("RESPONSE_SIZE", client=True)[0] is True
    assert reviews.metric("REQUEST_SIZE", client=True)[0] is False  # the namespace's
    elsewhere = telemetry_policy(gateway({"gateway.networking.k8s.io/gateway-name": "web"}), ctx)
    assert elsewhere.metric("REQUEST_COUNT", client=True)[0] is True  # a Gateway of the same name elsewhere


def _metric(stat: stats_pb2.Config.Stat) -> str:
    decoded = decode_name(stat.name)
    assert decoded is not None, stat.name
    return decoded[0]


def _labels(stat: stats_pb2.Config.Stat) -> dict[str, str]:
    """A stat's labels: those fixed in its name (model.statname) and its per-request tags."""
    decoded = decode_name(stat.name)
    assert decoded is not None, stat.name
    return {**decoded[1], **{t.name: t.value_format for t in stat.tags}}


def test_tag_overrides_reach_the_stats_logger(tmp_path: Path) -> None:
    spec = {"metrics": [{"overrides": [{"match": {"metric": "REQUEST_COUNT", "mode": "SERVER"}, "tagOverrides": {
        "request_host": {"value": "request.host"}, "request_protocol": {"operation": "REMOVE"},
        "custom": {"value": "request.headers['a'] + 'b'"}}}]}]}
    ctx = context([*bookinfo_registry(), _telemetry("t", "default", spec)])
    proxy = sidecar("reviews", "v1")
    h = hcm_of(listeners(proxy, ctx)["inbound_127.0.1.3_9080"].filter_chains[0])
    assert h is not None
    stats = [log for log in h.access_log if log.name == "envoy.access_loggers.stats"]
    cfg = stats_pb2.Config()
    stats[0].typed_config.Unpack(cfg)
    (count,) = [c for c in cfg.counters if _metric(c.stat) == "requests_total"]
    tags = _labels(count.stat)
    assert tags["request_host"] == "%REQ(:AUTHORITY)%" and "request_protocol" not in tags and "custom" not in tags
    (duration,) = [h for h in cfg.histograms if _metric(h.stat) == "request_duration_milliseconds"]
    assert "request_protocol" in _labels(duration.stat), "only REQUEST_COUNT was overridden"
    envoy_validate(proxy, ctx, tmp_path)


def _file_logs(proxy: Any, ctx: Any) -> list[file_pb2.FileAccessLog]:
    h = hcm_of(listeners(proxy, ctx)["inbound_127.0.1.3_9080"].filter_chains[0])
    assert h is not None
    out = []
    for log in h.access_log:
        if log.name == "envoy.access_loggers.file":
            f = file_pb2.FileAccessLog()
            log.typed_config.Unpack(f)
            out.append(f)
    return out


def test_mesh_access_log_file_and_file_providers(tmp_path: Path) -> None:
    proxy = sidecar("reviews", "v1")
    assert _file_logs(proxy, context(bookinfo_registry())) == []
    mesh = MeshSettings(access_log_file="/dev/stdout", access_log_encoding="JSON")
    (json_log,) = _file_logs(proxy, context(bookinfo_registry(), mesh))
    assert json_log.path == "/dev/stdout" and json_log.log_format.json_format.fields["method"].string_value
    provider = TelemetryProvider("file", "envoyFileAccessLog", (("logFormat", '{"text": "%REQ(:PATH)%"}'),
                                                                 ("path", str(tmp_path / "a.log"))))
    spec = {"accessLogging": [{"providers": [{"name": "file"}, {"name": "envoy"}]}]}
    ctx = context([*bookinfo_registry(), _telemetry("t", "default", spec)],
                  MeshSettings(access_log_file="/dev/null", telemetry_providers=(provider,)))
    file_log, envoy_log = _file_logs(proxy, ctx)  # the Telemetry replaces the mesh-wide log
    assert (file_log.path, file_log.log_format.text_format_source.inline_string) == (
        str(tmp_path / "a.log"), "%REQ(:PATH)%\n")
    assert (envoy_log.path, envoy_log.log_format.text_format_source.inline_string) == (
        "/dev/stdout", DEFAULT_TEXT_FORMAT)
    off = context([*bookinfo_registry(), _telemetry("t", "default", {"accessLogging": [{"disabled": True}]})],
                  MeshSettings(access_log_file="/dev/stdout"))
    assert _file_logs(proxy, off) == []
    envoy_validate(proxy, ctx, tmp_path)


def test_all_metrics_disabled_drops_the_stats_loggers_and_the_identity_exchange(tmp_path: Path) -> None:
    ctx = context([*bookinfo_registry(), _telemetry("off", "istio-system", _disable("ALL_METRICS"))])
    proxy = sidecar("reviews", "v1")
    lst = listeners(proxy, ctx)
    inbound = hcm_of(lst["inbound_127.0.1.3_9080"].filter_chains[0])
    assert inbound is not None
    assert not [log for log in inbound.access_log if log.name == "envoy.access_loggers.stats"]
    names = [f.name for f in inbound.http_filters]
    # The inbound side still removes identity headers a caller sends, but reads and sends none.
    assert "envoy.filters.http.header_to_metadata" not in names and names[0] == "envoy.filters.http.header_mutation"
    outbound = hcm_of(lst["127.0.1.3_15001"].filter_chains[0])
    assert outbound is not None
    # The outbound side only removes what the application sent: it sends no identity and reads none.
    peer = [f for f in outbound.http_filters if f.name.startswith("envoy.filters.http.header_")
            or f.name == telemetry.PEER_SENDER]
    assert [f.name for f in peer] == ["envoy.filters.http.header_mutation"]
    assert not [log for log in outbound.access_log if log.name == "envoy.access_loggers.stats"]
    envoy_validate(proxy, ctx, tmp_path)


def test_destination_service_comes_from_the_selecting_service_entry_before_any_endpoint() -> None:
    """A sidecar's first listeners are built before its own endpoint is registered, and an endpoint-only push
    rebuilds no listener: the inbound port's service must come from config (the ServiceEntry selecting it)."""
    objs = [o for o in bookinfo_registry() if o["kind"] != "WorkloadEntry"]
    proxy = sidecar("reviews", "v1", inbound="9080/HTTP")  # matched by number: no port name
    h = hcm_of(listeners(proxy, context(objs))["inbound_127.0.1.3_9080"].filter_chains[0])
    assert h is not None
    cfg = stats_pb2.Config()
    next(log for log in h.access_log if log.name == "envoy.access_loggers.stats").typed_config.Unpack(cfg)
    tags = _labels(cfg.counters[0].stat)
    assert (tags["destination_service"], tags["destination_service_name"], tags["destination_service_namespace"]) == (
        "reviews.default.svc.cluster.local", "reviews", "default")


def test_tcp_endpoints_carry_their_workload_for_the_source_side_tcp_metrics() -> None:
    """No response header answers over TCP: the source names the destination workload from the endpoint's
    metadata, which only non-HTTP ports' endpoints carry (HTTP learns it from the exchanged header)."""
    ports = [{"number": 6379, "name": "tcp-redis", "protocol": "TCP"}, {"number": 8080, "name": "http",
                                                                        "protocol": "HTTP"}]
    ctx = context([service_entry("redis", ports=ports, selector={"app": "redis"}),
                   workload_entry("redis-0", "127.0.3.1", {"app": "redis", "version": "v7",
                                                           "meshplane.io/workload": "redis"})])
    cla = {c.cluster_name: c for c in decode(xdstypes.ENDPOINT, sidecar(), ctx)}
    assert all(isinstance(c, endpoint_pb2.ClusterLoadAssignment) for c in cla.values())
    (tcp_ep,) = cla["outbound|6379||redis.default.svc.cluster.local"].endpoints[0].lb_endpoints
    assert tcp_ep.metadata.filter_metadata["meshplane.peer"]["id"] == "redis;default;redis;v7;cluster_2d1"
    (http_ep,) = cla["outbound|8080||redis.default.svc.cluster.local"].endpoints[0].lb_endpoints
    assert "meshplane.peer" not in http_ep.metadata.filter_metadata
    # ... and the source side's TCP stats read it there
    tcp_logs = telemetry.outbound_tcp_logs(DEFAULT)
    stats = [stats_pb2.Config.FromString(log.typed_config.value) for log in tcp_logs
             if log.name == telemetry.STATS_LOGGER]
    tags = {t.value_format for cfg in stats for c in cfg.counters for t in c.stat.tags}
    assert tags and all("%UPSTREAM_METADATA(meshplane.peer:id)%" in t for t in tags)
    assert all(_labels(c.stat)["destination_workload"] == "$peer" for cfg in stats for c in cfg.counters)
