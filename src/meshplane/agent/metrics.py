"""The agent's own Prometheus metrics, under the names Istio's ``pilot-agent`` gives them (``istio_agent_*``).

Why: users with Prometheus query the agent's DNS proxy as they do Istio's (``istio_agent_dns_requests_total`` and
friends, what Istio's dashboards and alerts use), not its status file. The counts stay where the DNS proxy keeps
them (``agent.dns.DnsStats``, plain integers: the proxy knows nothing of Prometheus); a collector reads them at
each scrape. The upstream latency is the one histogram, fed by the proxy's ``on_upstream`` hook.

Names: Istio's four DNS metrics as Istio has them (no labels); the proxy's other counts, which Istio has no metric
for, under ``istio_agent_dns_*`` names of ours; the process' CPU, memory and file descriptors as
``istio_agent_process_*`` (Istio's agent exports its process metrics under that prefix too).

One ``CollectorRegistry`` per ``AgentMetrics`` (no global registry, nothing at import time): tests run several in
one process. ``render`` is what :mod:`meshplane.agent.statusport` serves on port 15020, Envoy's metrics appended.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from meshplane.agent.dns import DnsProxy, DnsStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Istio's bounds for the upstream latency (its list, sorted: Prometheus needs them increasing).
UPSTREAM_BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0, 5.0)

# name (without _total) -> (DnsStats field, help). Istio's names first, then ours.
DNS_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("istio_agent_dns_requests", "requests", "Total number of DNS requests."),
    ("istio_agent_dns_upstream_requests", "forwarded", "Total number of DNS requests forwarded to upstream."),
    ("istio_agent_dns_upstream_failures", "upstream_failures",
     "DNS requests the upstream resolver did not answer (timeout, error or SERVFAIL), or with no upstream."),
    ("istio_agent_dns_mesh_answers", "mesh_answers", "DNS requests answered from the mesh's name table."),
    ("istio_agent_dns_local_nxdomain", "local_nxdomain",
     "DNS requests for names under the mesh domain that are not in the name table, answered NXDOMAIN locally."),
    ("istio_agent_dns_cache_hits", "cache_hits", "DNS requests answered from the cache of upstream answers."),
    ("istio_agent_dns_stale_answers", "stale_answers",
     "DNS requests answered with an expired cached answer because the upstream failed."),
)


class _DnsCounters(Collector):
    def __init__(self, stats: DnsStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        for name, attr, doc in DNS_COUNTERS:
            family = CounterMetricFamily(name, doc)
            family.add_metric([], float(getattr(self._stats, attr)))
            yield family

    def describe(self) -> Iterable[Metric]:
        return []


class _Latency(Collector):
    """A histogram without labels, exported as Istio's is (no ``_created`` series)."""

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        self.name, self.doc, self.bounds = name, doc, bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, the last one +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def collect(self) -> Iterable[Metric]:
        cumulative, running = [], 0
        for bound, count in zip((*(repr(b) for b in self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        yield HistogramMetricFamily(self.name, self.doc, buckets=cumulative, sum_value=self.sum)

    def describe(self) -> Iterable[Metric]:
        return []


class AgentMetrics:
    """The metrics of one agent process."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process:
            ProcessCollector(namespace="istio_agent", registry=self.registry)
        self._upstream_seconds = _Latency(
            "istio_agent_dns_upstream_request_duration_seconds",
            "Total time in seconds the agent takes to get a DNS response from upstream.", UPSTREAM_BUCKETS)
        self.registry.register(self._upstream_seconds)

    def watch_dns(self, proxy: DnsProxy) -> None:
        """Export ``proxy``'s counts (the instance's resolver: Envoy's own forward-only one is not counted, as
        Istio's agent never sees Envoy's lookups) and time its upstream exchanges."""
        self.registry.register(_DnsCounters(proxy.stats))
        proxy.on_upstream = self._upstream_seconds.observe

    def render(self) -> bytes:
        """The Prometheus text exposition of the agent's own metrics."""
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "DNS_COUNTERS", "UPSTREAM_BUCKETS", "AgentMetrics"]
