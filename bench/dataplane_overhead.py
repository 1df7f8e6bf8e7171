"""Data-plane overhead: client -> sidecar -> sidecar -> server against client -> server, at a fixed request rate.

Why this shape: it is how Istio publishes its sidecar cost (two proxies in the path, 1,000 rps, added latency at
p50/p90/p99, CPU and memory per sidecar), so the numbers compare directly. The mesh is a real local mesh started
with ``meshplane up`` (control plane, two agents, two Envoys, ``--concurrency 1``); the server is a minimal
HTTP/1.1 keep-alive responder so the server's own cost stays small and equal on every path.

Load generator: open loop, requests scheduled at fixed times ``t0 + i/rate`` and latency measured from the
scheduled time, so a slow response delays nothing and queueing shows up in the tail (no coordinated omission).
In-flight requests are bounded (``--max-inflight``); requests that would exceed it are counted as dropped. By
default the generator and the responder are the compiled bench/loadgen/loadgen.cc (built with g++ on first use):
a few microseconds per request, so the sidecars do not compete for the two cores with a Python generator, and the
direct path's own latency (~0.1 ms) no longer hides what the sidecars add. ``--generator python`` keeps the
aiohttp generator and asyncio responder of the first runs.

Baseline in the same run: a pair of bare Envoys (one listener, one catch-all route, one static cluster; the same
binary and flags as a sidecar unless ``--bare-envoy`` names another build) carries the same load, so each
sidecar's CPU is also reported as a ratio to a router-only Envoy on the same machine in the same minutes.

    python bench/dataplane_overhead.py --bare-envoy /other/envoy   # compare another Envoy build as the baseline

``--metrics-cost``: the cost of Istio's standard metrics (the stats access loggers and the peer-identity headers,
``translate.telemetry``) in the same run: after the usual paths the mesh path is measured again with a mesh-wide
Telemetry that disables ALL_METRICS (which also drops the identity exchange), then once more with it removed, so
metrics-on is measured before and after metrics-off and drift shows. ``--metrics-rounds N`` repeats the off/on
pair N times and reports the median of the N ratios (each off phase against the on phases either side of it).

Without ``--mtls`` the mesh runs without certificates (plaintext between sidecars, the baseline); with it every
sidecar gets its certificate from meshplane's CA over SDS, a mesh-wide PeerAuthentication is STRICT and an
AuthorizationPolicy ALLOW (by the client's SPIFFE principal and method) guards the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

try:  # imported as bench.dataplane_overhead (tests), or run as a script with bench/ first on sys.path
    from bench.compiled import build_cached
except ModuleNotFoundError:
    from compiled import build_cached

CLK_TCK = os.sysconf("SC_CLK_TCK")
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
            b'{"status":"ok"}')


# --- the server (``serve`` mode) ----------------------------------------------------------------------------

class _Responder(asyncio.Protocol):
    """Answers every HTTP/1.1 request on a keep-alive connection with a fixed 200 (requests have no body)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * n)


async def serve(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    server = await asyncio.get_running_loop().create_server(_Responder, host, int(port))
    async with server:
        await server.serve_forever()


# --- load generator ----------------------------------------------------------------------------------------

async def open_loop(url: str, rate: float, duration: float, *, proxy: str | None, max_inflight: int,
                    connections: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = dropped = 0
    inflight = 0
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()

        async def one(scheduled: float) -> None:
            nonlocal errors, inflight
            try:
                async with session.get(url, proxy=proxy) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        return
                latencies.append(loop.time() - scheduled)
            except (aiohttp.ClientError, TimeoutError, OSError):
                errors += 1
            finally:
                inflight -= 1

        # Warm the connection pool outside the measurement.
        await asyncio.gather(*(one(loop.time()) for _ in range(min(connections, 32))))
        latencies.clear()
        errors = 0
        total = int(rate * duration)
        t0 = loop.time() + 0.05
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while i < total:
            now = loop.time()
            while i < total and t0 + i / rate <= now:
                if inflight >= max_inflight:
                    dropped += 1
                else:
                    inflight += 1
                    t = asyncio.create_task(one(t0 + i / rate))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        if tasks:
            await asyncio.gather(*tasks)
        elapsed = loop.time() - t0
    latencies.sort()
    return {"sent": total, "ok": len(latencies), "errors": errors, "dropped": dropped, "elapsed_s": elapsed,
            "achieved_rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
            **{f"p{q}_ms": _pct(latencies, q) * 1000 for q in (50, 90, 99)}}


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q / 100))]


