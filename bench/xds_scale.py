"""xDS scale benchmark: N simulated proxies (real gRPC ADS streams that ACK like Envoy) against a mesh of
S services x E endpoints, served by meshplane's XdsServer with the real translation.

Why this shape: what matters at scale is (1) how long until every proxy holds the full config, (2) how long one
endpoint change takes to reach every proxy, and (3) what the server pays for it in CPU and memory. Absolute times
depend on the machine, so each number is also given as a ratio against a baseline measured in the same run: a
bare grpc.aio ADS server that sends pre-serialized bytes (the same responses meshplane produced for one proxy)
to the same N streams, i.e. the raw cost of moving the bytes.

Processes: this script is the coordinator; the server (meshplane or baseline) and the driver processes holding
the simulated proxies run as child processes (spawned, so no gRPC state crosses a fork) controlled over
stdin/stdout lines. The drivers are the compiled bench/xds_driver/driver.cc (``--driver cpp``, built on first
use with g++ against the system's gRPC C++) or this script (``--driver python``): same behaviour, same protocol;
the compiled one keeps the load generator from taking most of the CPU. ``--driver auto`` (default) takes cpp
when it builds.

    python bench/xds_scale.py                                  # small: S=50 E=3 N=20, seconds
    python bench/xds_scale.py --services 1000 --endpoints 10 --proxies 1000 --changes 20   # the target size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2

try:  # imported as bench.xds_scale (tests), or run as a script with bench/ first on sys.path
    from bench.compiled import build_cached
except ModuleNotFoundError:
    from compiled import build_cached

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


async def _open_store(args: argparse.Namespace) -> Any:
    """The server's store: a MemoryStore seeded here, or (``--etcd``) a replica's EtcdStore on the shared etcd,
    seeded by the first replica only (``--seed``); the others load what it wrote."""
    from meshplane.store import MemoryStore

    store: Any
    if args.etcd:
        from meshplane.store.etcd import EtcdStore, parse_etcd_url

        store = EtcdStore(parse_etcd_url(args.etcd), watch_queue_size=1_000_000)
    else:
        store = MemoryStore(watch_queue_size=1_000_000)
    await store.start()
    if args.seed or not args.etcd:
        for gr, obj in _objects(args.services, args.endpoints):
            await store.create(gr, obj, actor="bench")
    return store


async def _serve_meshplane(args: argparse.Namespace) -> None:
    from meshplane.xds import XdsServer, XdsSettings

    profiler = None
    if os.environ.get("XDS_SCALE_PROFILE"):  # cProfile the server from the first change to the end
        import cProfile

        profiler = cProfile.Profile()
        if os.environ.get("XDS_SCALE_PROFILE_FROM") == "start":
            profiler.enable()
    store = await _open_store(args)
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
    async for cmd in commands():
        if cmd[0] == "stats":
            _reply(_usage())
        elif cmd[0] == "change":
            if profiler is not None and generation == 1:
                profiler.enable()
            i = int(cmd[1])
            if len(cmd) > 2:  # the coordinator names the generation (replicas share one etcd across runs)
                generation = int(cmd[2])
            from meshplane.store import GroupResource

            gr = GroupResource("networking.istio.io", "workloadentries")
            obj = store.get(gr, NS, f"svc-{i}-0")
            assert obj is not None
            new = {**obj, "spec": {**obj["spec"], "address": endpoint_ip(i, 0, generation)}}
            generation += 1
            await store.update(gr, new, actor="bench")
            _reply({"address": new["spec"]["address"]})
        elif cmd[0] == "settle":  # every proxy has ACKed the latest EDS response (nothing left to process)
            from meshplane.model import xdstypes

            t = time.perf_counter()
            while time.perf_counter() - t < SETTLE_TIMEOUT_S:
                await server.wait_idle()
                if all(ts.nonce_acked == ts.nonce_sent for st in server.proxy_status() for ts in st.types
                       if ts.type_url == xdstypes.ENDPOINT):
                    break
                await asyncio.sleep(0.005)
            _reply({"settled_ms": (time.perf_counter() - t) * 1000})
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
    acked: dict[str, int] = {}  # change nonce -> ACKs read

    async def handler(requests: Any, context: Any) -> None:
        q: asyncio.Queue[bytes] = asyncio.Queue()
        streams.append(q)
        seen: set[str] = set()

        async def read() -> None:
            async for req in requests:
                if req.response_nonce.startswith("c"):
                    acked[req.response_nonce] = acked.get(req.response_nonce, 0) + 1
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
                                      ("grpc.max_concurrent_streams", 100_000),
                                      ("grpc.server.max_pending_requests", 1 << 20)])  # as meshplane.rpc's
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        {"StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            handler, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=lambda b: b)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _reply({"port": port, **_usage()})
    changes = 0
    async for cmd in commands():
        if cmd[0] == "stats":
            _reply(_usage())
        elif cmd[0] == "change":
            data, address = change_bytes[changes]
            changes += 1
            for q in streams:
                q.put_nowait(data)
            _reply({"address": address})
        elif cmd[0] == "settle":  # every stream's ACK of the latest change has been read
            t = time.perf_counter()
            while (changes and acked.get(f"c{changes - 1}", 0) < len(streams)
                   and time.perf_counter() - t < SETTLE_TIMEOUT_S):
                await asyncio.sleep(0.005)
            _reply({"settled_ms": (time.perf_counter() - t) * 1000})
    await server.stop(0.5)


SETTLE_TIMEOUT_S = 30.0


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def commands() -> AsyncIterator[list[str]]:
    """A child process's commands from its coordinator, one per stdin line, split into words, until "quit" or
    end of input (shared by every benchmark's child processes)."""
    loop = asyncio.get_running_loop()
    while True:
        cmd = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not cmd or cmd[0] == "quit":
            return
        yield cmd


# --- simulated proxies (driver processes) ----------------------------------------------------------------------
#
# A driver process holds a share of the proxies on its own event loop. It reads responses as raw bytes: only the
# DiscoveryResponse's own small fields (version, type, nonce) and the positions of its resources are read in
# Python; the resources are parsed with protobuf only when their bytes differ from what this process already
# parsed for the type (every proxy of one scope receives the same bytes, so that is once per process and type,
# and once per change for EDS). An endpoint change is detected only when the pushed ClusterLoadAssignment really
# holds the new address. ACKs are encoded by hand: version, nonce and type, plus the EDS/RDS names the proxy
# references (like Envoy), whose encoding is built once per distinct set of names.


def _varint(data: bytes, i: int) -> tuple[int, int]:
    b = data[i]
    if b < 0x80:
        return b, i + 1
    result, shift = b & 0x7F, 7
    while True:
        i += 1
        b = data[i]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i + 1
        shift += 7


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, value: bytes) -> bytes:
    return _enc_varint(number << 3 | 2) + _enc_varint(len(value)) + value


