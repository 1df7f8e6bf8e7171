"""Tracing on real Envoys (``translate.tracing``): with the Telemetry of Istio's tracing task (100 % sampling,
tests/data/telemetry), a request productpage -> reviews through two sidecars produces a client span and a server
span that reach the control plane's OTLP collector (``rpc.otlp``) with one trace id, the server span a child of the
client span, each named after its workload and carrying the custom literal tag; at 0 % no span arrives; a
TrafficLabel attached to opentracing tags the spans with the label."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_harness import Harness, wait_until
from security_mesh import SecurityMesh

from meshplane.model.mesh import MeshSettings
from meshplane.rpc.otlp import OtlpCollector, SpanRecord
from meshplane.store import GroupResource, MemoryStore
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy

DATA = Path(__file__).resolve().parents[1] / "data" / "telemetry"
TELEMETRIES = GroupResource("telemetry.istio.io", "telemetries")


@pytest.fixture
async def collector() -> AsyncIterator[tuple[OtlpCollector, str]]:
    c = OtlpCollector()
    port = await c.start("127.0.0.1:0")
    yield c, f"127.0.0.1:{port}"
    await c.stop()


@pytest.fixture
async def sec(store: MemoryStore, harness: Harness, xds, tmp_path: Path,  # type: ignore[no-untyped-def]
              collector: tuple[OtlpCollector, str]) -> AsyncIterator[SecurityMesh]:
    server, address = await xds(DefaultTranslator(MeshSettings(tracing_collector=collector[1])))
    m = await SecurityMesh(store, harness, server, address, tmp_path).start()
    await m.workload("reviews")
    await m.workload("productpage", serve=False)
    await m.synced()
    await m.eventually("productpage", "/warm", 200)
    yield m
    await m.close()


async def _apply(sec: SecurityMesh, name: str) -> None:
    obj: dict[str, Any] = yaml.safe_load((DATA / name).read_text())
    await sec.store.create(TELEMETRIES, obj, actor="test")
    await sec.synced()


async def _call(sec: SecurityMesh, path: str) -> int:
    """A request on a new connection (a pooled one would still be on the listener's previous filter chain, which
    Envoy drains; new connections get the new configuration)."""
    return await sec.call("productpage", path, headers={"Connection": "close"})


def _with_path(c: OtlpCollector, path: str) -> list[SpanRecord]:
    return [s for s in c.store.spans() if path in dict(s.attributes).get("http.url", "")]


async def test_two_sidecars_report_one_linked_trace_with_workload_names_and_the_custom_tag(
        sec: SecurityMesh, collector: tuple[OtlpCollector, str]) -> None:
    c = collector[0]
    assert await _call(sec, "/untraced") == 200
    await asyncio.sleep(1)
    assert not c.store.spans(), "no tracing before the Telemetry"
    await _apply(sec, "mesh-default-tracing.yaml")
    assert await _call(sec, "/traced?q=1") == 200

    async def both() -> bool:
        return len(_with_path(c, "/traced")) >= 2

    await wait_until(both, what="the client and server spans of /traced at the collector", timeout=20)
    spans = _with_path(c, "/traced")
    by_service = {s.service: s for s in spans}
    assert set(by_service) == {"productpage", "reviews"}, spans
    client, server = by_service["productpage"], by_service["reviews"]
    assert client.trace_id == server.trace_id and len(client.trace_id) == 32
    assert server.parent_span_id == client.span_id, "the server span is a child of the client span"
    assert not client.parent_span_id, "the client sidecar started the trace"
    assert (client.kind, server.kind) == ("CLIENT", "SERVER")
    assert server.name == "reviews.default.svc.cluster.local/traced", "host and path, without the query"
    for s in spans:
        assert dict(s.attributes).get("my_tag_literal") == "tracing-e2e"
    (summary,) = [t for t in c.store.traces() if t["traceId"] == client.trace_id]
    assert summary["rootService"] == "productpage" and summary["spans"] == 2


TRAFFIC_LABELS = GroupResource("istio.alibabacloud.com", "trafficlabels")


async def test_traffic_label_attached_to_opentracing_tags_both_spans(
        sec: SecurityMesh, collector: tuple[OtlpCollector, str]) -> None:
    """ASM's TrafficLabel ``attachTo: [opentracing]``: the label productpage's sidecar sets
    ($getLabel(app)) is a tag of the client span and, arriving as a header, of reviews' server span."""
    c = collector[0]
    await _apply(sec, "mesh-default-tracing.yaml")
    label = {"apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "TrafficLabel",
             "metadata": {"name": "tag-spans", "namespace": "default"},
             "spec": {"rules": [{"labels": [{"name": "userdefinelabel1", "valueFrom": ["$getLabel(app)"]}],
                                 "attachTo": ["opentracing"], "protocols": "*"}]}}
    await sec.store.create(TRAFFIC_LABELS, label, actor="test")
    await sec.synced()

    async def tagged() -> bool:
        assert await _call(sec, "/labelled") == 200
        spans = _with_path(c, "/labelled")
        return {s.service for s in spans if dict(s.attributes).get("userdefinelabel1") == "productpage"} == {
            "productpage", "reviews"}

    await wait_until(tagged, what="both spans tagged with the label", timeout=30)


async def test_zero_sampling_reports_no_spans(sec: SecurityMesh, collector: tuple[OtlpCollector, str]) -> None:
    c = collector[0]
    await _apply(sec, "mesh-default-tracing.yaml")
    await _apply(sec, "no-tracing.yaml")  # the namespace's Telemetry wins: 0 %
    for i in range(5):
        assert await _call(sec, f"/zero-{i}") == 200
    await _apply_and_check_traced(sec, c)
    assert not [s for s in c.store.spans() if "/zero-" in dict(s.attributes).get("http.url", "")]


async def _apply_and_check_traced(sec: SecurityMesh, c: OtlpCollector) -> None:
    """Removing the 0 % Telemetry traces again: proves the collector was reachable all along (Envoy exports spans
    within its flush interval, so spans of earlier requests would be there by now)."""
    await sec.store.delete(TELEMETRIES, "default", "no-sampling", actor="test")
    await sec.synced()
    assert await _call(sec, "/after-zero") == 200

    async def traced() -> bool:
        return len(_with_path(c, "/after-zero")) >= 2

    await wait_until(traced, what="spans once sampling is back at 100 %", timeout=20)
