"""Multi-cluster endpoint churn: S services present in every one of C simulated Kubernetes clusters (E endpoints in
all), endpoints changing at R per second in random clusters, pushed by meshplane to N simulated ADS proxies.

Why this shape: the member-cluster path (fake Kubernetes API -> watch -> KubeClusterSource -> aggregate registry ->
debounce -> EDS push) must keep an endpoint change's latency flat as clusters are added. Each number is reported
as a ratio against a baseline measured in the same run: the same services, endpoints and change rate served from
ONE member cluster, so the ratio is the cost of spreading the mesh over C clusters.

Latency is measured from the moment the driver changes an EndpointSlice at a fake API server to the moment each
simulated proxy receives a ClusterLoadAssignment containing the new address (same process, same clock). Server CPU
is the control-plane child's user+system time during the churn.

Processes: this script is the driver; it runs the fake Kubernetes API servers (an aiohttp server per cluster on
127.0.0.1, tests/integration/test_multicluster_support.py: no real Kubernetes can run here) and the simulated
proxies (bench/xds_scale.py's ACK-like-Envoy protocol). The control plane (MemoryStore + XdsServer +
MemberClusterController, wired as serverproc will) runs in a child process controlled over stdin/stdout lines.

    python bench/multicluster_churn.py                      # quick: S=200 E=4000 N=10, 10 s
    python bench/multicluster_churn.py --services 1000 --endpoints 20000 --rate 50 --duration 60   # the target
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import grpc  # noqa: E402
from envoy.service.discovery.v3 import discovery_pb2  # noqa: E402
from xds_scale import (  # noqa: E402
    CDS,
    EDS,
    LDS,
    METHOD,
    RDS,
    _cla_info,
    _cluster_info,
    _listener_info,
    _route_info,
    commands,
)

NS = "bench"

# Decoded resources by their bytes: every simulated proxy receives the same serialized resources, so each is
# parsed once per run (the proxies' parsing must not be what the benchmark measures).
_names: dict[bytes, tuple[str, Any]] = {}


def _decoded(decode: Callable[[bytes], tuple[str, Any]], value: bytes) -> tuple[str, Any]:
    hit = _names.get(value)
    if hit is None:
        hit = _names[value] = decode(value)
    return hit


def _cluster(value: bytes) -> tuple[str, Any]:
    """(name, EDS service name or "")."""
    return _decoded(_cluster_info, value)


def _listener(value: bytes) -> tuple[str, Any]:
    """(name, the route configuration names its HTTP connection managers reference)."""
    return _decoded(_listener_info, value)


def _cla(value: bytes) -> tuple[str, Any]:
    """(cluster name, the endpoint addresses)."""
    return _decoded(_cla_info, value)


def _route_names(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    return [_decoded(_route_info, a.value)[0] for a in resp.resources]


def host_of(i: int) -> str:
    return f"svc-{i}.{NS}.svc.cluster.local"


def node_id(k: int) -> str:
    return f"sidecar~127.0.{k // 250}.{k % 250 + 1}~client-{k}.{NS}~{NS}.svc.cluster.local"


_GC: dict[str, float] = {"pauses": 0, "max_ms": 0.0, "total_ms": 0.0, "start": 0.0}
_LOOP_LAG: list[float] = [0.0]  # the longest event-loop stall seen (ms)


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    """Records the server's garbage-collector pauses (a stalled loop delays every push)."""
    if phase == "start":
        _GC["start"] = time.perf_counter()
        return
    ms = (time.perf_counter() - _GC["start"]) * 1000
    _GC["pauses"] += 1
    _GC["total_ms"] += ms
    _GC["max_ms"] = max(_GC["max_ms"], ms)


def _tune_gc() -> None:
    """What ``meshplane server`` does once its store is loaded (cli/serverproc._tune_gc)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _lag_probe() -> None:
    """The longest delay of a 10 ms timer: how long the server's event loop was blocked at most."""
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        _LOOP_LAG[0] = max(_LOOP_LAG[0], (time.perf_counter() - t - 0.01) * 1000)