def scan_response(data: bytes, known: Iterable[bytes] = ()) -> tuple[str, str, str, int, int]:
    """(version_info, type_url, nonce, start, end) of an encoded DiscoveryResponse; ``data[start:end]`` spans
    every ``resources`` field (tags included) and whatever lies between them: parseable on its own.

    ``known``: regions seen before (each a sequence of complete fields). Where the resources start with one of
    them byte for byte, the walk jumps over it instead of stepping through a thousand resources; the result is
    the same as without (the bytes skipped are complete fields)."""
    version = type_url = nonce = ""
    start = end = -1
    i, n = 0, len(data)
    while i < n:
        tag = i
        key, i = _varint(data, i)
        wire = key & 7
        if wire == 2:
            field_no = key >> 3
            if field_no == 2 and start < 0:
                start = tag
                region = next((r for r in known if data.startswith(r, tag)), None)
                if region is not None:
                    i = end = tag + len(region)
                    continue
            length, i = _varint(data, i)
            j = i + length
            if field_no == 2:
                end = j
            elif field_no == 1:
                version = data[i:j].decode()
            elif field_no == 4:
                type_url = data[i:j].decode()
            elif field_no == 5:
                nonce = data[i:j].decode()
            i = j
        elif wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
    if start < 0:
        start = end = 0
    return version, type_url, nonce, start, end


def _resource_values(region: bytes) -> list[bytes]:
    """The Any.value of every resource in a region from :func:`scan_response`."""
    resp = discovery_pb2.DiscoveryResponse.FromString(region)
    return [a.value for a in resp.resources]


