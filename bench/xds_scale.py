"""xDS scale benchmark: N simulated proxies (real gRPC ADS streams that ACK like Envoy) against a mesh of
S services x E endpoints, served by meshplane's XdsServer with the real translation.

Why this shape: what matters at scale is (1) how long until every proxy holds the full config, (2) how long one
endpoint change takes to reach every proxy, and (3) what the server pays for it in CPU and memory. Absolute times
depend on the machine, so each number is also given as a ratio against a baseline measured in the same run: a
bare grpc.aio ADS server that sends pre-serialized bytes (the same responses meshplane produced for one proxy)
to the same N streams, i.e. the raw cost of moving the bytes.

Processes: this script is the driver and runs the simulated proxies; the server (meshplane or baseline) runs in
a child process (spawned, so no gRPC state crosses a fork) controlled over stdin/stdout lines.

    python bench/xds_scale.py                                  # small: S=50 E=3 N=20, seconds
    python bench/xds_scale.py --services 1000 --endpoints 10 --proxies 1000 --changes 20   # the target size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
NS = "bench"
METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def host_of(i: int) -> str:
    return f"svc-{i}.{NS}.svc.cluster.local"


def endpoint_ip(i: int, j: int, generation: int = 0) -> str:
    n = i * 64 + j + generation * 7919
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def node_id(k: int) -> str:
    ip = f"127.{10 + k // 62500}.{(k // 250) % 250}.{k % 250 + 1}"
    return f"sidecar~{ip}~client-{k}.{NS}~{NS}.svc.cluster.local"


# --- server side (child process) -----------------------------------------------------------------------------


def _objects(services: int, endpoints: int) -> list[tuple[Any, dict[str, Any]]]:
    from meshplane.store import GroupResource

    se_gr = GroupResource("networking.istio.io", "serviceentries")
    we_gr = GroupResource("networking.istio.io", "workloadentries")
    out: list[tuple[Any, dict[str, Any]]] = []
    for i in range(services):
        out.append((se_gr, {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                            "metadata": {"name": f"svc-{i}", "namespace": NS},
                            "spec": {"hosts": [host_of(i)], "location": "MESH_INTERNAL", "resolution": "STATIC",
                                     "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                                     "workloadSelector": {"labels": {"app": f"svc-{i}"}}}}))
        for j in range(endpoints):
            out.append((we_gr, {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                                "metadata": {"name": f"svc-{i}-{j}", "namespace": NS},
                                "spec": {"address": endpoint_ip(i, j), "labels": {"app": f"svc-{i}"}}}))
    return out


def _tune_gc() -> None:
    """What ``meshplane server`` does once its store is loaded (cli/serverproc._tune_gc): freeze the loaded heap
    and collect the young generation less often. Applied to both servers so the run measures the server as it
    is deployed."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM). Not ``ru_maxrss``: Linux carries the parent's RSS at fork into
    the child's ``ru_maxrss`` across exec, so a server spawned by a driver that already holds a large heap (after
    the first measurement) would report the driver's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _usage() -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": _peak_rss_mb()}


