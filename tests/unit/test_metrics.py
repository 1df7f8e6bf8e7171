"""The control plane's metrics: istiod's names exactly, one registry per instance, and push start times that
survive merging (the convergence histogram measures from the oldest change a push carries)."""

from __future__ import annotations

from meshplane.metrics import ControlPlaneMetrics
from meshplane.model.push import PushRequest
from tests.support.promtext import value


def test_istiod_counter_names_have_no_total_suffix_and_instances_do_not_share() -> None:
    a, b = ControlPlaneMetrics(), ControlPlaneMetrics()
    a.record_push("cds")
    a.record_push("cds")
    a.record_reject("lds")
    text = a.render().decode()
    assert "# TYPE pilot_xds_pushes untyped" in text and "pilot_xds_pushes_total" not in text
    assert value(text, "pilot_xds_pushes", type="cds") == 2
    assert value(text, "pilot_total_xds_rejects", type="lds") == 1
    assert value(b.render().decode(), "pilot_xds_pushes", type="cds") is None


def test_convergence_and_connections_and_store_counts() -> None:
    m = ControlPlaneMetrics()
    connected = [3]
    m.watch_connections(lambda: connected[0])
    m.watch_store_writes(lambda: {("networking.istio.io/virtualservices", "create"): 4})
    m.record_convergence(0.2)
    m.record_convergence(-1.0)  # a clock oddity is clamped, never a negative observation
    connected[0] = 5
    text = m.render().decode()
    assert value(text, "pilot_xds") == 5
    assert value(text, "pilot_proxy_convergence_time_count") == 2
    assert value(text, "pilot_proxy_convergence_time_bucket", le="0.1") == 1
    assert value(text, "meshplane_store_writes_total", resource="networking.istio.io/virtualservices",
                 verb="create") == 4


def test_merged_requests_keep_the_oldest_start() -> None:
    a = PushRequest(full=False, endpoints_updated=frozenset({"a"}), started=5.0)
    b = PushRequest(full=True, started=3.0)
    assert a.merge(b).started == 3.0 and b.merge(a).started == 3.0
    assert a.merge(PushRequest(full=False)).started == 5.0
    assert PushRequest(full=False).merge(PushRequest(full=False)).started is None
    assert PushRequest(full=True, started=1.0) == PushRequest(full=True), "the start is not part of equality"