# --- the compiled generator and responder (bench/loadgen/loadgen.cc) ----------------------------------------

LOADGEN_SOURCE = Path(__file__).resolve().parent / "loadgen" / "loadgen.cc"


def resolve_generator(choice: str) -> str | None:
    """The compiled load generator's path for ``--generator cpp|auto``, None for python (or auto without g++)."""
    if choice == "python":
        return None
    binary, why = build_cached(LOADGEN_SOURCE, "loadgen")
    if binary is None:
        if choice == "cpp":
            raise SystemExit(f"--generator cpp: {why}")
        print(f"dataplane_overhead: {why}; using the Python generator", file=sys.stderr)
    return binary


async def open_loop_cpp(binary: str, url: str, rate: float, duration: float, *, connect: str, proxy: bool,
                        max_inflight: int, connections: int, prefix: Sequence[str] = ()) -> dict[str, Any]:
    """The same open loop as :func:`open_loop`, run by the compiled generator (one JSON line on stdout);
    ``prefix`` runs it elsewhere (``ip netns exec NS``: inside the client instance's network namespace)."""
    cmd = [*prefix, binary, "run", "--connect", connect, "--url", url, "--rate", str(rate), "--duration", str(duration),
           "--connections", str(connections), "--max-inflight", str(max_inflight), *(["--proxy"] if proxy else [])]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"load generator failed ({proc.returncode}): {err.decode().strip()}")
    result: dict[str, Any] = json.loads(out)
    return result


# --- process accounting --------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the mesh ------------------------------------------------------------------------------------------------

