"""The control plane's OTLP trace collector (``opentelemetry.proto.collector.trace.v1.TraceService/Export``).

Why a collector of its own: tracing must work with the embedded default (one command, no Jaeger or OpenTelemetry
Collector to install), and ``meshplane trace`` shows what the proxies sent. Envoy's OpenTelemetry tracer exports
spans here over gRPC (``translate.tracing``, the built-in provider ``meshplane``); a real backend is an
``opentelemetry`` or ``zipkin`` extension provider instead.

The collector keeps the last ``limit`` spans in memory (oldest dropped first), flattened to ``SpanRecord``: the
resource's ``service.name`` (the proxy's workload, from its environment), the span's ids, name, kind, times, status
and attributes. The messages are the ones xds-protos ships (the same modules opentelemetry-proto has); the gRPC
method is registered by hand, as the other services of this package (no generated stubs needed).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from meshplane.rpc._serve import serve

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
DEFAULT_LIMIT = 10_000
_KINDS = {trace_pb2.Span.SPAN_KIND_SERVER: "SERVER", trace_pb2.Span.SPAN_KIND_CLIENT: "CLIENT",
          trace_pb2.Span.SPAN_KIND_INTERNAL: "INTERNAL", trace_pb2.Span.SPAN_KIND_PRODUCER: "PRODUCER",
          trace_pb2.Span.SPAN_KIND_CONSUMER: "CONSUMER"}
_STATUS = {trace_pb2.Status.STATUS_CODE_OK: "OK", trace_pb2.Status.STATUS_CODE_ERROR: "ERROR"}


@dataclass(frozen=True, slots=True)
class SpanRecord:
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root span
    service: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str  # UNSET, OK, ERROR
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def duration_ms(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / 1e6

    def to_json(self) -> dict[str, Any]:
        return {"traceId": self.trace_id, "spanId": self.span_id, "parentSpanId": self.parent_span_id,
                "service": self.service, "name": self.name, "kind": self.kind, "startTimeUnixNano": self.start_ns,
                "endTimeUnixNano": self.end_ns, "durationMs": round(self.duration_ms, 3), "status": self.status,
                "attributes": dict(self.attributes)}


def _value(v: common_pb2.AnyValue) -> str:
    which = v.WhichOneof("value")
    if which is None:
        return ""
    if which in ("array_value", "kvlist_value"):
        return str(getattr(v, which)).strip()
    if which == "bytes_value":
        return bytes(v.bytes_value).hex()
    return str(getattr(v, which))


def _attrs(kvs: Iterable[common_pb2.KeyValue]) -> dict[str, str]:
    return {kv.key: _value(kv.value) for kv in kvs}


def records(req: trace_service_pb2.ExportTraceServiceRequest) -> list[SpanRecord]:
    """The spans of one export, flattened."""
    out = []
    for rs in req.resource_spans:
        service = _attrs(rs.resource.attributes).get("service.name", "")
        # Field 2 of ResourceSpans: ``scope_spans`` in today's proto, ``instrumentation_library_spans`` in the
        # older one xds-protos ships; the same on the wire.
        groups = rs.scope_spans if hasattr(rs, "scope_spans") else rs.instrumentation_library_spans
        for ss in groups:
            for s in ss.spans:
                out.append(SpanRecord(
                    trace_id=s.trace_id.hex(), span_id=s.span_id.hex(), parent_span_id=s.parent_span_id.hex(),
                    service=service, name=s.name, kind=_KINDS.get(s.kind, "UNSPECIFIED"),
                    start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano,
                    status=_STATUS.get(s.status.code, "UNSET"),
                    attributes=tuple(sorted(_attrs(s.attributes).items()))))
    return out


class SpanStore:
    """The last ``limit`` spans, oldest first; queried by trace. Thread-safe (the API reads, gRPC writes)."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("the span limit must be at least 1")
        self._spans: deque[SpanRecord] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self.received = 0

    def add(self, spans: Iterable[SpanRecord]) -> None:
        with self._lock:
            for s in spans:
                self._spans.append(s)
                self.received += 1

    def spans(self) -> list[SpanRecord]:
        with self._lock:
            return list(self._spans)

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """The spans of one trace, by start time."""
        want = trace_id.lower()
        return sorted((s for s in self.spans() if s.trace_id == want), key=lambda s: (s.start_ns, s.span_id))

    def traces(self, *, service: str = "", limit: int = 20) -> list[dict[str, Any]]:
        """Summaries of the most recent traces (by their latest span), newest first; ``service``: only traces
        with a span of that service."""
        by_trace: dict[str, list[SpanRecord]] = {}
        for s in self.spans():
            by_trace.setdefault(s.trace_id, []).append(s)
        out = []
        for tid, spans in by_trace.items():
            services = sorted({s.service for s in spans})
            if service and service not in services:
                continue
            ids = {s.span_id for s in spans}
            roots = [s for s in spans if not s.parent_span_id or s.parent_span_id not in ids]
            root = min(roots or spans, key=lambda s: s.start_ns)
            start, end = min(s.start_ns for s in spans), max(s.end_ns for s in spans)
            out.append({"traceId": tid, "rootService": root.service, "rootName": root.name, "spans": len(spans),
                        "services": services, "startTimeUnixNano": start, "durationMs": round((end - start) / 1e6, 3),
                        "errors": sum(s.status == "ERROR" for s in spans)})
        out.sort(key=lambda t: int(str(t["startTimeUnixNano"])), reverse=True)
        return out[:max(limit, 0)]


class OtlpCollector:
    """The gRPC service in front of a ``SpanStore``."""

    def __init__(self, store: SpanStore | None = None) -> None:
        self.store = store or SpanStore()
        self._server: grpc.aio.Server | None = None

    def generic_handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._export, request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
                response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString),
        })

    async def _export(self, req: trace_service_pb2.ExportTraceServiceRequest,
                      context: grpc.aio.ServicerContext[Any, Any]) -> trace_service_pb2.ExportTraceServiceResponse:
        self.store.add(records(req))
        return trace_service_pb2.ExportTraceServiceResponse()

    async def start(self, address: str) -> int:
        """Serve on ``address`` (``127.0.0.1:0`` for any port); returns the bound port."""
        self._server, port = await serve(self.generic_handler(), address, "OTLP trace collector")
        if port == 0:
            raise OSError(f"cannot bind the OTLP collector to {address}")
        return port

    async def stop(self, grace: float = 0.5) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


__all__ = ["DEFAULT_LIMIT", "SERVICE", "OtlpCollector", "SpanRecord", "SpanStore", "records"]