def _cluster_info(value: bytes) -> tuple[str, str]:
    c = cluster_pb2.Cluster.FromString(value)
    eds = (c.eds_cluster_config.service_name or c.name) if c.type == cluster_pb2.Cluster.EDS else ""
    return c.name, eds


def _listener_info(value: bytes) -> tuple[str, frozenset[str]]:
    lst = listener_pb2.Listener.FromString(value)
    routes = set()
    for chain in [*lst.filter_chains, lst.default_filter_chain]:  # an unset default chain has no filters
        for f in chain.filters:
            if f.typed_config.type_url.endswith("HttpConnectionManager"):
                h = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                if h.HasField("rds"):
                    routes.add(h.rds.route_config_name)
    return lst.name, frozenset(routes)


def _route_info(value: bytes) -> tuple[str, None]:
    from envoy.config.route.v3 import route_pb2

    return route_pb2.RouteConfiguration.FromString(value).name, None


def _cla_info(value: bytes) -> tuple[str, frozenset[str]]:
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(value)
    return cla.cluster_name, frozenset(lb.endpoint.address.socket_address.address for g in cla.endpoints
                                       for lb in g.lb_endpoints)


_INFO = {CDS: _cluster_info, LDS: _listener_info, RDS: _route_info, EDS: _cla_info}


@dataclass(frozen=True)
class Content:
    """What a proxy needs from one response's resources: name -> extra (CDS: EDS service name or ""; LDS: RDS
    names; EDS: endpoint addresses), and the names referenced (CDS: EDS names; LDS: RDS names)."""

    items: dict[str, Any]
    wanted: frozenset[str]


