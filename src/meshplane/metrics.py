"""The control plane's own Prometheus metrics, served as ``GET /metrics`` by ``meshplane server``.

Why here, below the components that report: the xDS server, the API server and the store each record what they
did into one ``ControlPlaneMetrics`` that ``cli.serverproc`` creates and hands them; none of them knows how the
numbers are exposed. Names follow istiod where istiod has the metric (``pilot_xds``, ``pilot_xds_pushes``,
``pilot_total_xds_rejects``, ``pilot_proxy_convergence_time``), so dashboards written for Istio read ours, and the
Kubernetes API server's for API requests (``apiserver_request_total``, ``apiserver_request_duration_seconds``).

Every instance has its own ``CollectorRegistry`` (no process-global state, nothing configured at import time), so
two servers in one process, as the tests run them, do not share counters.
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Push convergence spans a debounce period (0.1-1 s by default) plus the push itself: Istio's buckets.
_CONVERGENCE_BUCKETS = (0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0)
_API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _CountsCollector(Collector):
    """A family of counts read at scrape time from plain integers: kept by a component that must not depend on
    Prometheus (the store counts its committed writes in a dict), or under istiod's exact name.

    ``exact_name``: istiod exports its counters without Prometheus' ``_total`` suffix (``pilot_xds_pushes``), and
    Istio's dashboards query those names; prometheus_client would add the suffix to a counter, so these are
    exported untyped under the exact name (PromQL's ``rate`` reads them the same)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...],
                 read: Callable[[], Mapping[tuple[str, ...], int]], *, exact_name: bool = False) -> None:
        self._name = name
        self._doc = documentation
        self._labels = labels
        self._read = read
        self._exact = exact_name

    def collect(self) -> Iterable[Metric]:
        family: CounterMetricFamily | UnknownMetricFamily
        if self._exact:
            family = UnknownMetricFamily(self._name, self._doc, labels=list(self._labels))
        else:
            family = CounterMetricFamily(self._name, self._doc, labels=list(self._labels))
        for values, count in sorted(self._read().items()):
            family.add_metric(list(values), count)
        yield family

    def describe(self) -> Iterable[Metric]:
        return []


class ControlPlaneMetrics:
    """The metrics of one control-plane process. Components call the ``record_*`` methods."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._xds_connections = Gauge(
            "pilot_xds", "Proxies connected to this control plane over ADS.", registry=r)
        self._pushes: _Tally[tuple[str, ...]] = _Tally()
        self._rejects: _Tally[tuple[str, ...]] = _Tally()
        r.register(_CountsCollector("pilot_xds_pushes", "xDS responses sent, by type (cds, eds, lds, rds, ...).",
                                    ("type",), lambda: self._pushes, exact_name=True))
        r.register(_CountsCollector("pilot_total_xds_rejects", "xDS responses a proxy rejected (NACK), by type.",
                                    ("type",), lambda: self._rejects, exact_name=True))
        self._convergence = Histogram(
            "pilot_proxy_convergence_time",
            "Seconds from the first config or endpoint change of a debounced burst to the end of a proxy's push.",
            buckets=_CONVERGENCE_BUCKETS, registry=r)
        self._disconnects = Counter(
            "meshplane_xds_disconnects", "ADS streams that ended, by reason: proxy_closed (the proxy ended it), "
            "reset (the connection was lost or reset, e.g. by a GOAWAY), invalid (a malformed request), "
            "closed_by_server (send timeout, shutdown), error.", ["reason"], registry=r)
        self._flushes = Counter(
            "meshplane_xds_flushes", "Debounced flushes that pushed, by kind (full: new push context; eds: "
            "endpoints only).", ["kind"], registry=r)
        self._api_requests = Counter(
            "apiserver_request", "API requests, by verb, resource and HTTP code.", ["verb", "resource", "code"],
            registry=r)
        self._api_latency = Histogram(
            "apiserver_request_duration_seconds", "API request latency, by verb and resource.",
            ["verb", "resource"], buckets=_API_BUCKETS, registry=r)

    # --- xDS ----------------------------------------------------------------------------------------------

    def watch_connections(self, count: Callable[[], int]) -> None:
        """``pilot_xds`` reads the number of connected proxies from ``count`` at each scrape."""
        self._xds_connections.set_function(lambda: float(count()))

    def record_push(self, type_name: str) -> None:
        self._pushes[(type_name,)] += 1

    def record_disconnect(self, reason: str) -> None:
        """An ADS stream ended (``meshplane_xds_disconnects_total{reason}``); see the metric's help for reasons."""
        self._disconnects.labels(reason=reason).inc()

    def record_reject(self, type_name: str) -> None:
        self._rejects[(type_name,)] += 1

    def record_convergence(self, seconds: float) -> None:
        self._convergence.observe(max(0.0, seconds))

    def record_flush(self, *, full: bool) -> None:
        self._flushes.labels(kind="full" if full else "eds").inc()

    # --- API and store ------------------------------------------------------------------------------------

    def record_api_request(self, verb: str, resource: str, code: int, seconds: float | None) -> None:
        """One API request; ``seconds`` None for a long-running one (a watch), kept out of the histogram."""
        self._api_requests.labels(verb=verb, resource=resource, code=str(code)).inc()
        if seconds is not None:
            self._api_latency.labels(verb=verb, resource=resource).observe(max(0.0, seconds))

    def watch_store_writes(self, read: Callable[[], Mapping[tuple[str, ...], int]]) -> None:
        """``meshplane_store_writes_total{resource, verb}`` reads the store's committed-write counts."""
        self.registry.register(_CountsCollector(
            "meshplane_store_writes", "Committed store writes, by resource (group/resource) and verb.",
            ("resource", "verb"), read))

    def watch_jwks_fetch_failures(self, read: Callable[[], Mapping[tuple[str, ...], int]]) -> None:
        """``meshplane_jwks_fetch_failures_total{issuer}`` reads the JWKS resolver's failed fetches by issuer."""
        self.registry.register(_CountsCollector(
            "meshplane_jwks_fetch_failures", "Failed fetches of RequestAuthentication jwksUri keys, by issuer.",
            ("issuer",), read))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