async def _serve_meshplane(args: argparse.Namespace) -> None:
    from meshplane.store import MemoryStore
    from meshplane.xds import XdsServer, XdsSettings

    profiler = None
    if os.environ.get("XDS_SCALE_PROFILE"):  # cProfile the server from the first change to the end
        import cProfile

        profiler = cProfile.Profile()
        if os.environ.get("XDS_SCALE_PROFILE_FROM") == "start":
            profiler.enable()
    store = MemoryStore(watch_queue_size=1_000_000)
    await store.start()
    for gr, obj in _objects(args.services, args.endpoints):
        await store.create(gr, obj, actor="bench")
    server = XdsServer(store, XdsSettings(debounce_quiet=args.quiet, debounce_max=args.max_delay,
                                          max_concurrent_pushes=args.concurrency))
    _tune_gc()
    port = await server.start("127.0.0.1:0")
    if os.environ.get("XDS_SCALE_TRACE"):
        async def trace() -> None:
            t0 = time.perf_counter()
            while True:
                with open("/proc/self/statm") as f:
                    rss = int(f.read().split()[1]) * 4096 / 1e6
                b = server._budget
                print(f"{time.perf_counter() - t0:6.2f}s rss={rss:7.1f}MB inflight={b.in_flight / 1e6:6.1f}MB "
                      f"waited={b.waited}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5)
        asyncio.get_running_loop().create_task(trace())
    _reply({"port": port, **_usage()})
    generation = 1
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "stats":
            _reply(_usage())
        elif cmd[0] == "change":
            if profiler is not None and generation == 1:
                profiler.enable()
            i = int(cmd[1])
            from meshplane.store import GroupResource

            gr = GroupResource("networking.istio.io", "workloadentries")
            obj = store.get(gr, NS, f"svc-{i}-0")
            assert obj is not None
            new = {**obj, "spec": {**obj["spec"], "address": endpoint_ip(i, 0, generation)}}
            generation += 1
            await store.update(gr, new, actor="bench")
            _reply({"address": new["spec"]["address"]})
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(os.environ["XDS_SCALE_PROFILE"])
    await server.stop(0.5)
    await store.close()


async def _serve_baseline(args: argparse.Namespace) -> None:
    """Pre-serialize what meshplane's translation produces for one proxy, then only move bytes."""
    from meshplane.model.proxy import Locality, proxy_from_node
    from meshplane.registry import registry_from_config
    from meshplane.translate import MeshSettings, build_push_context, generate
    from meshplane.xds.controller import ConfigController

    class _ListStore:  # just enough of a store for ConfigController.load()
        def __init__(self, objs: list[tuple[Any, dict[str, Any]]]) -> None:
            self.objs = objs
            self.current_rv = 1

        def list(self, gr: Any, namespace: str | None = None) -> tuple[list[dict[str, Any]], int]:
            return [o for g, o in self.objs if g == gr], 1

    objs = _objects(args.services, args.endpoints)
    ctl = ConfigController(_ListStore(objs), lambda _r: None)  # type: ignore[arg-type]
    ctl.load()
    config = ctl.snapshot()
    ctx = build_push_context(config, registry_from_config(config), MeshSettings())
    proxy = proxy_from_node(node_id(0), {}, Locality())
    responses: dict[str, bytes] = {}
    for t in (CDS, EDS, LDS, RDS):
        res = generate(t, proxy, ctx)
        responses[t] = discovery_pb2.DiscoveryResponse(version_info="1", type_url=t, nonce="1",
                                                       resources=[r.resource for r in res]).SerializeToString()
    # One pre-built single-CLA response per change (address generation g for service i).
    change_bytes: dict[int, tuple[bytes, str]] = {}
    for c in range(args.changes):
        i = c % args.services
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=f"outbound|80||{host_of(i)}")
        group = cla.endpoints.add()
        for j in range(args.endpoints):
            lb = group.lb_endpoints.add()
            lb.endpoint.address.socket_address.address = endpoint_ip(i, j, c + 1 if j == 0 else 0)
            lb.endpoint.address.socket_address.port_value = 80
        from google.protobuf import any_pb2

        a = any_pb2.Any(type_url=EDS, value=cla.SerializeToString())
        change_bytes[c] = (discovery_pb2.DiscoveryResponse(version_info=f"c{c}", type_url=EDS, nonce=f"c{c}",
                                                           resources=[a]).SerializeToString(),
                           endpoint_ip(i, 0, c + 1))
    streams: list[asyncio.Queue[bytes]] = []

    async def handler(requests: Any, context: Any) -> None:
        q: asyncio.Queue[bytes] = asyncio.Queue()
        streams.append(q)
        seen: set[str] = set()

        async def read() -> None:
            async for req in requests:
                if req.type_url not in seen:
                    seen.add(req.type_url)
                    q.put_nowait(responses[req.type_url])

        reader = asyncio.create_task(read())
        try:
            while True:
                await context.write(await q.get())
        finally:
            reader.cancel()

    _tune_gc()
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 1 << 26),
                                      ("grpc.max_concurrent_streams", 100_000)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        {"StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            handler, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=lambda b: b)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _reply({"port": port, **_usage()})
    changes = 0
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "stats":
            _reply(_usage())
        elif cmd[0] == "change":
            data, address = change_bytes[changes]
            changes += 1
            for q in streams:
                q.put_nowait(data)
            _reply({"address": address})
    await server.stop(0.5)


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --- driver: simulated proxies ---------------------------------------------------------------------------------

_names: dict[bytes, tuple[str, Any]] = {}  # Any.value -> (name, extra); shared: all proxies get the same bytes


def _cluster(value: bytes) -> tuple[str, Any]:
    hit = _names.get(value)
    if hit is None:
        c = cluster_pb2.Cluster.FromString(value)
        eds = c.eds_cluster_config.service_name or c.name if c.type == cluster_pb2.Cluster.EDS else ""
        hit = _names[value] = (c.name, eds)
    return hit


def _listener(value: bytes) -> tuple[str, Any]:
    hit = _names.get(value)
    if hit is None:
        lst = listener_pb2.Listener.FromString(value)
        routes = set()
        for chain in lst.filter_chains:
            for f in chain.filters:
                if f.typed_config.type_url.endswith("HttpConnectionManager"):
                    h = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                    if h.HasField("rds"):
                        routes.add(h.rds.route_config_name)
        hit = _names[value] = (lst.name, frozenset(routes))
    return hit


def _cla(value: bytes) -> tuple[str, Any]:
    hit = _names.get(value)
    if hit is None:
        cla = endpoint_pb2.ClusterLoadAssignment.FromString(value)
        addrs = frozenset(lb.endpoint.address.socket_address.address for g in cla.endpoints
                          for lb in g.lb_endpoints)
        hit = _names[value] = (cla.cluster_name, addrs)
    return hit


@dataclass
class SimProxy:
    """ACKs like Envoy (SotW): wildcard CDS/LDS, then EDS/RDS for the names they reference."""

    k: int
    eds_wanted: set[str] = field(default_factory=set)
    rds_wanted: set[str] = field(default_factory=set)
    eds: dict[str, frozenset[str]] = field(default_factory=dict)
    rds: set[str] = field(default_factory=set)
    got: set[str] = field(default_factory=set)
    complete_at: float = 0.0
    watch: tuple[str, str] | None = None  # (cluster, address) awaited
    watch_hit: asyncio.Event = field(default_factory=asyncio.Event)
    watch_at: float = 0.0

    def complete(self) -> bool:
        return ({CDS, LDS} <= self.got and self.eds_wanted <= self.eds.keys() and self.rds_wanted <= self.rds)

    async def run(self, channel: grpc.aio.Channel, done: asyncio.Event) -> None:
        call = channel.stream_stream(METHOD, request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=discovery_pb2.DiscoveryResponse.FromString)()
        node = discovery_pb2.DiscoveryRequest().node
        node.id = node_id(self.k)
        node.cluster = f"client-{self.k}.{NS}"
        await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CDS))
        await call.write(discovery_pb2.DiscoveryRequest(type_url=LDS))
        async for resp in call:
            t = resp.type_url
            self.got.add(t)
            ack = discovery_pb2.DiscoveryRequest(type_url=t, version_info=resp.version_info,
                                                 response_nonce=resp.nonce)
            extra: discovery_pb2.DiscoveryRequest | None = None
            if t == CDS:
                wanted = {_cluster(a.value)[1] for a in resp.resources} - {""}
                if wanted != self.eds_wanted:
                    first = not self.eds_wanted
                    self.eds_wanted = wanted
                    if first:
                        extra = discovery_pb2.DiscoveryRequest(type_url=EDS, resource_names=sorted(wanted))
            elif t == LDS:
                wanted = set().union(*(_listener(a.value)[1] for a in resp.resources))
                if wanted != self.rds_wanted:
                    first = not self.rds_wanted
                    self.rds_wanted = wanted
                    if first:
                        extra = discovery_pb2.DiscoveryRequest(type_url=RDS, resource_names=sorted(wanted))
            elif t == EDS:
                ack.resource_names.extend(sorted(self.eds_wanted))
                for a in resp.resources:
                    name, addrs = _cla(a.value)
                    self.eds[name] = addrs
                    if self.watch and name == self.watch[0] and self.watch[1] in addrs:
                        self.watch_at = time.perf_counter()
                        self.watch = None
                        self.watch_hit.set()
            elif t == RDS:
                ack.resource_names.extend(sorted(self.rds_wanted))
                self.rds.update(r.name for r in _route_names(resp))
            await call.write(ack)
            if extra is not None:
                await call.write(extra)
            if not self.complete_at and self.complete():
                self.complete_at = time.perf_counter()
                done.set()


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def _route_names(resp: discovery_pb2.DiscoveryResponse) -> list[_Named]:
    from envoy.config.route.v3 import route_pb2

    out = []
    for a in resp.resources:
        hit = _names.get(a.value)
        if hit is None:
            hit = _names[a.value] = (route_pb2.RouteConfiguration.FromString(a.value).name, None)
        out.append(_Named(hit[0]))
    return out