class ContentCache:
    """Per process: the last region parsed per type (compared byte for byte), and parsed resources by their bytes.
    Exact: equal bytes parse to equal content."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[bytes, Content]] = {}
        self.resources: dict[bytes, tuple[str, Any]] = {}
        self.parsed_regions = 0

    def regions(self) -> list[bytes]:
        return [r for r, _ in self.last.values()]

    def content(self, type_url: str, region: bytes) -> Content:
        hit = self.last.get(type_url)
        if hit is not None and hit[0] == region:
            return hit[1]
        self.parsed_regions += 1
        info = _INFO[type_url]
        items: dict[str, Any] = {}
        for value in _resource_values(region):
            r = self.resources.get(value)
            if r is None:
                r = self.resources[value] = info(value)
            items[r[0]] = r[1]
        if type_url == CDS:
            wanted = frozenset(v for v in items.values() if v)
        elif type_url == LDS:
            wanted = frozenset().union(*items.values())
        else:
            wanted = frozenset()
        content = Content(items, wanted)
        self.last[type_url] = (region, content)
        return content


_NAMES_FIELD: dict[frozenset[str], bytes] = {}  # a set of names -> its encoded ``resource_names`` (sorted)


def _names_field(names: frozenset[str]) -> bytes:
    hit = _NAMES_FIELD.get(names)
    if hit is None:
        hit = _NAMES_FIELD[names] = b"".join(_field(3, n.encode()) for n in sorted(names))
    return hit


def _request(type_url: str, version: str = "", nonce: str = "", names: frozenset[str] = frozenset(),
             node: bytes = b"") -> bytes:
    """An encoded DiscoveryRequest (field order as Envoy writes it: version, node, names, type, nonce)."""
    out = _field(1, version.encode()) if version else b""
    return out + node + _names_field(names) + _field(4, type_url.encode()) + (
        _field(5, nonce.encode()) if nonce else b"")


def _identity(b: bytes) -> bytes:
    return b


@dataclass
class SimProxy:
    """ACKs like Envoy (SotW): wildcard CDS/LDS, then EDS/RDS for the names they reference."""

    k: int
    cache: ContentCache
    eds_wanted: frozenset[str] = frozenset()
    rds_wanted: frozenset[str] = frozenset()
    eds: set[str] = field(default_factory=set)
    rds: set[str] = field(default_factory=set)
    got: set[str] = field(default_factory=set)
    complete_at: float = 0.0
    watch: tuple[str, str] | None = None  # (cluster, address) awaited
    watch_hit: asyncio.Event = field(default_factory=asyncio.Event)
    watch_at: float = 0.0

    def complete(self) -> bool:
        return ({CDS, LDS} <= self.got and self.eds_wanted <= self.eds and self.rds_wanted <= self.rds)

    async def run(self, channel: grpc.aio.Channel, done: asyncio.Event) -> None:
        call = channel.stream_stream(METHOD, request_serializer=_identity, response_deserializer=_identity)()
        node = discovery_pb2.DiscoveryRequest().node
        node.id = node_id(self.k)
        node.cluster = f"client-{self.k}.{NS}"
        await call.write(_request(CDS, node=_field(2, node.SerializeToString())))
        await call.write(_request(LDS))
        cache = self.cache
        async for data in call:
            version, t, nonce, start, end = scan_response(data, cache.regions())
            content = cache.content(t, data[start:end])
            self.got.add(t)
            extra: bytes | None = None
            names: frozenset[str] = frozenset()
            if t == CDS:
                if content.wanted != self.eds_wanted:
                    first = not self.eds_wanted
                    self.eds_wanted = content.wanted
                    if first:
                        extra = _request(EDS, names=content.wanted)
            elif t == LDS:
                if content.wanted != self.rds_wanted:
                    first = not self.rds_wanted
                    self.rds_wanted = content.wanted
                    if first:
                        extra = _request(RDS, names=content.wanted)
            elif t == EDS:
                names = self.eds_wanted
                if not self.complete_at:
                    self.eds.update(content.items)
                watch = self.watch
                if watch is not None:
                    addrs = content.items.get(watch[0])
                    if addrs is not None and watch[1] in addrs:
                        self.watch_at = time.perf_counter()
                        self.watch = None
                        self.watch_hit.set()
            elif t == RDS:
                names = self.rds_wanted
                if not self.complete_at:
                    self.rds.update(content.items)
            await call.write(_request(t, version, nonce, names))
            if extra is not None:
                await call.write(extra)
            if not self.complete_at and self.complete():
                self.complete_at = time.perf_counter()
                done.set()


async def _drive(args: argparse.Namespace) -> None:
    """A driver process: proxies ``first .. first+count-1``, commands on stdin, one JSON line per reply."""
    cache = ContentCache()
    proxies = [SimProxy(k, cache) for k in range(args.first, args.first + args.count)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{args.port}", options=[
        ("grpc.max_receive_message_length", 1 << 27), ("grpc.use_local_subchannel_pool", 1),
        ("grpc.channel_id", args.first + c)]) for c in range(max(1, -(-args.count // 100)))]
    events = [asyncio.Event() for _ in proxies]
    tasks: list[asyncio.Task[None]] = []

    def failed(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            print(f"driver {args.first}: proxy failed: {task.exception()!r}", file=sys.stderr, flush=True)

    _reply({"ready": True})
    async for cmd in commands():
        if cmd[0] == "start":
            for k, p in enumerate(proxies):
                tasks.append(asyncio.create_task(p.run(channels[k % len(channels)], events[k])))
                tasks[-1].add_done_callback(failed)
            await asyncio.gather(*(e.wait() for e in events))
            _reply({"complete": [p.complete_at for p in proxies]})
        elif cmd[0] == "watch":
            for p in proxies:
                p.watch_hit.clear()
                p.watch = (cmd[1], cmd[2])
            _reply({"armed": True})
            await asyncio.gather(*(p.watch_hit.wait() for p in proxies))
            _reply({"hits": [p.watch_at for p in proxies]})
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    _reply({**_usage(), "parsed_regions": cache.parsed_regions})


# --- the compiled driver ---------------------------------------------------------------------------------------
#
# bench/xds_driver/driver.cc: the same proxies and line protocol as ``_drive`` in C++ (gRPC C++'s GenericStub,
# hand-encoded requests, a hand-written wire-format walker, resources parsed once per process by their bytes).
# The Python driver's own CPU (grpc.aio) bounded both servers on a 2-core machine; this one costs a fraction.

DRIVER_SOURCE = Path(__file__).resolve().parent / "xds_driver" / "driver.cc"


def build_driver() -> tuple[str | None, str]:
    """(path of the compiled driver, "") or (None, why not): built against the system's gRPC C++ (Debian:
    libgrpc++-dev, pkg-config) into bench/xds_driver/.build/ (see bench/compiled.py)."""
    if shutil.which("pkg-config") is None:
        return None, "pkg-config not found (apt-get install g++ pkg-config libgrpc++-dev)"
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "grpc++"], capture_output=True, text=True)
    if flags.returncode != 0:
        return None, "pkg-config finds no grpc++ (apt-get install libgrpc++-dev)"
    return build_cached(DRIVER_SOURCE, "xds_driver", flags.stdout.split())


def resolve_driver(choice: str) -> tuple[str, str | None]:
    """("cpp", binary) or ("python", None) for ``--driver``: auto takes cpp when it builds, else python (with a
    one-line note on stderr); cpp exits when it cannot be built."""
    if choice == "python":
        return "python", None
    binary, why = build_driver()
    if binary is not None:
        return "cpp", binary
    if choice == "cpp":
        sys.exit(f"xds_scale: --driver cpp: {why}")
    print(f"xds_scale: note: C++ driver unavailable, using the Python driver ({why.splitlines()[0]})",
          file=sys.stderr, flush=True)
    return "python", None


# --- coordinator -----------------------------------------------------------------------------------------------


class Child:
    """A child process of this script, driven over stdin/stdout lines (one JSON object per reply)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def spawn(cls, role: str, args: argparse.Namespace, *extra: str, tree: str | None = None) -> Child:
        """This script in ``role``; with ``tree``, that checkout's own copy of it, importing that checkout's code."""
        script = os.path.join(tree, "bench", "xds_scale.py") if tree else os.path.abspath(__file__)
        cmd = [sys.executable, script, "--role", role, "--services", str(args.services),
               "--endpoints", str(args.endpoints), "--changes", str(args.changes), "--quiet", str(args.quiet),
               "--max-delay", str(args.max_delay), "--concurrency", str(args.concurrency), *extra]
        env = None
        if tree:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [os.path.join(tree, "src"), tree, *filter(None, [os.environ.get("PYTHONPATH")])])}
        return await cls.exec(cmd, env)

    @classmethod
    async def spawn_proxies(cls, args: argparse.Namespace, port: int, first: int, count: int) -> Child:
        """A driver process for proxies ``first .. first+count-1``: the compiled one or this script."""
        extra = ("--port", str(port), "--first", str(first), "--count", str(count))
        if args.driver_bin:
            return await cls.exec([args.driver_bin, *extra])
        return await cls.spawn("proxies", args, *extra)

    @classmethod
    async def exec(cls, cmd: list[str], env: dict[str, str] | None = None) -> Child:
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                    limit=1 << 24, env=env)
        return cls(proc)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out = await self.proc.stdout.readline()
        if not out:
            raise RuntimeError(f"child exited with {await self.proc.wait()}")
        result: dict[str, Any] = json.loads(out)
        return result

    async def ask(self, line: str) -> dict[str, Any]:
        self.send(line)
        return await self.recv()

    async def stop(self) -> dict[str, Any] | None:
        result = None
        try:
            if self.proc.returncode is None:
                result = await asyncio.wait_for(self.ask("quit"), 20)
        except Exception:
            result = None
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except Exception:
            self.proc.kill()
            await self.proc.wait()
        return result


