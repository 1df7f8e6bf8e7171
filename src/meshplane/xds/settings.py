"""Settings of the xDS server, passed explicitly (nothing is read from the environment at import time)."""

from __future__ import annotations

from dataclasses import dataclass

from meshplane.metrics import ControlPlaneMetrics
from meshplane.xds.translator import Translator


@dataclass(frozen=True, slots=True)
class XdsSettings:
    # Debounce: push when no change arrived for ``debounce_quiet`` s, at the latest ``debounce_max`` s after the
    # first change of a burst.
    debounce_quiet: float = 0.1
    debounce_max: float = 1.0
    # How many proxies are pushed concurrently (worker tasks). High, because on one event loop concurrency adds
    # no parallelism, only overlap: an endpoint change to a thousand proxies is started at once instead of
    # interleaving with the first proxies' ACKs (p99 to all of them 240 -> 150 ms in bench/xds_scale). Memory
    # is bounded by the bytes in flight (the write budget), not by this number.
    max_concurrent_pushes: int = 1000
    # A proxy that does not take one response's write within this time is disconnected (it reconnects and resyncs).
    send_timeout: float = 30.0
    # The cluster id of the ServiceEntry/WorkloadEntry registry source (this control plane's own config).
    cluster_id: str = ""
    # Translation; None: meshplane.translate with default MeshSettings.
    translator: Translator | None = None
    max_message_bytes: int = 64 * 1024 * 1024
    # HTTP/2 keepalive pings a proxy may send on an ADS connection: at most one per this many seconds while the
    # server sends nothing (gRPC's default is 5 minutes, and Envoy's bootstrap pings every 30 s: each stream was then
    # reset with GOAWAY "too_many_pings" after three pings, about every two minutes). Faster pingers are cut off
    # after ``max_ping_strikes`` too-early pings, as gRPC does, so a client cannot flood the server with pings.
    min_ping_interval: float = 1.0
    max_ping_strikes: int = 2
    # Where pushes, rejects, convergence times and connected proxies are counted; None: not counted.
    metrics: ControlPlaneMetrics | None = None