def _usage() -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024, "gc_pauses": _GC["pauses"],
            "gc_max_ms": round(_GC["max_ms"], 1), "gc_total_ms": round(_GC["total_ms"], 1),
            "loop_lag_max_ms": round(_LOOP_LAG[0], 1)}


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- the control plane (child process) ---------------------------------------------------------------------------

async def _serve(args: argparse.Namespace) -> None:
    import logging

    from meshplane.kube import KubeSourceFactory, SourceSettings
    from meshplane.multicluster import MEMBER_CLUSTERS, MemberClusterController
    from meshplane.store import MemoryStore
    from meshplane.xds import XdsServer, XdsSettings

    logging.basicConfig(level=logging.WARNING)
    loop = asyncio.get_running_loop()
    clusters: dict[str, str] = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    store = MemoryStore()
    await store.start()
    xds = XdsServer(store, XdsSettings(debounce_quiet=args.quiet, debounce_max=args.max_delay))
    port = await xds.start("127.0.0.1:0")
    _tune_gc()  # as `meshplane server` does once its store is loaded (member clusters sync after it)
    ctl = MemberClusterController(store, xds, source_factory=KubeSourceFactory(SourceSettings(request_timeout=30.0)))
    await ctl.start()
    for name, cfg in clusters.items():
        await store.create(MEMBER_CLUSTERS, {"apiVersion": "meshplane.io/v1", "kind": "MemberCluster",
                                             "metadata": {"name": name},
                                             "spec": {"kubeconfig": cfg, "network": f"net-{name}"}}, actor="bench")
    while not all(ctl.source(n) is not None and ctl.source(n).status.synced for n in clusters):
        await asyncio.sleep(0.05)
    await xds.wait_idle()
    import gc

    gc.callbacks.append(_gc_timer)
    lag = asyncio.create_task(_lag_probe())
    _reply({"port": port, **_usage()})
    profiler = None
    if os.environ.get("MC_CHURN_PROFILE"):  # cProfile the server during the churn, dumped to that file
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    async for cmd in commands():
        if cmd[0] == "stats":
            _LOOP_LAG[0] = 0.0 if cmd[1:] == ["reset"] else _LOOP_LAG[0]
            _reply({**_usage(), "eds_pushes": xds.eds_pushes, "full_pushes": xds.full_pushes})
    lag.cancel()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ["MC_CHURN_PROFILE"])
    await ctl.stop()
    await xds.stop(0.5)
    await store.close()


# --- simulated proxies (driver) ----------------------------------------------------------------------------------

class ChurnProxy:
    """ACKs like Envoy (SotW): wildcard CDS/LDS, then EDS/RDS for what they name; records when each watched
    address first arrives."""

    def __init__(self, k: int, pending: dict[str, float], latencies: list[float]) -> None:
        self.k = k
        self.pending = pending
        self.latencies = latencies
        self.eds_wanted: set[str] = set()
        self.rds_wanted: set[str] = set()
        self.eds: dict[str, frozenset[str]] = {}
        self.seen: set[str] = set()

    def endpoints(self) -> int:
        return sum(len(a) for a in self.eds.values())

    async def run(self, channel: grpc.aio.Channel) -> None:
        call = channel.stream_stream(METHOD, request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()
        node = discovery_pb2.DiscoveryRequest().node
        node.id = node_id(self.k)
        node.cluster = f"client-{self.k}.{NS}"
        await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CDS))
        await call.write(discovery_pb2.DiscoveryRequest(type_url=LDS))
        async for resp in call:
            now = time.perf_counter()
            t = resp.type_url
            ack = discovery_pb2.DiscoveryRequest(type_url=t, version_info=resp.version_info,
                                                 response_nonce=resp.nonce)
            extra = None
            if t == CDS:
                wanted = {_cluster(a.value)[1] for a in resp.resources} - {""}
                if wanted != self.eds_wanted:
                    self.eds_wanted = wanted
                    extra = discovery_pb2.DiscoveryRequest(type_url=EDS, resource_names=sorted(wanted))
            elif t == LDS:
                wanted = set().union(*(_listener(a.value)[1] for a in resp.resources))
                if wanted != self.rds_wanted:
                    self.rds_wanted = wanted
                    extra = discovery_pb2.DiscoveryRequest(type_url=RDS, resource_names=sorted(wanted))
            elif t == EDS:
                ack.resource_names.extend(sorted(self.eds_wanted))
                for a in resp.resources:
                    name, addrs = _cla(a.value)
                    self.eds[name] = addrs
                    for addr in addrs:
                        t0 = self.pending.get(addr)
                        if t0 is not None and addr not in self.seen:
                            self.seen.add(addr)
                            self.latencies.append(now - t0)
            elif t == RDS:
                ack.resource_names.extend(sorted(self.rds_wanted))
                _route_names(resp)
            await call.write(ack)
            if extra is not None:
                await call.write(extra)


