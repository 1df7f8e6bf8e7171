"""The Telemetry API (telemetry.istio.io) for one proxy: which metrics, which tags, which access logs, which traces.

Why a resolver of its own: Istio's rule is hierarchical per field, and the listener builders only want the
answer. For each of ``metrics``, ``accessLogging`` and ``tracing`` the most specific Telemetry that sets the field
wins it whole (Istio's "any fields specified in the namespace configuration completely override the field from the
parent"): a workload's (selector, or targetRefs naming it), then its namespace's (no selector), then the root
namespace's (mesh-wide; a root-namespace resource with a selector applies to nothing). Several at one level: the
oldest wins, as Istio's conflict rule. MeshConfig's ``accessLogFile`` is the mesh-wide access log when no
Telemetry says anything about access logging; MeshConfig's ``enableTracing`` traces (1 %, Istio's default sampling,
to the default provider) when no Telemetry says anything about tracing. The default tracing provider is the control
plane's own OTLP collector (``BUILTIN_TRACING``, when the server runs one: ``MeshSettings.tracing_collector``).

Istio's tag values are CEL expressions; the attributes translated to Envoy format strings are listed in
``model.telemetry.CEL_ATTRIBUTES`` (and string literals). Admission warns about any other expression naming its field
(``api._security``), and the tag then keeps its default value. An access-log ``filter`` understands comparisons
of ``response.code`` (``response.code >= 400``); others are warned about and log everything.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from meshplane.model.labels import labels_match, target_refs, targets_gateway_proxy
from meshplane.model.mesh import MeshSettings, TelemetryProvider
from meshplane.model.proxy import Proxy
from meshplane.model.resources import TELEMETRIES, TRAFFIC_LABELS
from meshplane.model.spec import Telemetry, TelemetryAccessLogging, TelemetryMetrics, TelemetryTracing
from meshplane.model.telemetry import cel_to_format, code_filter
from meshplane.translate.context import PushContext
from meshplane.translate.memo import Slot
from meshplane.translate.trafficlabel import span_tags

# Built-in providers, as Istio ships them: Prometheus metrics and Envoy's access log to standard output.
PROMETHEUS = "prometheus"
ENVOY = "envoy"
STDOUT = "/dev/stdout"
# The control plane's own OTLP trace collector, as a tracing provider name (``rpc.otlp``).
BUILTIN_TRACING = "meshplane"
TRACING_KINDS = frozenset({"opentelemetry", "zipkin"})
DEFAULT_SAMPLING = 1.0  # percent, Istio's default (``defaultConfig.tracing.sampling``)

# Istio's default text format of the ``envoy`` provider and of ``accessLogFile``.
DEFAULT_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% '
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
    '%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n')

# Istio's JSON encoding of the default access log: the same fields by name.
DEFAULT_JSON_FIELDS = (
    ("start_time", "%START_TIME%"), ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"), ("protocol", "%PROTOCOL%"), ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"), ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("connection_termination_details", "%CONNECTION_TERMINATION_DETAILS%"),
    ("upstream_transport_failure_reason", "%UPSTREAM_TRANSPORT_FAILURE_REASON%"),
    ("bytes_received", "%BYTES_RECEIVED%"), ("bytes_sent", "%BYTES_SENT%"), ("duration", "%DURATION%"),
    ("upstream_service_time", "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"),
    ("x_forwarded_for", "%REQ(X-FORWARDED-FOR)%"), ("user_agent", "%REQ(USER-AGENT)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"), ("authority", "%REQ(:AUTHORITY)%"), ("upstream_host", "%UPSTREAM_HOST%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"), ("upstream_local_address", "%UPSTREAM_LOCAL_ADDRESS%"),
    ("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"), ("route_name", "%ROUTE_NAME%"))

METRICS = ("REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE", "TCP_OPENED_CONNECTIONS",
           "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES", "TCP_RECEIVED_BYTES")


@dataclass(frozen=True, slots=True)
class MetricRule:
    """One ``overrides`` entry, in order: which metric on which side, disabled or not, tag changes
    (value None: remove the tag)."""

    metric: str  # one of METRICS, or ALL_METRICS
    client: bool
    server: bool
    disabled: bool | None
    tags: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class AccessLogSink:
    path: str
    text: str = DEFAULT_TEXT_FORMAT  # the text format, when ``json`` is empty
    json: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AccessLogRule:
    client: bool
    server: bool
    sinks: tuple[AccessLogSink, ...]
    code: tuple[str, int] | None = None  # only responses whose code compares so


@dataclass(frozen=True, slots=True)
class TraceProvider:
    """Where spans go: ``kind`` ``opentelemetry`` (OTLP/gRPC) or ``zipkin`` (HTTP JSON v2)."""

    name: str
    kind: str
    service: str
    port: int


@dataclass(frozen=True, slots=True)
class CustomTag:
    tag: str
    kind: str  # literal, environment, header
    value: str  # the literal, or the variable's / header's name
    default: str = ""


@dataclass(frozen=True, slots=True)
class TracingRule:
    """The tracing of one proxy (Telemetry ``tracing``; only its first entry applies, admission warns).
    ``provider`` None: spans are sampled and propagated but not reported (``disableSpanReporting``)."""

    client: bool
    server: bool
    sampling: float  # percent of requests without a sampling decision that are traced
    provider: TraceProvider | None
    tags: tuple[CustomTag, ...] = ()


@dataclass(frozen=True, slots=True)
class TelemetryPolicy:
    """What one proxy reports. Hashable: listeners shared by proxies with equal policies stay shared."""

    metrics: bool = True  # Prometheus metrics at all
    rules: tuple[MetricRule, ...] = ()
    logs: tuple[AccessLogRule, ...] = ()
    tracing: TracingRule | None = None

    def trace(self, *, client: bool) -> TracingRule | None:
        """The tracing of this side (client: outbound and gateways; server: inbound), None: not traced."""
        t = self.tracing
        return t if t is not None and (t.client if client else t.server) else None

    def metric(self, name: str, *, client: bool) -> tuple[bool, dict[str, str | None]]:
        """Whether ``name`` (one of METRICS) is reported on this side, and its tag changes."""
        enabled = self.metrics
        tags: dict[str, str | None] = {}
        for rule in self.rules:
            if rule.metric not in (name, "ALL_METRICS") or not (rule.client if client else rule.server):
                continue
            if rule.disabled is not None:
                enabled = not rule.disabled
            tags.update(rule.tags)
        return enabled, tags

    @property
    def peer_exchange(self) -> bool:
        """Whether any metric is reported at all: the peer-identity headers exist only for the metrics' labels,
        so a proxy whose metrics are all disabled exchanges none (and pays nothing for them)."""
        return any(self.metric(m, client=side)[0] for m in METRICS for side in (True, False))

    def access_logs(self, *, client: bool) -> tuple[AccessLogRule, ...]:
        return tuple(r for r in self.logs if (r.client if client else r.server))


DEFAULT = TelemetryPolicy()

_POLICIES: Slot[tuple[str, tuple[tuple[str, str], ...]], TelemetryPolicy] = Slot("telemetry-policy",
                                                                                  endpoint_free=True)


def _sides(mode: str | None) -> tuple[bool, bool]:
    return (mode in (None, "CLIENT_AND_SERVER", "CLIENT"), mode in (None, "CLIENT_AND_SERVER", "SERVER"))


def _provider_names(entry: TelemetryMetrics | TelemetryAccessLogging | TelemetryTracing) -> tuple[str, ...]:
    return tuple(p.name for p in entry.providers if p.name)


def _metric_rules(entries: tuple[TelemetryMetrics, ...]) -> tuple[bool, tuple[MetricRule, ...]]:
    enabled = False
    rules: list[MetricRule] = []
    for entry in entries:
        names = _provider_names(entry) or (PROMETHEUS,)
        if PROMETHEUS not in names:
            continue  # a provider meshplane does not serve (admission warned)
        enabled = True
        for o in entry.overrides:
            match = o.match
            if match is not None and match.custom_metric:
                continue  # custom metrics: not served (admission warned)
            metric = str(match.metric) if match is not None and match.metric is not None else "ALL_METRICS"
            client, server = _sides(str(match.mode) if match is not None and match.mode is not None else None)
            tags: list[tuple[str, str | None]] = []
            for tag, change in sorted(o.tag_overrides.items()):
                if change.operation is not None and str(change.operation) == "REMOVE":
                    tags.append((tag, None))
                elif change.value is not None:
                    fmt = cel_to_format(change.value)
                    if fmt is not None:
                        tags.append((tag, fmt))
            rules.append(MetricRule(metric, client, server, o.disabled, tuple(tags)))
    return enabled, tuple(rules)


def _sinks(names: tuple[str, ...], mesh: MeshSettings) -> tuple[AccessLogSink, ...]:
    sinks = []
    for name in names:
        if name == ENVOY:
            sinks.append(AccessLogSink(STDOUT))
            continue
        provider = next((p for p in mesh.telemetry_providers if p.name == name), None)
        if provider is not None and provider.kind == "envoyFileAccessLog":
            sinks.append(_file_sink(provider))
    return tuple(sinks)


def _file_sink(provider: TelemetryProvider) -> AccessLogSink:
    """An ``envoyFileAccessLog`` provider: ``path``, ``logFormat`` ``text`` or ``labels`` (JSON lines)."""
    fields = dict(provider.fields)
    path = fields.get("path") or STDOUT
    try:
        fmt = json.loads(fields.get("logFormat", "{}"))
    except ValueError:
        fmt = {}
    if isinstance(fmt, dict) and isinstance(fmt.get("text"), str):
        text = fmt["text"]
        return AccessLogSink(path, text if text.endswith("\n") else text + "\n")
    labels = fmt.get("labels") if isinstance(fmt, dict) else None
    if isinstance(labels, dict) and labels:
        return AccessLogSink(path, json=tuple(sorted((str(k), str(v)) for k, v in labels.items())))
    return AccessLogSink(path)


def _log_rules(entries: tuple[TelemetryAccessLogging, ...], mesh: MeshSettings) -> tuple[AccessLogRule, ...]:
    rules = []
    for entry in entries:
        client, server = _sides(str(entry.match.mode) if entry.match is not None and entry.match.mode else None)
        if entry.disabled:
            continue
        sinks = _sinks(_provider_names(entry) or (ENVOY,), mesh)
        if not sinks:
            continue
        code = code_filter(entry.filter.expression) if entry.filter is not None and entry.filter.expression else None
        rules.append(AccessLogRule(client, server, sinks, code))
    return tuple(rules)


def _mesh_access_log(mesh: MeshSettings) -> tuple[AccessLogRule, ...]:
    """MeshConfig ``accessLogFile`` (+ ``accessLogFormat``, ``accessLogEncoding``): Istio's mesh-wide log."""
    if not mesh.access_log_file:
        return ()
    if mesh.access_log_encoding.upper() == "JSON":
        sink = AccessLogSink(mesh.access_log_file, json=DEFAULT_JSON_FIELDS)
    else:
        fmt = mesh.access_log_format or DEFAULT_TEXT_FORMAT
        sink = AccessLogSink(mesh.access_log_file, fmt if fmt.endswith("\n") else fmt + "\n")
    return (AccessLogRule(True, True, (sink,)),)