def default_drivers() -> int:
    """Driver processes: one per core (the server has its own process), at least two."""
    return max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2)


async def measure(role: str, args: argparse.Namespace, tree: str | None = None, *, etcd: str | None = None,
                  replicas: int = 1, generation: int = 0) -> dict[str, Any]:
    """One server (meshplane or baseline; with ``tree``, another checkout's meshplane), or with ``etcd``
    ``replicas`` meshplane replicas sharing that etcd (the first seeds it unless ``generation`` says an earlier
    run did; changes are written through the first, so every other replica's proxies see them through etcd's
    watch), against ``args.drivers`` driver processes (at least one per replica; driver d's proxies on replica
    d mod R). Every timestamp is ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux: one clock for every process
    of the machine). ``generation``: address generations already written by earlier runs on the same etcd."""
    servers: list[Child] = []
    drivers: list[Child] = []
    try:
        ports: list[int] = []
        for r in range(replicas):
            extra: tuple[str, ...] = ()
            if etcd:
                extra = ("--etcd", etcd, *(("--seed",) if r == 0 and generation == 0 else ()))
            servers.append(await Child.spawn(role, args, *extra, tree=tree))
            ports.append((await servers[-1].recv())["port"])  # one at a time: the first has seeded the store
        k = max(1, min(max(args.drivers, replicas), args.proxies))
        bounds = [args.proxies * d // k for d in range(k + 1)]
        for d in range(k):
            drivers.append(await Child.spawn_proxies(args, ports[d % replicas], bounds[d], bounds[d + 1] - bounds[d]))
        await asyncio.gather(*(d.recv() for d in drivers))

        async def stats() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(s.ask("stats") for s in servers)))

        before = await stats()
        t0 = time.perf_counter()
        for d in drivers:
            d.send("start")
        done = await asyncio.wait_for(asyncio.gather(*(d.recv() for d in drivers)), args.timeout)
        complete = [t for r in done for t in r["complete"]]
        convergence = max(complete) - t0
        after_conv = await stats()
        latencies: list[float] = []
        observed = 0  # (proxy, change) pairs where the proxy saw the change after it was written
        settle_ms: list[float] = []  # after the last proxy saw a change, until the server had every ACK
        for c in range(args.changes):
            i = c % args.services
            cluster = f"outbound|80||{host_of(i)}"
            expected = endpoint_ip(i, 0, generation + c + 1)
            for d in drivers:
                d.send(f"watch {cluster} {expected}")
            await asyncio.gather(*(d.recv() for d in drivers))
            t1 = time.perf_counter()
            reply = await servers[0].ask(f"change {i} {generation + c + 1}" if etcd else f"change {i}")
            assert reply["address"] == expected, (reply, expected)
            hits = await asyncio.wait_for(asyncio.gather(*(d.recv() for d in drivers)), args.timeout)
            latencies.extend(h - t1 for r in hits for h in r["hits"])
            observed += sum(1 for r in hits for h in r["hits"] if h >= t1)
            # One change at a time, as the target is stated: the next is written once the server has taken in
            # every ACK of this one (otherwise it would also wait behind a thousand ACKs still being read).
            settled = await asyncio.gather(*(s.ask("settle") for s in servers))
            settle_ms.append(max(x["settled_ms"] for x in settled))
        after = await stats()
        finals = await asyncio.gather(*(d.stop() for d in drivers))
        drivers = []
        latencies.sort()
        return {
            "convergence_s": convergence,
            "change_p50_ms": statistics.median(latencies) * 1000 if latencies else 0.0,
            "change_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            if latencies else 0.0,
            "server_cpu_converge_s": sum(a["cpu_s"] - b["cpu_s"] for a, b in zip(after_conv, before, strict=True)),
            "server_cpu_changes_s": sum(a["cpu_s"] - b["cpu_s"] for a, b in zip(after, after_conv, strict=True)),
            "server_cpu_setup_s": sum(b["cpu_s"] for b in before),
            "server_peak_rss_mb": max(a["peak_rss_mb"] for a in after),
            "driver_cpu_s": sum(f["cpu_s"] for f in finals if f),
            "proxies_converged": sum(1 for t in complete if t >= t0),
            "changes_observed": observed,
            "ack_settle_p50_ms": statistics.median(settle_ms) if settle_ms else 0.0,
        }
    finally:
        await asyncio.gather(*(d.stop() for d in drivers))
        await asyncio.gather(*(s.stop() for s in servers))


