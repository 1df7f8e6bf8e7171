"""The application's readiness probe, with Kubernetes' thresholds.

Why thresholds: one slow answer should not pull an instance out of every proxy's endpoints (a push to the whole
mesh), and one lucky answer should not put a flapping one back. The probe talks to the application directly (its
private address), not through the sidecar, so it measures the application alone, as the kubelet does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from meshplane.agent.config import Readiness


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    message: str = ""


async def probe_once(spec: Readiness, host: str, port: int, session: aiohttp.ClientSession) -> ProbeResult:
    if spec.http_path:
        url = f"http://{host}:{port}{spec.http_path}"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=spec.timeout_s)) as r:
                await r.read()
                if 200 <= r.status < 400:
                    return ProbeResult(True)
                return ProbeResult(False, f"GET {spec.http_path}: HTTP {r.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return ProbeResult(False, f"GET {spec.http_path}: {type(e).__name__}: {e}")
    if spec.tcp:
        try:
            async with asyncio.timeout(spec.timeout_s):
                _, writer = await asyncio.open_connection(host, port)
        except (TimeoutError, OSError) as e:
            return ProbeResult(False, f"connect {host}:{port}: {e}")
        writer.close()
        return ProbeResult(True)
    return ProbeResult(True)


class ReadinessTracker:
    """Turns single probe results into a ready/not-ready state with success and failure thresholds."""

    def __init__(self, spec: Readiness) -> None:
        self.spec = spec
        self.ready = False
        self.message = "not probed yet"
        self._ok_run = 0
        self._fail_run = 0

    def observe(self, result: ProbeResult) -> bool:
        """Record one result; returns the (possibly changed) readiness."""
        if result.ok:
            self._ok_run += 1
            self._fail_run = 0
            if self._ok_run >= max(1, self.spec.success_threshold):
                self.ready = True
                self.message = ""
        else:
            self._fail_run += 1
            self._ok_run = 0
            self.message = result.message
            if self._fail_run >= max(1, self.spec.failure_threshold) or not self.ready:
                self.ready = False
        return self.ready
