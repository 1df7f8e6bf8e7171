"""The console's topology from parsed proxy metrics: label parsing, destination-only readings, rates over the
window, errors, mTLS, p99 from buckets, counter resets and disconnected proxies."""

from __future__ import annotations

import math

import pytest

from meshplane.console.topology import (
    Reading,
    SampleParseError,
    TopologyAggregator,
    Workload,
    parse_labels,
    parse_reading,
    quantile,
)

PP = Workload("cluster-1", "default", "productpage-v1")
RV = Workload("cluster-1", "default", "reviews-v2")


def series(src: str, dst: str, code: str = "200", sec: str = "mutual_tls", reporter: str = "destination") -> str:
    # Like the demo: only the source side knows the service it asked for.
    svc = dst.split("-")[0] + ".default.svc.cluster.local" if reporter == "source" else "unknown"
    return (f'connection_security_policy="{sec}",destination_cluster="cluster-1",destination_workload="{dst}",'
            f'destination_service="{svc}",'
            f'destination_workload_namespace="default",reporter="{reporter}",response_code="{code}",'
            f'source_cluster="cluster-1",source_workload="{src}",source_workload_namespace="default"')


def page(requests: dict[tuple[str, str, str, str], float], buckets: dict[float, float] | None = None) -> str:
    lines = ["# TYPE istio_requests_total counter"]
    for (src, dst, code, sec), v in requests.items():
        lines.append(f"istio_requests_total{{{series(src, dst, code, sec)}}} {v}")
        lines.append(f"istio_requests_total{{{series(src, dst, code, sec, 'source')}}} {v * 10}")
    for le, v in (buckets or {}).items():
        bound = "+Inf" if le == math.inf else f"{le:g}"
        lines.append(f'istio_request_duration_milliseconds_bucket{{{series("productpage-v1", "reviews-v2")},'
                     f'le="{bound}"}} {v}')
    lines.append('envoy_cluster_upstream_rq{envoy_cluster_name="x"} 5')
    return "\n".join(lines) + "\n"


def test_labels_with_escapes() -> None:
    assert parse_labels(r'a="x",b="y\"z",c="l\\n",d="new\nline"', "") == {
        "a": "x", "b": 'y"z', "c": "l\\n", "d": "new\nline"}
    with pytest.raises(SampleParseError, match="unterminated"):
        parse_labels('a="x', 'line a="x')


def test_reading_keeps_only_the_destination_reporter() -> None:
    r = parse_reading(page({("productpage-v1", "reviews-v2", "200", "mutual_tls"): 7}), at=1.0)
    assert len(r.requests) == 1
    (s, v), = r.requests.items()
    assert (s.source, s.destination, s.response_code, s.security, v) == (PP, RV, "200", "mutual_tls", 7.0)


def test_bad_value_names_the_line() -> None:
    with pytest.raises(SampleParseError, match="bad value 'x'"):
        parse_reading('istio_requests_total{reporter="destination"} x\n', at=0)


def test_rate_errors_mtls_and_p99_over_the_window() -> None:
    agg = TopologyAggregator(window_s=30)
    agg.observe("p1", parse_reading(page({("productpage-v1", "reviews-v2", "200", "mutual_tls"): 10},
                                         {1: 0, 5: 0, 10: 0, math.inf: 0}), at=100.0))
    assert agg.edges() == []  # one reading: no rate yet
    agg.observe("p1", parse_reading(page({("productpage-v1", "reviews-v2", "200", "mutual_tls"): 50,
                                          ("productpage-v1", "reviews-v2", "503", "none"): 10},
                                         {1: 50, 5: 90, 10: 100, math.inf: 100}), at=110.0))
    (e,) = agg.edges()
    assert (e.source, e.destination) == (PP, RV)
    assert e.requests == 50 and e.rps == 5.0
    assert e.error_rate == pytest.approx(0.2)
    assert e.mtls == "mixed"
    assert e.p99_ms == pytest.approx(9.5)  # rank 99 of 100 in the (5, 10] bucket: 5 + 5 * 9/10
    assert e.to_json()["id"] == "cluster-1/default/productpage-v1->cluster-1/default/reviews-v2"
    assert e.services == ("reviews.default.svc.cluster.local",)


def test_a_series_that_appears_counts_from_zero_and_a_reset_counts_what_is_left() -> None:
    agg = TopologyAggregator(window_s=30)
    agg.observe("p1", parse_reading(page({("productpage-v1", "reviews-v2", "200", "mutual_tls"): 100}), at=0.0))
    agg.observe("p1", parse_reading(page({("productpage-v1", "reviews-v2", "200", "mutual_tls"): 4,
                                          ("reviews-v2", "ratings-v1", "200", "none"): 6}), at=2.0))
    by = {(e.source.name, e.destination.name): e for e in agg.edges()}
    assert by[("productpage-v1", "reviews-v2")].requests == 4  # Envoy restarted: counted from zero
    assert by[("reviews-v2", "ratings-v1")].rps == 3.0 and by[("reviews-v2", "ratings-v1")].mtls == "none"


def test_old_readings_leave_the_window_and_gone_proxies_are_forgotten() -> None:
    agg = TopologyAggregator(window_s=10)
    key = ("productpage-v1", "reviews-v2", "200", "mutual_tls")
    for t, v in ((0, 0), (5, 100), (10, 100), (15, 100), (20, 100)):
        agg.observe("p1", parse_reading(page({key: v}), at=float(t)))
    assert agg.edges() == []  # nothing new in the last 10 s
    agg.observe("p2", Reading(at=0.0, requests={}, buckets={}))
    agg.forget(["p2"])
    agg.observe("p1", parse_reading(page({key: 1}), at=21.0))
    assert agg.edges() == []  # p1 was forgotten: one reading again


def test_quantile() -> None:
    assert quantile(0.99, {}) is None
    assert quantile(0.99, {1.0: 0, math.inf: 0}) is None
    assert quantile(0.5, {1.0: 10, 2.0: 20, math.inf: 20}) == 1.0
    assert quantile(0.99, {1.0: 0, 2.0: 0, math.inf: 5}) == 2.0  # in +Inf: the highest finite bound