def _server_default_concurrency() -> int:
    from meshplane.xds import XdsSettings

    return XdsSettings().max_concurrent_pushes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", "-S", type=int, default=50)
    ap.add_argument("--endpoints", "-E", type=int, default=3)
    ap.add_argument("--proxies", "-N", type=int, default=20)
    ap.add_argument("--changes", type=int, default=5, help="endpoint changes measured one after another")
    ap.add_argument("--drivers", type=int, default=default_drivers(),
                    help="driver processes holding the proxies (default: one per core, at least 2)")
    ap.add_argument("--quiet", type=float, default=0.01, help="debounce quiet period (s)")
    ap.add_argument("--max-delay", type=float, default=0.1, help="debounce maximum delay (s)")
    ap.add_argument("--concurrency", type=int, default=_server_default_concurrency(),
                    help="max concurrent pushes (default: the server's, %(default)s)")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--driver", choices=["auto", "cpp", "python"], default="auto",
                    help="simulated proxies in the compiled driver (bench/xds_driver/driver.cc, built on first "
                         "use) or in Python; auto: cpp when it builds (default: %(default)s)")
    ap.add_argument("--role", choices=["driver", "meshplane", "baseline", "proxies"], default="driver",
                    help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--against", metavar="TREE",
                    help="also measure the meshplane of another checkout (e.g. a worktree at an older commit) in "
                    "this run, alternating with this one --rounds times, and print this/that ratios")
    ap.add_argument("--rounds", type=int, default=1, help="with --against: measurements of each, alternated")
    ap.add_argument("--no-baseline", action="store_true", help="measure meshplane only (while iterating)")
    ap.add_argument("--sovereign", action="store_true",
                    help="also serve the same S x E clusters to one real Envoy from meshplane and from sovereign "
                         "(bench/xds_sovereign.py, installs sovereign into its own venv) and report the ratios")
    ap.add_argument("--replicas", type=int, default=0, metavar="R",
                    help="R meshplane replicas on one loopback etcd against 1 replica on the same etcd, same run")
    ap.add_argument("--etcd", help=argparse.SUPPRESS)  # a server's etcd:// store (with --replicas)
    ap.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)  # this replica writes the mesh
    args = ap.parse_args()
    if os.environ.get("XDS_SCALE_LOG"):  # the children's log records on stderr
        import logging

        logging.basicConfig(level=os.environ["XDS_SCALE_LOG"], format="%(asctime)s %(name)s %(message)s")
    if args.role == "meshplane":
        asyncio.run(_serve_meshplane(args))
        return
    if args.role == "baseline":
        asyncio.run(_serve_baseline(args))
        return
    if args.role == "proxies":
        if os.environ.get("XDS_SCALE_DRIVER_PROFILE") and args.first == 0:  # cProfile the first driver process
            import cProfile

            cProfile.runctx("asyncio.run(_drive(args))", globals(), {"args": args},
                            os.environ["XDS_SCALE_DRIVER_PROFILE"])
        else:
            asyncio.run(_drive(args))
        return
    args.driver, args.driver_bin = resolve_driver(args.driver)  # one driver for both servers
    if args.against:
        against_tree(args)
        return
    if args.replicas:
        against_one_replica(args)
        return
    base = None if args.no_baseline else asyncio.run(measure("baseline", args))
    mesh = asyncio.run(measure("meshplane", args))
    base = base or mesh
    sovereign = against_sovereign(args) if args.sovereign else None
    result = {"params": {"S": args.services, "E": args.endpoints, "N": args.proxies, "changes": args.changes,
                         "drivers": args.drivers, "driver": args.driver, "quiet_s": args.quiet,
                         "max_delay_s": args.max_delay},
              "load_average": os.getloadavg(),
              "meshplane": mesh, "baseline": base,
              "ratio": {k: (mesh[k] / base[k] if base[k] else None) for k in mesh}}
    if sovereign is not None:
        result["sovereign"] = sovereign
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"S={args.services} E={args.endpoints} N={args.proxies} changes={args.changes} drivers={args.drivers} "
          f"driver={args.driver} (debounce {args.quiet}s/{args.max_delay}s); load average at the end "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'metric':28} {'meshplane':>12} {'baseline':>12} {'ratio':>8}")
    for k in mesh:
        r = result["ratio"][k]
        fmt = "12d" if isinstance(mesh[k], int) else "12.3f"
        print(f"{k:28} {mesh[k]:{fmt}} {base[k]:{fmt}} {r if r is None else f'{r:8.2f}'}")
    if sovereign is not None:
        print(f"\none real Envoy, all {args.services} clusters active (sovereign: STATIC clusters, endpoints "
              "inlined, REST/JSON)")
        print(f"{'metric':28} {'meshplane':>12} {'sovereign':>12} {'sov/mesh':>8}")
        for k, m in sovereign["meshplane"].items():
            o = sovereign["sovereign"][k]
            print(f"{k:28} {m:12.3f} {o:12.3f} {o / m if m else float('nan'):8.2f}")


