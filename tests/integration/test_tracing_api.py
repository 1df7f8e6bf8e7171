"""The trace collector of the real ``meshplane server`` process: spans exported over OTLP/gRPC (as Envoy's
OpenTelemetry tracer sends them) come back through the management API (``/management/v1/traces``), the client,
and ``meshplane trace`` as a list and as an indented tree."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from meshplane.client import NotFound, Refused, SyncClient
from meshplane.rpc.otlp import SERVICE
from tests.support.server import ServerProcess

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
OTHER = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def _span(trace: bytes, span: str, parent: str, name: str, start_ms: int, end_ms: int,
          error: bool = False) -> trace_pb2.Span:
    s = trace_pb2.Span(trace_id=trace, span_id=bytes.fromhex(span), parent_span_id=bytes.fromhex(parent), name=name,
                       kind=trace_pb2.Span.SPAN_KIND_SERVER, start_time_unix_nano=start_ms * 1_000_000,
                       end_time_unix_nano=end_ms * 1_000_000)
    if error:
        s.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    return s


def _export(address: str, by_service: dict[str, list[trace_pb2.Span]]) -> None:
    req = trace_service_pb2.ExportTraceServiceRequest()
    for service, spans in by_service.items():
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = service
        groups = rs.scope_spans if hasattr(rs, "scope_spans") else rs.instrumentation_library_spans
        groups.add().spans.extend(spans)
    with grpc.insecure_channel(address) as ch:
        export = ch.unary_unary(f"/{SERVICE}/Export",
                                request_serializer=trace_service_pb2.ExportTraceServiceRequest.SerializeToString,
                                response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString)
        export(req, timeout=10)


def _cli(server: ServerProcess, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "meshplane.cli.main", "trace", "--data-dir", str(server.data_dir),
                          *args], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def test_exported_spans_are_listed_shown_as_a_tree_and_queried_by_service(server: ServerProcess) -> None:
    state = json.loads((server.data_dir / "server.json").read_text())
    assert state["otlp"].startswith("127.0.0.1:")
    _export(state["otlp"], {
        "productpage-v1": [_span(TRACE, "00f067aa0ba902b7", "", "productpage.default:9080/*", 1000, 1050)],
        "reviews-v2": [_span(TRACE, "b7ad6b7169203331", "00f067aa0ba902b7", "reviews.default:9080/*", 1010, 1040)],
        "ratings-v1": [_span(TRACE, "5fb397be34d26b51", "b7ad6b7169203331", "ratings.default:9080/*", 1020, 1030,
                             error=True)],
    })
    _export(state["otlp"], {"details-v1": [_span(OTHER, "1111111111111111", "", "details", 2000, 2001)]})

    with SyncClient(server.url) as c:
        items = c.traces()
        assert [t["traceId"] for t in items] == [OTHER.hex(), TRACE.hex()]  # newest first
        t = items[1]
        assert (t["rootService"], t["spans"], t["errors"], t["durationMs"]) == ("productpage-v1", 3, 1, 50.0)
        assert t["services"] == ["productpage-v1", "ratings-v1", "reviews-v2"]
        assert [x["traceId"] for x in c.traces(service="ratings-v1")] == [TRACE.hex()]
        assert len(c.traces(limit=1)) == 1
        spans = c.trace(TRACE.hex().upper())
        assert [(s["service"], s["parentSpanId"], s["status"]) for s in spans] == [
            ("productpage-v1", "", "UNSET"), ("reviews-v2", "00f067aa0ba902b7", "UNSET"),
            ("ratings-v1", "b7ad6b7169203331", "ERROR")]
        with pytest.raises(NotFound):
            c.trace("0" * 32)
        with pytest.raises(Refused) as e:
            c.trace("not-a-trace-id")
        assert e.value.code == 400 and "traceId" in str(e.value)
        with pytest.raises(Refused) as e:
            c.traces(limit=0)
        assert e.value.code == 400 and "limit" in str(e.value)

    listing = _cli(server).splitlines()
    assert listing[0].split() == ["TRACE", "ID", "ROOT", "SPANS", "DURATION", "ERRORS"]
    assert listing[2].split() == [TRACE.hex(), "productpage-v1", "productpage.default:9080/*", "3", "50.0ms", "1"]
    tree = _cli(server, TRACE.hex())
    assert tree == (f"trace {TRACE.hex()}\n"
                    "productpage-v1: productpage.default:9080/* [SERVER] 50.0ms UNSET\n"
                    "  reviews-v2: reviews.default:9080/* [SERVER] 30.0ms UNSET\n"
                    "    ratings-v1: ratings.default:9080/* [SERVER] 10.0ms ERROR\n")
    assert json.loads(_cli(server, "-o", "json"))[0]["traceId"] == OTHER.hex()