# --- driver ------------------------------------------------------------------------------------------------------

def _populate(api: Any, c: int, services: int, per_service: int, counter: list[int]) -> None:
    from tests.integration.test_multicluster_support import (
        endpoint_slice,
        namespace,
        node,
        pod,
        service,
        slice_endpoint,
    )

    api.upsert("namespaces", namespace(NS))
    api.upsert("nodes", node(f"node-{c}", f"region-{c % 3}", f"zone-{c}"))
    for i in range(services):
        eps = []
        for j in range(per_service):
            ip = _next_ip(c, counter)
            api.upsert("pods", pod(NS, f"svc-{i}-{j}", f"node-{c}", {"app": f"svc-{i}"}, sa=f"svc-{i}", ip=ip))
            eps.append(slice_endpoint(ip, f"svc-{i}-{j}", NS))
        api.upsert("services", service(NS, f"svc-{i}", [("http", 80)], cluster_ip=f"10.96.{i // 250}.{i % 250}"))
        api.upsert("endpointslices", endpoint_slice(NS, f"svc-{i}-x", f"svc-{i}", eps, [("http", 8080)]))


def _next_ip(c: int, counter: list[int]) -> str:
    counter[c] += 1
    n = counter[c]
    return f"10.{100 + c}.{(n >> 8) & 255}.{n & 255}" if n < 65536 else f"11.{100 + c}.{(n >> 8) & 255}.{n & 255}"