def trace_provider(name: str, mesh: MeshSettings) -> TraceProvider | None:
    """A tracing provider by name: the built-in collector or an ``opentelemetry``/``zipkin`` extension provider;
    None for any other (admission and the MeshConfig reader warn)."""
    if name == BUILTIN_TRACING and mesh.tracing_collector:
        host, _, port = mesh.tracing_collector.rpartition(":")
        return TraceProvider(BUILTIN_TRACING, "opentelemetry", host.strip("[]"), int(port))
    p = next((p for p in mesh.telemetry_providers if p.name == name), None)
    if p is None or p.kind not in TRACING_KINDS:
        return None
    fields = dict(p.fields)
    return TraceProvider(p.name, p.kind, fields.get("service", ""), int(fields.get("port", "0")))


def _tracing_rule(entries: tuple[TelemetryTracing, ...], mesh: MeshSettings) -> TracingRule | None:
    entry = entries[0]
    client, server = _sides(str(entry.match.mode) if entry.match is not None and entry.match.mode else None)
    names = _provider_names(entry) or (BUILTIN_TRACING,)
    provider = None if entry.disable_span_reporting else trace_provider(names[0], mesh)
    sampling = entry.random_sampling_percentage
    tags = []
    for tag, t in sorted(entry.custom_tags.items()):
        if t.literal is not None:
            tags.append(CustomTag(tag, "literal", t.literal.value or ""))
        elif t.environment is not None and t.environment.name:
            tags.append(CustomTag(tag, "environment", t.environment.name, t.environment.default_value or ""))
        elif t.header is not None and t.header.name:
            tags.append(CustomTag(tag, "header", t.header.name, t.header.default_value or ""))
    return TracingRule(client, server, DEFAULT_SAMPLING if sampling is None else float(sampling), provider,
                       tuple(tags))