def manifest(script: str, mtls: bool = False, responder: str | None = None) -> dict[str, Any]:
    """The bench mesh: two instances whose application is the responder (compiled when ``responder`` is its
    path, else this script's ``serve`` mode)."""
    command = [responder, "serve", "{listen}"] if responder else ["{python}", script, "serve", "{listen}"]

    def workload(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": "default", "cluster": "bench", "labels": {"app": name, "version": "v1"},
                "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}],
                "command": command, "readiness": {"tcpSocket": {}}}

    doc: dict[str, Any] = {
        "name": "bench", "clusters": [{"name": "bench"}], "security": {"mtls": mtls},
        "workloads": [workload("bench-client"), workload("bench-server")],
        "services": [{"name": "bench-server", "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}]}]}
    if mtls:
        doc["config"] = [
            {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}},
            {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "allow-client", "namespace": "default"},
             "spec": {"selector": {"matchLabels": {"app": "bench-server"}}, "action": "ALLOW", "rules": [
                 {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/default"]}}],
                  "to": [{"operation": {"methods": ["GET"]}}]}]}},
        ]
    return doc


def meshplane(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "meshplane.cli.main", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"meshplane {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


# --- the same-run baseline: two bare Envoys ------------------------------------------------------------------

def bare_bootstrap(listen_port: int, upstream: tuple[str, int]) -> dict[str, Any]:
    """A router-only Envoy: one listener, one catch-all route, one static cluster. The least an HTTP proxy hop
    costs with this Envoy build on this machine, which is what a sidecar's CPU is compared with."""
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "bare",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                                               "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "next"}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    address = {"socket_address": {"address": upstream[0], "port_value": upstream[1]}}
    return {"static_resources": {
        "listeners": [{"name": "in", "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                       "typed_config": hcm}]}]}],
        "clusters": [{"name": "next", "type": "STATIC", "connect_timeout": "1s",
                      "load_assignment": {"cluster_name": "next",
                                          "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}}]}}


def wait_listening(port: int, timeout: float, procs: Sequence[subprocess.Popen[bytes]] = ()) -> bool:
    """True once 127.0.0.1:``port`` accepts a connection; False after ``timeout`` or once one of ``procs`` (the
    processes that should be listening) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                return False
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def bare_envoys(workdir: Path, server: tuple[str, int], binary: str) -> Iterator[tuple[list[int], str]]:
    """Two bare Envoys (``binary``) in a row in front of ``server`` (same flags as a meshplane sidecar:
    ``--concurrency 1``, log level warning): yields their pids and the first one's HOST:PORT; stops both on exit."""
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, port, upstream in (("b", second, server), ("a", first, ("127.0.0.1", second))):
            cfg = workdir / f"bare-{name}.json"
            cfg.write_text(json.dumps(bare_bootstrap(port, upstream)))
            with (workdir / f"bare-{name}.log").open("wb") as log:
                procs.append(subprocess.Popen(
                    [binary, "-c", str(cfg), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"],
                    stdout=subprocess.DEVNULL, stderr=log))
        deadline = time.monotonic() + 20
        for port in (first, second):
            if not wait_listening(port, deadline - time.monotonic(), procs):
                raise SystemExit(f"bare Envoy did not listen on {port}: see {workdir}/bare-*.log")
        yield [procs[1].pid, procs[0].pid], f"127.0.0.1:{first}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- the measurement -------------------------------------------------------------------------------------------

async def run_path(args: argparse.Namespace, generator: str | None, url: str, connect: str,
                   proxy: bool, prefix: Sequence[str] = ()) -> dict[str, Any]:
    if generator:
        return await open_loop_cpp(generator, url, args.rate, args.duration, connect=connect, proxy=proxy,
                                   max_inflight=args.max_inflight, connections=args.connections, prefix=prefix)
    if prefix:
        raise SystemExit("--transparent needs the compiled generator (g++): it runs inside the client's namespace")
    return await open_loop(url, args.rate, args.duration, proxy=f"http://{connect}" if proxy else None,
                           max_inflight=args.max_inflight, connections=args.connections)


def _pair(home: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    st = json.loads(meshplane("status", "-o", "json", "--home", str(home)))
    by_name = {w["workload"]: w for w in st["workloads"]}
    return st, by_name["bench-client"], by_name["bench-server"]


def transparent_path(home: Path) -> tuple[list[str], str, list[int]]:
    """The transparent mesh's client side: ``ip netns exec`` of the client instance's namespace, the server's
    VIP:9080 as the agent's DNS answers it there (what an unmodified client connects to), both Envoys' pids."""
    _, client, server = _pair(home)
    runtime = json.loads((home / "runtime.json").read_text())
    ns = next(i["netns"] for i in runtime["instances"] if i["workload"] == "bench-client")
    prefix = ["ip", "netns", "exec", ns]
    vip = subprocess.run([*prefix, sys.executable, "-c", "import socket; print(socket.gethostbyname('bench-server'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return prefix, f"{vip}:9080", [int(client["envoyPid"]), int(server["envoyPid"])]


async def measure(args: argparse.Namespace, home: Path, generator: str | None, workdir: Path,
                  transparent_home: Path | None = None) -> dict[str, Any]:
    st, client, server = _pair(home)
    envoys = [int(client["envoyPid"]), int(server["envoyPid"])]
    direct = f"{server['address']}:19080"
    meshed = "http://bench-server:9080/"
    results: dict[str, Any] = {"rate": args.rate, "duration_s": args.duration,
                               "generator": "cpp" if generator else "python"}
    t_prefix: list[str] = []
    t_connect, t_envoys = "", []
    if transparent_home is not None:
        t_prefix, t_connect, t_envoys = transparent_path(transparent_home)
    from meshplane.agent.envoy import find_envoy

    bare_binary = args.bare_envoy or find_envoy()
    version = re.search(r"version: \S+?/([^/\s]+)/", subprocess.run([bare_binary, "--version"],
                                                                    capture_output=True, text=True).stdout)
    results["bare_envoy_version"] = version.group(1) if version else "?"
    with bare_envoys(workdir, (server["address"], 19080), bare_binary) as (bare_pids, bare_entry):
        paths: list[tuple[str, str, str, bool, list[int], list[str]]] = [
            ("direct", f"http://{direct}/", direct, False, [], []),
            ("mesh", meshed, f"{client['address']}:15001", True, envoys, [])]
        if transparent_home is not None:  # no proxy setting: the kernel hands the connection to the sidecar
            paths.append(("mesh_transparent", meshed, t_connect, False, t_envoys, t_prefix))
        paths += [("bare", meshed, bare_entry, True, bare_pids, []),
                  ("direct_again", f"http://{direct}/", direct, False, [], [])]
        for label, url, connect, proxy, pids, prefix in paths:
            cpu0 = [cpu_seconds(p) for p in pids]
            r = await run_path(args, generator, url, connect, proxy, prefix)
            cpu1 = [cpu_seconds(p) for p in pids]
            r["envoy_cpu_vcpu"] = [(b - a) / r["elapsed_s"] for a, b in zip(cpu0, cpu1, strict=True)]
            r["envoy_rss_mb"] = [rss_mb(p) for p in pids]
            if not r["ok"]:
                raise SystemExit(f"no request on the {label} path was answered: {r}")
            results[label] = r
    base = {q: min(results["direct"][q], results["direct_again"][q]) for q in ("p50_ms", "p90_ms", "p99_ms")}
    for label, key in (("mesh", ""), ("bare", "bare_"), ("mesh_transparent", "transparent_")):
        if label not in results:
            continue
        m = results[label]
        per_krps = 1000 / max(m["achieved_rps"], 1e-9)
        results[f"{key}added_ms"] = {q: m[q] - base[q] for q in base}
        results[f"{key}sidecar_vcpu_per_1000rps"] = [c * per_krps for c in m["envoy_cpu_vcpu"]]
        results[f"{key}sidecar_rss_mb"] = m["envoy_rss_mb"]
    results["cpu_ratio_to_bare"] = [m / b for m, b in zip(results["sidecar_vcpu_per_1000rps"],
                                                           results["bare_sidecar_vcpu_per_1000rps"], strict=True)]
    if "mesh_transparent" in results:
        results["transparent_cpu_ratio_to_explicit"] = [
            t / e for t, e in zip(results["transparent_sidecar_vcpu_per_1000rps"], results["sidecar_vcpu_per_1000rps"],
                                  strict=True)]
    if args.metrics_cost:
        await metrics_cost(args, st, generator, meshed, f"{client['address']}:15001", envoys, results, base)
    return results


METRICS_OFF = {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
               "metadata": {"name": "bench-metrics-off", "namespace": "istio-system"},
               "spec": {"metrics": [{"overrides": [{"match": {"metric": "ALL_METRICS"}, "disabled": True}]}]}}


async def _stats_loggers(session: aiohttp.ClientSession, admin: str) -> int:
    async with session.get(f"http://{admin}/config_dump?resource=dynamic_listeners") as r:
        return (await r.text()).count("envoy.extensions.access_loggers.stats.v3.Config")


async def _wait_loggers(admins: list[str], present: bool) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            counts = [await _stats_loggers(s, a) for a in admins]
            if all((c > 0) == present for c in counts):
                await asyncio.sleep(1.0)  # old listeners drain
                return
            await asyncio.sleep(0.1)
    raise SystemExit(f"the proxies' stats loggers did not become {'present' if present else 'absent'}")


async def metrics_cost(args: argparse.Namespace, st: dict[str, Any], generator: str | None, url: str,
                       connect: str, envoys: list[int], results: dict[str, Any],
                       base: dict[str, float]) -> None:
    from meshplane.client import Client

    admins = [f"{w['address']}:15000" for w in st["workloads"] if w["workload"] in ("bench-client", "bench-server")]
    api = Client(str(st["api"]))

    async def run(label: str) -> None:
        cpu0 = [cpu_seconds(p) for p in envoys]
        r = await run_path(args, generator, url, connect, True)
        cpu1 = [cpu_seconds(p) for p in envoys]
        per_krps = 1000 / max(r["achieved_rps"], 1e-9)
        r["sidecar_vcpu_per_1000rps"] = [(b - a) / r["elapsed_s"] * per_krps for a, b in zip(cpu0, cpu1, strict=True)]
        r["added_ms"] = {q: r[q] - base[q] for q in base}
        results[label] = r

    rounds: list[dict[str, Any]] = []
    previous_on: dict[str, Any] = {"sidecar_vcpu_per_1000rps": results["sidecar_vcpu_per_1000rps"],
                                   "p50_ms": results["mesh"]["p50_ms"]}
    try:
        for _ in range(max(1, args.metrics_rounds)):
            await api.apply(METRICS_OFF)
            await _wait_loggers(admins, present=False)
            await run("mesh_metrics_off")
            await api.delete("telemetry.istio.io/v1", "Telemetry", "bench-metrics-off", "istio-system")
            await _wait_loggers(admins, present=True)
            await run("mesh_metrics_on_again")
            off, on2 = results["mesh_metrics_off"], results["mesh_metrics_on_again"]
            on = [(a + b) / 2 for a, b in zip(previous_on["sidecar_vcpu_per_1000rps"],
                                              on2["sidecar_vcpu_per_1000rps"], strict=True)]
            rounds.append({"off": off, "on_again": on2,
                           "cpu_ratio": [a / b for a, b in zip(on, off["sidecar_vcpu_per_1000rps"], strict=True)],
                           "added_p50_ms": (previous_on["p50_ms"] + on2["p50_ms"]) / 2 - off["p50_ms"]})
            previous_on = on2
    finally:
        await api.close()
    # Each off phase against the on phases either side of it; the median over rounds, as the machine's load
    # moves between phases (bench/README.md).
    results["metrics_rounds"] = rounds
    results["metrics_cpu_ratio"] = [_median([r["cpu_ratio"][i] for r in rounds]) for i in range(len(envoys))]
    results["metrics_added_p50_ms"] = _median([r["added_p50_ms"] for r in rounds])


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def report(r: dict[str, Any]) -> str:
    d, dd, m, b = r["direct"], r["direct_again"], r["mesh"], r["bare"]
    runs = (d, m, b, dd, *([r["mesh_transparent"]] if "mesh_transparent" in r else []))
    lines = [f"rate {r['rate']} rps for {r['duration_s']} s per path, {r['generator']} generator "
             f"(achieved: direct {d['achieved_rps']:.0f}, mesh {m['achieved_rps']:.0f}, bare {b['achieved_rps']:.0f}; "
             f"errors {sum(x['errors'] for x in runs)}, dropped {sum(x['dropped'] for x in runs)})", "",
             "| path | p50 ms | p90 ms | p99 ms |", "|---|---|---|---|"]
    t = r.get("mesh_transparent")
    rows = [("client -> server", d), ("client -> sidecar -> sidecar -> server", m)]
    if t is not None:
        rows.append(("same, transparent (namespaces, iptables capture, no proxy setting)", t))
    rows += [("client -> bare Envoy -> bare Envoy -> server", b), ("client -> server (again)", dd)]
    for label, x in rows:
        lines.append(f"| {label} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} |")
    added = [("**added by 2 sidecars**", "added_ms"), ("added by 2 bare Envoys", "bare_added_ms")]
    if t is not None:
        added.insert(1, ("added by 2 sidecars, transparent", "transparent_added_ms"))
    for label, key in added:
        a = r[key]
        lines.append(f"| {label} | {a['p50_ms']:.2f} | {a['p90_ms']:.2f} | {a['p99_ms']:.2f} |")

    def pair(values: list[float], fmt: str) -> str:
        return ", ".join(format(v, fmt) for v in values)

    lines += ["",
              f"sidecar CPU per 1,000 rps (client, server sidecar): {pair(r['sidecar_vcpu_per_1000rps'], '.3f')} vCPU; "
              f"RSS: {pair(r['sidecar_rss_mb'], '.0f')} MB",
              f"bare Envoy ({r['bare_envoy_version']}) CPU per 1,000 rps (first, second): "
              f"{pair(r['bare_sidecar_vcpu_per_1000rps'], '.3f')} vCPU; "
              f"RSS: {pair(r['bare_sidecar_rss_mb'], '.0f')} MB",
              f"sidecar / bare Envoy CPU: {pair(r['cpu_ratio_to_bare'], '.2f')}"]
    if t is not None:
        lines += [f"transparent sidecar CPU per 1,000 rps (client, server sidecar): "
                  f"{pair(r['transparent_sidecar_vcpu_per_1000rps'], '.3f')} vCPU; "
                  f"RSS: {pair(r['transparent_sidecar_rss_mb'], '.0f')} MB; "
                  f"transparent / explicit CPU: {pair(r['transparent_cpu_ratio_to_explicit'], '.2f')}"]
    if "metrics_cpu_ratio" in r:
        rounds = r["metrics_rounds"]
        lines += ["", "Istio standard metrics (sidecar path; on, then off and on again per round):",
                  "| metrics | p50 ms | p99 ms | sidecar vCPU per 1,000 rps (client, server) | on / off |",
                  "|---|---|---|---|---|"]
        lines.append(f"| on | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {pair(r['sidecar_vcpu_per_1000rps'], '.3f')} | |")
        for i, rnd in enumerate(rounds, 1):
            off, on2 = rnd["off"], rnd["on_again"]
            lines.append(f"| off (ALL_METRICS disabled), round {i} | {off['p50_ms']:.2f} | {off['p99_ms']:.2f} | "
                         f"{pair(off['sidecar_vcpu_per_1000rps'], '.3f')} | {pair(rnd['cpu_ratio'], '.3f')} |")
            lines.append(f"| on again, round {i} | {on2['p50_ms']:.2f} | {on2['p99_ms']:.2f} | "
                         f"{pair(on2['sidecar_vcpu_per_1000rps'], '.3f')} | |")
        what = "median over rounds, " if len(rounds) > 1 else ""
        lines.append(f"metrics CPU on / off ({what}client, server): {pair(r['metrics_cpu_ratio'], '.3f')}; "
                     f"p50 added by metrics: {r['metrics_added_p50_ms']:.3f} ms")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", nargs="?", default="run", choices=["run", "serve"])
    p.add_argument("listen", nargs="?", help="serve mode: HOST:PORT")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections of the generator")
    p.add_argument("--max-inflight", type=int, default=512)
    p.add_argument("--json", action="store_true")
    p.add_argument("--home", help="use this home for the bench mesh (default: a temporary directory)")
    p.add_argument("--mtls", action="store_true", help="SPIFFE mTLS (STRICT) and an ALLOW policy between sidecars")
    p.add_argument("--metrics-cost", action="store_true",
                   help="also measure the mesh path with Istio's standard metrics disabled, then on again")
    p.add_argument("--metrics-rounds", type=int, default=1,
                   help="with --metrics-cost: off/on rounds; the ratio is their median (a shared machine's load "
                        "moves between phases)")
    p.add_argument("--bare-envoy", default="",
                   help="Envoy binary of the baseline pair (default: the sidecars' Envoy), to compare another build")
    p.add_argument("--transparent", action="store_true",
                   help="also run the mesh with transparent interception (root: namespaces, iptables) and measure "
                        "its path in the same run: the client connects to the server's name without a proxy")
    p.add_argument("--generator", choices=["auto", "cpp", "python"], default="auto",
                   help="load generator and responder: compiled (bench/loadgen, built with g++) or Python")
    args = p.parse_args()
    if args.mode == "serve":
        asyncio.run(serve(args.listen))
        return 0
    with tempfile.TemporaryDirectory(prefix="meshplane-bench-") as tmp:
        home = Path(args.home or Path(tmp) / "home")
        mf = Path(tmp) / "bench.yaml"
        generator = resolve_generator(args.generator)
        mf.write_text(yaml.safe_dump(manifest(str(Path(__file__).resolve()), args.mtls, generator)))
        t_home = Path(tmp) / "home-transparent" if args.transparent else None
        try:
            meshplane("up", "-f", str(mf), "--home", str(home), "--interception", "explicit")
            if t_home is not None:  # the same mesh again, in namespaces with capture (needs root)
                meshplane("up", "-f", str(mf), "--home", str(t_home), "--interception", "transparent")
            time.sleep(1.0)  # let the proxies settle after the last push
            results = asyncio.run(measure(args, home, generator, Path(tmp), t_home))
        finally:
            for h in (home, t_home):
                if h is not None:
                    subprocess.run([sys.executable, "-m", "meshplane.cli.main", "down", "--home", str(h)],
                                   capture_output=True)
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
