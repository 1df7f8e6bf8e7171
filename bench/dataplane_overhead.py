"""Data-plane overhead: client -> sidecar -> sidecar -> server against client -> server, at a fixed request rate.

Why this shape: it is how Istio publishes its sidecar cost (two proxies in the path, 1,000 rps, added latency at
p50/p90/p99, CPU and memory per sidecar), so the numbers compare directly. The mesh is a real local mesh started
with ``meshplane up`` (control plane, two agents, two Envoys, ``--concurrency 1``); the server is a minimal
HTTP/1.1 keep-alive responder (``serve`` mode of this script) so the server's own cost stays small and equal in
both paths.

Load generator: open loop in Python (aiohttp), requests scheduled at fixed times ``t0 + i/rate`` and latency
measured from the scheduled time, so a slow response delays nothing and queueing shows up in the tail (no
coordinated omission). In-flight requests are bounded (``--max-inflight``); requests that would exceed it are
counted as dropped. The generator runs in this process, on the same machine as both Envoys: the baseline pays
the same generator cost, and the difference is what the sidecars add.

    python bench/dataplane_overhead.py                          # 1,000 rps, 20 s per path
    python bench/dataplane_overhead.py --rate 500 --duration 10 --json
    python bench/dataplane_overhead.py --mtls                   # SPIFFE mTLS (STRICT) + an ALLOW policy on

Without ``--mtls`` the mesh runs without certificates (plaintext between sidecars, the baseline); with it every
sidecar gets its certificate from meshplane's CA over SDS, a mesh-wide PeerAuthentication is STRICT and an
AuthorizationPolicy ALLOW (by the client's SPIFFE principal and method) guards the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

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

def manifest(script: str, mtls: bool = False) -> dict[str, Any]:
    def workload(name: str) -> dict[str, Any]:
        return {"name": name, "namespace": "default", "cluster": "bench", "labels": {"app": name, "version": "v1"},
                "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}],
                "command": ["{python}", script, "serve", "{listen}"], "readiness": {"tcpSocket": {}}}

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


async def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    st = json.loads(meshplane("status", "-o", "json", "--home", str(home)))
    by_name = {w["workload"]: w for w in st["workloads"]}
    client, server = by_name["bench-client"], by_name["bench-server"]
    envoys = [int(client["envoyPid"]), int(server["envoyPid"])]
    direct = f"http://{server['address']}:19080/"
    meshed = "http://bench-server:9080/"
    proxy = f"http://{client['address']}:15001"
    results: dict[str, Any] = {"rate": args.rate, "duration_s": args.duration}
    for label, url, px in (("direct", direct, None), ("mesh", meshed, proxy), ("direct_again", direct, None)):
        cpu0 = [cpu_seconds(p) for p in envoys]
        r = await open_loop(url, args.rate, args.duration, proxy=px, max_inflight=args.max_inflight,
                            connections=args.connections)
        cpu1 = [cpu_seconds(p) for p in envoys]
        r["envoy_cpu_vcpu"] = [(b - a) / r["elapsed_s"] for a, b in zip(cpu0, cpu1, strict=True)]
        r["envoy_rss_mb"] = [rss_mb(p) for p in envoys]
        results[label] = r
    base = {q: min(results["direct"][q], results["direct_again"][q]) for q in ("p50_ms", "p90_ms", "p99_ms")}
    m = results["mesh"]
    per_krps = 1000 / max(m["achieved_rps"], 1e-9)
    results["added_ms"] = {q: m[q] - base[q] for q in base}
    results["sidecar_vcpu_per_1000rps"] = [c * per_krps for c in m["envoy_cpu_vcpu"]]
    results["sidecar_rss_mb"] = m["envoy_rss_mb"]
    return results


def report(r: dict[str, Any]) -> str:
    d, dd, m = r["direct"], r["direct_again"], r["mesh"]
    lines = [f"rate {r['rate']} rps for {r['duration_s']} s per path "
             f"(achieved: direct {d['achieved_rps']:.0f}, mesh {m['achieved_rps']:.0f}; errors "
             f"{d['errors'] + m['errors']}, dropped {d['dropped'] + m['dropped']})", "",
             "| path | p50 ms | p90 ms | p99 ms |", "|---|---|---|---|"]
    for label, x in (("client -> server", d), ("client -> sidecar -> sidecar -> server", m),
                     ("client -> server (again)", dd)):
        lines.append(f"| {label} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | {x['p99_ms']:.2f} |")
    a = r["added_ms"]
    lines.append(f"| **added by 2 sidecars** | {a['p50_ms']:.2f} | {a['p90_ms']:.2f} | {a['p99_ms']:.2f} |")
    cpu = ", ".join(f"{c:.3f}" for c in r["sidecar_vcpu_per_1000rps"])
    rss = ", ".join(f"{x:.0f}" for x in r["sidecar_rss_mb"])
    lines += ["", f"sidecar CPU per 1,000 rps (client, server sidecar): {cpu} vCPU; RSS: {rss} MB"]
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
    args = p.parse_args()
    if args.mode == "serve":
        asyncio.run(serve(args.listen))
        return 0
    with tempfile.TemporaryDirectory(prefix="meshplane-bench-") as tmp:
        home = Path(args.home or Path(tmp) / "home")
        mf = Path(tmp) / "bench.yaml"
        mf.write_text(yaml.safe_dump(manifest(str(Path(__file__).resolve()), args.mtls)))
        meshplane("up", "-f", str(mf), "--home", str(home))
        try:
            time.sleep(1.0)  # let both proxies settle after the last push
            results = asyncio.run(measure(args, home))
        finally:
            meshplane("down", "--home", str(home))
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