def against_tree(args: argparse.Namespace) -> None:
    """This checkout's meshplane against another's, alternated ``--rounds`` times in one run (same drivers, same
    machine load): medians of each metric and their ratio (this / that)."""
    tree = os.path.abspath(args.against)
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for _ in range(max(1, args.rounds)):
        theirs.append(asyncio.run(measure("meshplane", args, tree=tree)))
        ours.append(asyncio.run(measure("meshplane", args)))
    med = {k: statistics.median(r[k] for r in ours) for k in ours[0]}
    other = {k: statistics.median(r[k] for r in theirs) for k in theirs[0]}
    ratio = {k: (med[k] / other[k] if other[k] else None) for k in med}
    if args.json:
        print(json.dumps({"params": {"S": args.services, "E": args.endpoints, "N": args.proxies,
                                     "changes": args.changes, "rounds": args.rounds, "against": tree},
                          "load_average": os.getloadavg(), "this": ours, "that": theirs, "ratio": ratio}, indent=2))
        return
    print(f"S={args.services} E={args.endpoints} N={args.proxies} changes={args.changes} rounds={args.rounds} "
          f"driver={args.driver}; this checkout vs {tree} (medians); load average at the end "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'metric':28} {'this':>12} {'that':>12} {'this/that':>9}")
    for k in med:
        r = ratio[k]
        print(f"{k:28} {med[k]:12.3f} {other[k]:12.3f} {'' if r is None else f'{r:9.2f}'}")