class ServerProc:
    def __init__(self, role: str, args: argparse.Namespace) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--role", role, "--services", str(args.services),
               "--endpoints", str(args.endpoints), "--changes", str(args.changes), "--quiet", str(args.quiet),
               "--max-delay", str(args.max_delay), "--concurrency", str(args.concurrency)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    async def ask(self, line: str | None = None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        out = await asyncio.get_running_loop().run_in_executor(None, self.proc.stdout.readline)
        if not out:
            raise RuntimeError(f"server exited with {self.proc.wait()}")
        result: dict[str, Any] = json.loads(out)
        return result

    def stop(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


async def measure(role: str, args: argparse.Namespace) -> dict[str, Any]:
    _names.clear()
    server = ServerProc(role, args)
    try:
        hello = await server.ask()
        port = hello["port"]
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_receive_message_length", 1 << 27), ("grpc.use_local_subchannel_pool", 1),
            ("grpc.channel_id", c)]) for c in range(max(1, args.proxies // 100))]
        proxies = [SimProxy(k) for k in range(args.proxies)]
        events = [asyncio.Event() for _ in proxies]
        before = await server.ask("stats")
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(p.run(channels[k % len(channels)], events[k])) for k, p in enumerate(proxies)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), args.timeout)
        convergence = max(p.complete_at for p in proxies) - t0
        after_conv = await server.ask("stats")
        latencies: list[float] = []
        for c in range(args.changes):
            i = c % args.services
            cluster = f"outbound|80||{host_of(i)}"
            expected = endpoint_ip(i, 0, c + 1)
            for p in proxies:
                p.watch_hit.clear()
                p.watch = (cluster, expected)
            t1 = time.perf_counter()
            reply = await server.ask(f"change {i}")
            assert reply["address"] == expected, (reply, expected)
            await asyncio.wait_for(asyncio.gather(*(p.watch_hit.wait() for p in proxies)), args.timeout)
            latencies.extend(p.watch_at - t1 for p in proxies)
        after = await server.ask("stats")
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()
        latencies.sort()
        return {
            "convergence_s": convergence,
            "change_p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
            "change_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            if latencies else 0.0,
            "server_cpu_converge_s": after_conv["cpu_s"] - before["cpu_s"],
            "server_cpu_changes_s": after["cpu_s"] - after_conv["cpu_s"],
            "server_cpu_setup_s": before["cpu_s"],
            "server_peak_rss_mb": after["peak_rss_mb"],
        }
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", "-S", type=int, default=50)
    ap.add_argument("--endpoints", "-E", type=int, default=3)
    ap.add_argument("--proxies", "-N", type=int, default=20)
    ap.add_argument("--changes", type=int, default=5, help="endpoint changes measured one after another")
    ap.add_argument("--quiet", type=float, default=0.01, help="debounce quiet period (s)")
    ap.add_argument("--max-delay", type=float, default=0.1, help="debounce maximum delay (s)")
    ap.add_argument("--concurrency", type=int, default=100, help="max concurrent pushes")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--role", choices=["driver", "meshplane", "baseline"], default="driver", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--no-baseline", action="store_true", help="measure meshplane only (while iterating)")
    args = ap.parse_args()
    if args.role == "meshplane":
        asyncio.run(_serve_meshplane(args))
        return
    if args.role == "baseline":
        asyncio.run(_serve_baseline(args))
        return
    base = None if args.no_baseline else asyncio.run(measure("baseline", args))
    mesh = asyncio.run(measure("meshplane", args))
    base = base or mesh
    result = {"params": {"S": args.services, "E": args.endpoints, "N": args.proxies, "changes": args.changes,
                         "quiet_s": args.quiet, "max_delay_s": args.max_delay},
              "meshplane": mesh, "baseline": base,
              "ratio": {k: (mesh[k] / base[k] if base[k] else None) for k in mesh}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"S={args.services} E={args.endpoints} N={args.proxies} changes={args.changes} "
          f"(debounce {args.quiet}s/{args.max_delay}s)")
    print(f"{'metric':28} {'meshplane':>12} {'baseline':>12} {'ratio':>8}")
    for k in mesh:
        r = result["ratio"][k]
        print(f"{k:28} {mesh[k]:12.3f} {base[k]:12.3f} {r if r is None else f'{r:8.2f}'}")


if __name__ == "__main__":
    main()
