"""The OTLP collector's span store (``rpc.otlp``): an export flattened to records, bounded memory, trace summaries."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from meshplane.rpc.otlp import SpanStore, records


def _request(service: str, trace: str, span: str, parent: str = "", start: int = 0) -> (
        trace_service_pb2.ExportTraceServiceRequest):
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = service
    groups = rs.scope_spans if hasattr(rs, "scope_spans") else rs.instrumentation_library_spans
    s = groups.add().spans.add(trace_id=bytes.fromhex(trace), span_id=bytes.fromhex(span),
                               parent_span_id=bytes.fromhex(parent), name="op", kind=trace_pb2.Span.SPAN_KIND_CLIENT,
                               start_time_unix_nano=start, end_time_unix_nano=start + 2_000_000)
    s.attributes.add(key="http.status_code").value.int_value = 503
    s.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    return req


def test_records_flatten_resource_service_ids_kind_status_and_attributes() -> None:
    (r,) = records(_request("productpage-v1", "ab" * 16, "01" * 8, "02" * 8, 5))
    assert (r.service, r.trace_id, r.span_id, r.parent_span_id) == ("productpage-v1", "ab" * 16, "01" * 8, "02" * 8)
    assert (r.kind, r.status, r.duration_ms) == ("CLIENT", "ERROR", 2.0)
    assert dict(r.attributes) == {"http.status_code": "503"}


def test_the_store_keeps_the_last_spans_and_summarises_traces_newest_first() -> None:
    store = SpanStore(limit=3)
    for i in range(4):
        store.add(records(_request(f"w{i}", f"{i:032x}", "01" * 8, start=i * 10**9)))
    assert [s.service for s in store.spans()] == ["w1", "w2", "w3"], "the oldest span is dropped"
    assert store.received == 4
    assert [t["traceId"] for t in store.traces()] == [f"{i:032x}" for i in (3, 2, 1)]
    assert [t["traceId"] for t in store.traces(service="w2")] == [f"{2:032x}"]
    assert store.traces(limit=1)[0]["errors"] == 1
    assert store.trace(f"{2:032X}")[0].service == "w2"
    with pytest.raises(ValueError):
        SpanStore(limit=0)