def _mesh_tracing(mesh: MeshSettings) -> TracingRule | None:
    """MeshConfig ``enableTracing`` without any Telemetry ``tracing``: the default provider at 1 %."""
    if not mesh.enable_tracing:
        return None
    return TracingRule(True, True, DEFAULT_SAMPLING, trace_provider(BUILTIN_TRACING, mesh))


def tracing_in_use(ctx: PushContext) -> bool:
    """Whether any proxy may trace (then the providers' clusters are built)."""
    return ctx.mesh.enable_tracing or any(
        isinstance(o.spec, Telemetry) and o.spec.tracing for o in ctx.config.of(TELEMETRIES))


def _levels(proxy: Proxy, ctx: PushContext) -> list[Telemetry]:
    """The Telemetry specs that apply, most specific first (workload, namespace, root), oldest first within one."""
    root = ctx.mesh.root_namespace
    workload: list[tuple[str, str, Telemetry]] = []
    namespace: list[tuple[str, str, Telemetry]] = []
    mesh: list[tuple[str, str, Telemetry]] = []
    for obj in ctx.config.of(TELEMETRIES):
        spec = obj.spec
        assert isinstance(spec, Telemetry)
        meta = obj.meta
        order = (meta.creation_timestamp or "", meta.name)
        refs = target_refs(spec.target_ref, spec.target_refs)
        if refs:
            # A Gateway API Gateway: its proxies, at the workload level. Other kinds (a GatewayClass, a Service
            # or ServiceEntry, which Istio applies to waypoints only) select no proxy here; admission warns.
            if any(targets_gateway_proxy(r, meta.namespace, proxy.namespace, proxy.labels) for r in refs):
                workload.append((*order, spec))
        elif spec.selector is not None:
            # A selector in the root namespace applies to nothing (Istio ignores it).
            if (meta.namespace == proxy.namespace != root
                    and labels_match(spec.selector.match_labels, proxy.labels)):
                workload.append((*order, spec))
        elif meta.namespace == proxy.namespace and meta.namespace != root:
            namespace.append((*order, spec))
        elif meta.namespace == root:
            mesh.append((*order, spec))
    return [s for level in (workload, namespace, mesh) for *_, s in sorted(level, key=lambda t: (t[0], t[1]))]