def against_one_replica(args: argparse.Namespace) -> None:
    """``--replicas R``: one meshplane replica on a loopback etcd, then R replicas on the same etcd (the proxies
    spread over them), alternated ``--rounds`` times; medians of each metric and their ratio (R / 1). The etcd is
    seeded once, by the first run; later runs write new address generations."""
    import tempfile

    from meshplane.runtime.etcd import start_etcd

    workdir = Path(tempfile.mkdtemp(prefix="xds-scale-etcd-"))
    etcd = start_etcd(workdir / "etcd")
    one: list[dict[str, Any]] = []
    many: list[dict[str, Any]] = []
    generation = 0
    try:
        for _ in range(max(1, args.rounds)):
            one.append(asyncio.run(measure("meshplane", args, etcd=etcd.url, replicas=1, generation=generation)))
            generation += args.changes
            many.append(asyncio.run(measure("meshplane", args, etcd=etcd.url, replicas=args.replicas,
                                            generation=generation)))
            generation += args.changes
    finally:
        etcd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    med1 = {k: statistics.median(r[k] for r in one) for k in one[0]}
    medr = {k: statistics.median(r[k] for r in many) for k in many[0]}
    ratio = {k: (medr[k] / med1[k] if med1[k] else None) for k in medr}
    if args.json:
        print(json.dumps({"params": {"S": args.services, "E": args.endpoints, "N": args.proxies,
                                     "changes": args.changes, "rounds": args.rounds, "replicas": args.replicas,
                                     "drivers": max(args.drivers, args.replicas), "driver": args.driver},
                          "load_average": os.getloadavg(), "one": one, "replicas": many, "ratio": ratio}, indent=2))
        return
    print(f"S={args.services} E={args.endpoints} N={args.proxies} changes={args.changes} rounds={args.rounds} "
          f"driver={args.driver} drivers={max(args.drivers, args.replicas)}; {args.replicas} replicas vs 1 on one "
          "etcd (medians; CPU summed over replicas, RSS the largest replica); load average at the end "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"{'metric':28} {'1 replica':>12} {f'{args.replicas} replicas':>12} {'ratio':>8}")
    for k in medr:
        r = ratio[k]
        print(f"{k:28} {med1[k]:12.3f} {medr[k]:12.3f} {'' if r is None else f'{r:8.2f}'}")


def against_sovereign(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """bench/xds_sovereign.py's measurement in this run: time-to-active and bytes of one real Envoy fed the same
    clusters by meshplane (ADS) and by sovereign (REST/JSON)."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    import xds_sovereign

    sargs = argparse.Namespace(services=args.services, endpoints=args.endpoints, timeout=args.timeout,
                               sovereign_eds=False,
                               venv=os.path.join(tempfile.gettempdir(), "meshplane-sovereign-venv"))
    workdir = Path(tempfile.mkdtemp(prefix="xds-sovereign-"))
    try:
        return {"meshplane": xds_sovereign.measure_meshplane(sargs, workdir),
                "sovereign": xds_sovereign.measure_sovereign(sargs, workdir)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