async def measure(label: str, n_clusters: int, args: argparse.Namespace) -> dict[str, Any]:
    from tests.integration.test_multicluster_support import FakeKubeApi, endpoint_slice, slice_endpoint

    _names.clear()
    per_service = max(1, args.endpoints // (args.services * n_clusters))
    apis = [await FakeKubeApi(token=f"bench-{c}").start() for c in range(n_clusters)]
    counter = [0] * n_clusters
    for c, api in enumerate(apis):
        _populate(api, c, args.services, per_service, counter)
    cmd = [sys.executable, os.path.abspath(__file__), "--role", "server", "--quiet", str(args.quiet),
           "--max-delay", str(args.max_delay)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    loop = asyncio.get_running_loop()

    async def ask(line: str | None) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        if line is not None:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        out = await loop.run_in_executor(None, proc.stdout.readline)
        if not out:
            raise RuntimeError(f"server exited with {proc.wait()}")
        result: dict[str, Any] = json.loads(out)
        return result

    pending: dict[str, float] = {}
    latencies: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    channels: list[grpc.aio.Channel] = []
    try:
        t_start = time.perf_counter()
        hello = await asyncio.wait_for(ask(json.dumps({f"c{c}": a.kubeconfig() for c, a in enumerate(apis)})),
                                       args.timeout)
        sync_s = time.perf_counter() - t_start
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{hello['port']}", options=[
            ("grpc.max_receive_message_length", 1 << 28), ("grpc.use_local_subchannel_pool", 1),
            ("grpc.channel_id", c)]) for c in range(max(1, args.proxies // 100))]
        proxies = [ChurnProxy(k, pending, latencies) for k in range(args.proxies)]
        tasks = [asyncio.create_task(p.run(channels[k % len(channels)])) for k, p in enumerate(proxies)]
        total = per_service * args.services * n_clusters
        deadline = loop.time() + args.timeout
        while not all(p.endpoints() >= total for p in proxies):
            if loop.time() > deadline:
                raise TimeoutError(f"proxies did not converge: {[p.endpoints() for p in proxies][:5]} of {total}")
            await asyncio.sleep(0.05)
        before = await ask("stats reset")
        rng = random.Random(7)
        slices: dict[tuple[int, int], list[str]] = {}
        for c, api in enumerate(apis):
            for i in range(args.services):
                es = api.objects["endpointslices"][(NS, f"svc-{i}-x")]
                slices[(c, i)] = [e["addresses"][0] for e in es["endpoints"]]
        changes = int(args.rate * args.duration)
        t0 = loop.time()
        for n in range(changes):
            await asyncio.sleep(max(0.0, t0 + n / args.rate - loop.time()))
            c, i = rng.randrange(n_clusters), rng.randrange(args.services)
            ips = slices[(c, i)]
            j = rng.randrange(len(ips))
            ips[j] = _next_ip(c, counter)
            eps = [slice_endpoint(ip, f"svc-{i}-{k}", NS) for k, ip in enumerate(ips)]
            pending[ips[j]] = time.perf_counter()
            apis[c].upsert("endpointslices", endpoint_slice(NS, f"svc-{i}-x", f"svc-{i}", eps, [("http", 8080)]))
        expected = changes * len(proxies)
        drain = loop.time() + args.timeout
        while len(latencies) < expected and loop.time() < drain:
            await asyncio.sleep(0.05)
        after = await ask("stats")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()
        try:
            if proc.stdin:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
            proc.wait(15)
        except Exception:
            proc.kill()
            proc.wait()
        for api in apis:
            await api.stop()
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    cpu = after["cpu_s"] - before["cpu_s"]
    return {
        "label": label, "clusters": n_clusters, "services": args.services, "endpoints": total,
        "changes": changes, "delivered": len(latencies), "expected": expected, "initial_sync_s": round(sync_s, 2),
        "p50_ms": round(pct(0.50), 1), "p99_ms": round(pct(0.99), 1), "max_ms": round(lat[-1] * 1000, 1) if lat
        else None, "server_cpu_s": round(cpu, 2), "server_cpu_pct": round(100 * cpu / args.duration, 1),
        "eds_pushes": after["eds_pushes"] - before["eds_pushes"],
        "full_pushes": after["full_pushes"] - before["full_pushes"], "peak_rss_mb": round(after["peak_rss_mb"]),
        "gc_pauses": after["gc_pauses"] - before["gc_pauses"], "gc_max_ms": after["gc_max_ms"],
        "loop_lag_max_ms": after["loop_lag_max_ms"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", default="driver", choices=["driver", "server"])
    p.add_argument("--clusters", type=int, default=5)
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--endpoints", type=int, default=4000, help="endpoints in all, spread over services and clusters")
    p.add_argument("--proxies", type=int, default=10)
    p.add_argument("--rate", type=float, default=50.0, help="endpoint changes per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of churn per scenario")
    p.add_argument("--quiet", type=float, default=0.02, help="debounce quiet period (s)")
    p.add_argument("--max-delay", type=float, default=0.2, help="debounce maximum delay (s)")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-baseline", action="store_true", help="only the multi-cluster run (while iterating)")
    args = p.parse_args()
    if args.role == "server":
        asyncio.run(_serve(args))
        return
    results = []
    runs = [("baseline: 1 cluster", 1)] if not args.no_baseline else []
    for label, n in (*runs, (f"{args.clusters} clusters", args.clusters)):
        results.append(asyncio.run(measure(label, n, args)))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.no_baseline:
        return
    base, multi = results
    ratio = {"p99_ratio": round(multi["p99_ms"] / base["p99_ms"], 2) if base["p99_ms"] else None,
             "cpu_ratio": round(multi["server_cpu_s"] / base["server_cpu_s"], 2) if base["server_cpu_s"] else None,
             "p99_target_ms": 500, "p99_met": multi["p99_ms"] < 500}
    if args.json:
        print(json.dumps({"results": results, **ratio}, indent=2))
        return
    cols = ["label", "endpoints", "changes", "delivered", "p50_ms", "p99_ms", "max_ms", "server_cpu_pct",
            "eds_pushes", "full_pushes", "initial_sync_s", "peak_rss_mb", "gc_pauses", "gc_max_ms", "loop_lag_max_ms"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"p99 ratio {ratio['p99_ratio']}x, server CPU ratio {ratio['cpu_ratio']}x against the 1-cluster baseline;"
          f" p99 target 500 ms {'met' if ratio['p99_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
