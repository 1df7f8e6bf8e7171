"""The agent's status port (Istio's ``pilot-agent`` port 15020): merged Prometheus metrics and readiness.

* ``GET /stats/prometheus``: the agent's own metrics (:mod:`meshplane.agent.metrics`), then everything Envoy's
  metrics listener serves (port 15090, ``/stats/prometheus``: Envoy's stats and the mesh metrics under Istio's
  names), as Istio's merged metrics are: one scrape of 15020 gets both, so Prometheus scrapes either 15020 or 15090
  for an instance, never both (the series of 15090 would be counted twice). When Envoy's listener cannot be read
  (Envoy starting, restarting, or ``stats_port`` 0) the agent's own metrics are still served, with a comment line
  saying why Envoy's are missing, and the first such failure in a row is logged.
* ``GET /healthz/ready``: 200 when the instance is ready (``not_ready`` gives no reason: Envoy LIVE, and what else
  the agent requires), else 503 with the reason, as Istio's readiness on 15020 answers.

It listens on the instance's own address, like Envoy's ports; a port already taken is logged in one line and the
agent runs on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web

from meshplane.agent.metrics import CONTENT_TYPE, AgentMetrics

log = logging.getLogger(__name__)

ENVOY_SCRAPE_TIMEOUT_S = 5.0


class StatusServer:
    def __init__(self, metrics: AgentMetrics, envoy_stats_url: str, session: aiohttp.ClientSession,
                 not_ready: Callable[[], str]) -> None:
        """``envoy_stats_url``: Envoy's ``/stats/prometheus`` ("" = none to merge); ``not_ready``: why the
        instance is not ready, "" when it is."""
        self.metrics = metrics
        self.envoy_stats_url = envoy_stats_url
        self.session = session
        self.not_ready = not_ready
        self.address = ""  # HOST:PORT once listening
        self._runner: web.AppRunner | None = None
        self._envoy_failing = False

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

    async def envoy_metrics(self) -> tuple[bytes, str]:
        """Envoy's text exposition, or b"" and why it could not be read."""
        if not self.envoy_stats_url:
            return b"", "Envoy's metrics listener is off (stats_port 0)"
        try:
            async with self.session.get(self.envoy_stats_url,
                                        timeout=aiohttp.ClientTimeout(total=ENVOY_SCRAPE_TIMEOUT_S)) as r:
                body = await r.read()
                if r.status != 200:
                    return b"", f"{self.envoy_stats_url} answered HTTP {r.status}"
                return body, ""
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return b"", f"{self.envoy_stats_url}: {type(e).__name__} {e}".rstrip()

    async def merged(self) -> bytes:
        own = self.metrics.render()
        envoy, why = await self.envoy_metrics()
        if why:
            if not self._envoy_failing:
                log.warning("merged metrics without Envoy's: %s", why)
            self._envoy_failing = True
            note = " ".join(why.split())  # one comment line
            return own + f"# meshplane agent: Envoy's metrics are missing: {note}\n".encode()
        self._envoy_failing = False
        if envoy and not envoy.endswith(b"\n"):
            envoy += b"\n"
        return own + envoy

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(body=await self.merged(), headers={"Content-Type": CONTENT_TYPE})

    async def _ready(self, request: web.Request) -> web.Response:
        why = self.not_ready()
        if not why:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {why}\n")


__all__ = ["StatusServer"]
