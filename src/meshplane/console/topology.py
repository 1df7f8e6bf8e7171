"""The console's mesh topology, computed from what the proxies themselves count (no Prometheus needed).

Every sidecar serves Istio's standard metrics (docs/observability.md). The destination side of a request is the
one that knows both peers for sure (its certificate and the caller's identity headers), so, like Kiali's
workload graph, edges come from ``istio_requests_total{reporter="destination"}`` and the p99 from the matching
``istio_request_duration_milliseconds`` buckets. Counters only grow, so a rate needs two readings: the aggregator
keeps each proxy's readings over a sliding window and an edge's rate is its increase over that window.

Pure: text in, numbers out; the caller passes the time. The scraper (``console.scraper``) does the I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

REQUESTS = "istio_requests_total"
DURATION_BUCKET = "istio_request_duration_milliseconds_bucket"
UNKNOWN = "unknown"


class SampleParseError(ValueError):
    """A line of Prometheus' text format that cannot be read (the message quotes it)."""


@dataclass(frozen=True, slots=True, order=True)
class Workload:
    """A node of the graph: one workload of one namespace in one cluster."""

    cluster: str
    namespace: str
    name: str

    @property
    def id(self) -> str:
        return f"{self.cluster}/{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, order=True)
class Series:
    """What an edge's samples are keyed by: the two peers and what the request got."""

    source: Workload
    destination: Workload
    response_code: str
    security: str  # connection_security_policy: mutual_tls | none | unknown
    service: str = UNKNOWN  # destination_service: the host the caller asked for


@dataclass(frozen=True, slots=True)
class Reading:
    """One scrape of one proxy: request counts per series and duration buckets per (series, upper bound)."""

    at: float
    requests: Mapping[Series, float]
    buckets: Mapping[tuple[Series, float], float]
    # The destination services each (source, destination) pair asked for, from either reporter: the source side
    # knows the host it routed (the destination side may not).
    services: Mapping[tuple[Workload, Workload], frozenset[str]] = field(default_factory=dict)


def parse_labels(text: str, line: str) -> dict[str, str]:
    """``a="x",b="y\\"z"`` -> {"a": "x", "b": 'y"z'} (Prometheus' escapes: backslash, quote, newline)."""
    labels: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0 or eq + 1 >= n or text[eq + 1] != '"':
            raise SampleParseError(f"bad label in {line[:120]!r}")
        name = text[i:eq].strip().lstrip(",").strip()
        j = eq + 2
        value: list[str] = []
        while j < n and text[j] != '"':
            if text[j] == "\\" and j + 1 < n:
                nxt = text[j + 1]
                value.append("\n" if nxt == "n" else nxt)
                j += 2
            else:
                value.append(text[j])
                j += 1
        if j >= n:
            raise SampleParseError(f"unterminated label value in {line[:120]!r}")
        labels[name] = "".join(value)
        i = j + 1
        while i < n and text[i] in ", ":
            i += 1
    return labels


def _sample(line: str) -> tuple[str, dict[str, str], float] | None:
    """(name, labels, value) of a sample line, None for lines the topology does not read."""
    brace = line.find("{")
    if brace < 0:
        return None
    name = line[:brace]
    if name not in (REQUESTS, DURATION_BUCKET):
        return None
    close = line.rfind("}")
    if close < brace:
        raise SampleParseError(f"unterminated labels in {line[:120]!r}")
    rest = line[close + 1:].split()
    if not rest:
        raise SampleParseError(f"no value in {line[:120]!r}")
    try:
        value = float(rest[0])
    except ValueError as e:
        raise SampleParseError(f"bad value {rest[0]!r} in {line[:120]!r}") from e
    return name, parse_labels(line[brace + 1:close], line), value


def _series(labels: Mapping[str, str]) -> Series:
    def get(key: str) -> str:
        return labels.get(key) or UNKNOWN

    return Series(
        source=Workload(get("source_cluster"), get("source_workload_namespace"), get("source_workload")),
        destination=Workload(get("destination_cluster"), get("destination_workload_namespace"),
                             get("destination_workload")),
        response_code=get("response_code"),
        security=get("connection_security_policy"),
        service=get("destination_service"),
    )


