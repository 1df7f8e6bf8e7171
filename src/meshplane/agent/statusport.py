"""The agent's status port (Istio's ``pilot-agent`` port 15020): merged Prometheus metrics and readiness.

* ``GET /stats/prometheus``: the agent's own metrics (:mod:`meshplane.agent.metrics`), then everything Envoy's
  metrics listener serves (port 15090, ``/stats/prometheus``: Envoy's stats and the mesh metrics under Istio's
  names), as Istio's merged metrics are: one scrape of 15020 gets both, so Prometheus scrapes either 15020 or 15090
  for an instance, never both (the series of 15090 would be counted twice). When Envoy's listener cannot be read
  (Envoy starting, restarting, or ``stats_port`` 0) the agent's own metrics are still served, with a comment line
  saying why Envoy's are missing, and the first such failure in a row is logged.
* Istio's metrics merging: with ``app_stats_url`` (the application's own endpoint, from its
  ``prometheus.io/*`` annotations) the application's metrics follow Envoy's in the same answer; an application
  that cannot be read costs its part only (a comment line, the first failure in a row logged).
* ``GET /healthz/ready``: 200 when the instance is ready (``not_ready`` gives no reason: Envoy LIVE, and what else
  the agent requires), else 503 with the reason, as Istio's readiness on 15020 answers.

It listens on the instance's own address, like Envoy's ports; a port already taken is logged in one line and the
agent runs on without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web

from meshplane.agent.metrics import CONTENT_TYPE, AgentMetrics

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 5.0  # per source read at each scrape (Envoy's, the application's)


class StatusServer:
    def __init__(self, metrics: AgentMetrics, envoy_stats_url: str, session: aiohttp.ClientSession,
                 not_ready: Callable[[], str], *, app_stats_url: str = "") -> None:
        """``envoy_stats_url``: Envoy's ``/stats/prometheus`` ("" = none to merge); ``not_ready``: why the
        instance is not ready, "" when it is; ``app_stats_url``: the application's metrics ("" = none)."""
        self.metrics = metrics
        self.envoy_stats_url = envoy_stats_url
        self.app_stats_url = app_stats_url
        self.session = session
        self.not_ready = not_ready
        self.address = ""  # HOST:PORT once listening
        self._runner: web.AppRunner | None = None
        self._failing: set[str] = set()  # the sources whose last read failed (logged once per run of failures)

    async def start(self, host: str, port: int) -> bool:
        """Listen on ``host:port`` (0: a free port). False, logged, when the port cannot be had."""
        app = web.Application()
        app.router.add_get("/stats/prometheus", self._stats)
        app.router.add_get("/healthz/ready", self._ready)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            log.warning("status port %s:%s unavailable (%s): running without merged metrics and readiness there",
                        host, port, e.strerror or e)
            await runner.cleanup()
            return False
        self._runner = runner
        bound = [a for a in runner.addresses if isinstance(a, tuple)]  # (host, port): the port the kernel chose
        self.address = f"{host}:{int(bound[0][1]) if bound else port}"
        return True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _read(self, url: str) -> tuple[bytes, str]:
        """The text exposition at ``url``, or b"" and why it could not be read."""
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)) as r:
                body = await r.read()
                if r.status != 200:
                    return b"", f"{url} answered HTTP {r.status}"
                return body, ""
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return b"", f"{url}: {type(e).__name__} {e}".rstrip()

    async def envoy_metrics(self) -> tuple[bytes, str]:
        """Envoy's text exposition, or b"" and why it could not be read."""
        if not self.envoy_stats_url:
            return b"", "Envoy's metrics listener is off (stats_port 0)"
        return await self._read(self.envoy_stats_url)

    async def merged(self) -> bytes:
        """The agent's metrics, then Envoy's, then the application's (both read at once)."""
        sources = [("Envoy's", self.envoy_metrics())]
        if self.app_stats_url:
            sources.append(("the application's", self._read(self.app_stats_url)))
        read = await asyncio.gather(*(coro for _, coro in sources))
        return self.metrics.render() + b"".join(
            self._part(whose, body, why) for (whose, _), (body, why) in zip(sources, read, strict=True))

    def _part(self, whose: str, body: bytes, why: str) -> bytes:
        """One source's text, ending in a newline; or a comment line saying why it is missing."""
        if why:
            if whose not in self._failing:
                log.warning("merged metrics without %s: %s", whose, why)
            self._failing.add(whose)
            note = " ".join(why.split())  # one comment line
            return f"# meshplane agent: {whose} metrics are missing: {note}\n".encode()
        self._failing.discard(whose)
        if body and not body.endswith(b"\n"):
            body += b"\n"
        return body

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.merged(), headers={"Content-Type": CONTENT_TYPE})

    async def _ready(self, request: web.Request) -> web.Response:
        why = self.not_ready()
        if not why:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {why}\n")


__all__ = ["StatusServer"]