def telemetry_policy(proxy: Proxy, ctx: PushContext) -> TelemetryPolicy:
    """The Telemetry API's answer for ``proxy`` (memoised per namespace and labels)."""
    key = (proxy.namespace, tuple(sorted(proxy.labels.items())))

    def build() -> TelemetryPolicy:
        levels = _levels(proxy, ctx)
        metrics = next((s.metrics for s in levels if s.metrics), None)
        logging = next((s.access_logging for s in levels if s.access_logging), None)
        tracing = next((s.tracing for s in levels if s.tracing), None)
        enabled, rules = _metric_rules(metrics) if metrics is not None else (True, ())
        logs = _log_rules(logging, ctx.mesh) if logging is not None else _mesh_access_log(ctx.mesh)
        trace = _tracing_rule(tracing, ctx.mesh) if tracing is not None else _mesh_tracing(ctx.mesh)
        if trace is not None:  # TrafficLabel attachTo opentracing: the labels as span tags (same memo key)
            have = {t.tag for t in trace.tags}
            extra = tuple(CustomTag(h, "header", h) for h in span_tags(proxy, ctx.config.of(TRAFFIC_LABELS))
                          if h not in have)
            if extra:
                trace = dataclasses.replace(trace, tags=trace.tags + extra)
        return TelemetryPolicy(enabled, rules, logs, trace)

    if not ctx.config.of(TELEMETRIES) and not ctx.mesh.access_log_file and not ctx.mesh.enable_tracing:
        return DEFAULT
    return ctx.memo.get_or_build(_POLICIES, key, build)


__all__ = ["BUILTIN_TRACING", "DEFAULT", "DEFAULT_SAMPLING", "DEFAULT_TEXT_FORMAT", "METRICS", "AccessLogRule",
           "AccessLogSink", "CustomTag", "MetricRule", "TelemetryPolicy", "TraceProvider", "TracingRule",
           "telemetry_policy", "trace_provider", "tracing_in_use"]