def parse_reading(text: str, at: float) -> Reading:
    """Read the destination-reported request counters and duration buckets out of a ``/stats/prometheus`` page."""
    requests: dict[Series, float] = {}
    buckets: dict[tuple[Series, float], float] = {}
    services: dict[tuple[Workload, Workload], set[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sample = _sample(line)
        if sample is None:
            continue
        name, labels, value = sample
        series = _series(labels)
        if name == REQUESTS and series.service != UNKNOWN:
            services.setdefault((series.source, series.destination), set()).add(series.service)
        if labels.get("reporter") != "destination":
            continue
        if name == REQUESTS:
            requests[series] = requests.get(series, 0.0) + value
        else:
            le = labels.get("le", "")
            try:
                bound = math.inf if le == "+Inf" else float(le)
            except ValueError as e:
                raise SampleParseError(f"bad le {le!r} in {line[:120]!r}") from e
            buckets[(series, bound)] = buckets.get((series, bound), 0.0) + value
    return Reading(at=at, requests=requests, buckets=buckets,
                   services={k: frozenset(v) for k, v in services.items()})


def _increase(new: float, old: float | None) -> float:
    """A counter's growth; a counter that went down was reset (its Envoy restarted) and counts from zero."""
    if old is None or new < old:
        return new
    return new - old


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative bucket counts (upper bound -> count): linear
    interpolation inside the bucket that holds the rank; the highest finite bound when it falls in +Inf."""
    bounds = sorted(buckets)
    if not bounds or math.inf not in buckets:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if b == math.inf:
                return lower
            if count == below:
                return b
            return lower + (b - lower) * (rank - below) / (count - below)
        lower, below = b, count
    return lower


@dataclass(frozen=True, slots=True)
class Edge:
    source: Workload
    destination: Workload
    requests: float  # in the window
    rps: float
    error_rate: float  # share of 5xx answers
    mtls: str  # "mutual_tls" when every request was, "none" when none was, else "mixed"
    p99_ms: float | None
    services: tuple[str, ...] = ()  # the destination services asked for, where the proxy knew them

    def to_json(self) -> dict[str, object]:
        return {
            "id": f"{self.source.id}->{self.destination.id}",
            "source": self.source.id,
            "target": self.destination.id,
            "requests": round(self.requests, 3),
            "rps": round(self.rps, 3),
            "errorRate": round(self.error_rate, 4),
            "mtls": self.mtls,
            "p99Ms": None if self.p99_ms is None else round(self.p99_ms, 3),
            "services": list(self.services),
        }


@dataclass
class _History:
    readings: deque[Reading] = field(default_factory=deque)


class TopologyAggregator:
    """Readings per proxy over the last ``window_s`` seconds, and the edges they add up to."""

    def __init__(self, window_s: float = 30.0) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._proxies: dict[str, _History] = {}

    def observe(self, proxy: str, reading: Reading) -> None:
        hist = self._proxies.setdefault(proxy, _History())
        hist.readings.append(reading)
        # Keep the newest reading older than the window too: it is the baseline of the window's increase.
        while len(hist.readings) > 2 and hist.readings[1].at <= reading.at - self.window_s:
            hist.readings.popleft()

    def forget(self, keep: Iterable[str]) -> None:
        """Drop proxies not in ``keep`` (disconnected ones)."""
        wanted = set(keep)
        for name in list(self._proxies):
            if name not in wanted:
                del self._proxies[name]

    def edges(self) -> list[Edge]:
        requests: dict[Series, float] = {}
        buckets: dict[tuple[Workload, Workload], dict[float, float]] = {}
        spans: dict[tuple[Workload, Workload], float] = {}
        services: dict[tuple[Workload, Workload], set[str]] = {}
        for hist in self._proxies.values():
            if hist.readings:
                for pair, names in hist.readings[-1].services.items():
                    services.setdefault(pair, set()).update(names)
            if len(hist.readings) < 2:
                continue  # one reading: no rate yet
            first, last = hist.readings[0], hist.readings[-1]
            span = last.at - first.at
            if span <= 0:
                continue
            for series, value in last.requests.items():
                inc = _increase(value, first.requests.get(series))
                if inc > 0:
                    requests[series] = requests.get(series, 0.0) + inc
                    pair = (series.source, series.destination)
                    spans[pair] = max(spans.get(pair, 0.0), span)
            for (series, bound), value in last.buckets.items():
                inc = _increase(value, first.buckets.get((series, bound)))
                pair = (series.source, series.destination)
                per = buckets.setdefault(pair, {})
                per[bound] = per.get(bound, 0.0) + inc
        totals: dict[tuple[Workload, Workload], list[float]] = {}  # [all, 5xx, mutual_tls]
        for series, inc in requests.items():
            t = totals.setdefault((series.source, series.destination), [0.0, 0.0, 0.0])
            t[0] += inc
            if series.response_code.startswith("5"):
                t[1] += inc
            if series.security == "mutual_tls":
                t[2] += inc
        out = []
        for pair, (count, errors, mtls) in sorted(totals.items()):
            mode = "mutual_tls" if mtls == count else ("none" if mtls == 0 else "mixed")
            out.append(Edge(source=pair[0], destination=pair[1], requests=count, rps=count / spans[pair],
                            error_rate=errors / count, mtls=mode, p99_ms=quantile(0.99, buckets.get(pair, {})),
                            services=tuple(sorted(services.get(pair, ())))))
        return out


__all__ = [
    "Edge",
    "Reading",
    "SampleParseError",
    "Series",
    "TopologyAggregator",
    "Workload",
    "parse_labels",
    "parse_reading",
    "quantile",
]
