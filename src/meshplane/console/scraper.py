"""Reads every connected proxy's Istio metrics (``:15090/stats/prometheus``) for the console's topology.

Why here and not Prometheus: the console must work on the embedded default (``meshplane demo up``) with nothing
else installed. Why cheap: it runs only while somebody looks: the first topology request starts it, and it stops
after ``idle_s`` without one. One asyncio task for all proxies (no thread per proxy), at most ``concurrency``
requests at a time, each bounded by ``timeout_s``, asking Envoy to filter to the ``istio`` stats. Only the local
runtime's instances are scraped: loopback addresses, and the addresses of its own network namespaces when it runs
them (``networks``: the bridge's subnet of a transparent mesh, docs/runtime.md, which the supervisor passes as
``meshplane server --console-scrape-network``); a proxy elsewhere is listed with the reason it was skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from meshplane.console.topology import Edge, SampleParseError, TopologyAggregator, Workload, parse_reading

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """A connected proxy: who it is (node id, workload) and where it is."""

    proxy: str
    workload: Workload
    kind: str  # "sidecar" | "router"
    addresses: tuple[str, ...]
    locality: str


@dataclass(frozen=True, slots=True)
class ScraperSettings:
    interval_s: float = 5.0
    timeout_s: float = 2.0
    window_s: float = 30.0
    idle_s: float = 120.0
    concurrency: int = 8
    port: int = 15090  # Istio's, the agent's default stats_port
    networks: tuple[str, ...] = ()  # CIDRs scraped besides loopback: the runtime's network namespaces


@dataclass(frozen=True, slots=True)
class TargetState:
    target: Target
    url: str  # "" when skipped
    error: str  # "" after a good scrape
    last_ok: float | None  # wall clock of the last good scrape


def _local(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    """Whether ``address`` is one of the local runtime's: loopback, or in one of its networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or any(ip in net for net in networks)


class MetricsScraper:
    """Scrapes ``targets()`` every ``interval_s`` while active; ``touch()`` (each topology request) keeps it so."""

    def __init__(self, targets: Callable[[], list[Target]], settings: ScraperSettings | None = None) -> None:
        self._targets = targets
        self.settings = settings or ScraperSettings()
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.settings.networks)
        self.aggregator = TopologyAggregator(self.settings.window_s)
        self._states: dict[str, TargetState] = {}
        self._task: asyncio.Task[None] | None = None
        self._touched = 0.0
        self._session: aiohttp.ClientSession | None = None

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    def touch(self) -> None:
        """Someone looks at the topology: scrape (start now when idle) for another ``idle_s``."""
        self._touched = time.monotonic()
        if not self.active:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="console-scraper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()

    def reads(self, address: str) -> bool:
        """Whether a proxy at ``address`` is one of the local runtime's, which this scraper reads."""
        return _local(address, self._networks)

    def edges(self) -> list[Edge]:
        return self.aggregator.edges()

    def states(self) -> list[TargetState]:
        return [self._states[k] for k in sorted(self._states)]

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        try:
            while time.monotonic() - self._touched < self.settings.idle_s:
                started = time.monotonic()
                await self.scrape_once()
                await asyncio.sleep(max(0.0, self.settings.interval_s - (time.monotonic() - started)))
        finally:
            # Idle: readings would be stale baselines when someone looks again.
            self.aggregator = TopologyAggregator(self.settings.window_s)
            self._states.clear()
            await self._close()

    async def scrape_once(self) -> None:
        targets = self._targets()
        self.aggregator.forget(t.proxy for t in targets)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
        sem = asyncio.Semaphore(max(1, self.settings.concurrency))
        seen = {t.proxy for t in targets}
        for gone in [k for k in self._states if k not in seen]:
            del self._states[gone]
        await asyncio.gather(*(self._scrape(t, sem) for t in targets))

    async def _scrape(self, target: Target, sem: asyncio.Semaphore) -> None:
        address = next(iter(target.addresses), "")
        prev = self._states.get(target.proxy)
        last_ok = prev.last_ok if prev else None
        if not address or not self.reads(address):
            inside = "".join(f" nor in {n}" for n in self.settings.networks)
            why = "no address" if not address else (f"{address} is not a loopback address{inside} (the console "
                                                    "reads only the local runtime's proxies)")
            self._states[target.proxy] = TargetState(target, "", why, last_ok)
            return
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{self.settings.port}/stats/prometheus"
        assert self._session is not None
        async with sem:
            try:
                async with self._session.get(url, params={"filter": "istio"}) as resp:
                    if resp.status != 200:
                        raise OSError(f"HTTP {resp.status}")
                    text = await resp.text()
                reading = parse_reading(text, time.monotonic())
            except (OSError, aiohttp.ClientError, TimeoutError, SampleParseError) as e:
                self._states[target.proxy] = TargetState(target, url, f"{type(e).__name__}: {e}", last_ok)
                return
        self.aggregator.observe(target.proxy, reading)
        self._states[target.proxy] = TargetState(target, url, "", time.time())


__all__ = ["MetricsScraper", "ScraperSettings", "Target", "TargetState"]
