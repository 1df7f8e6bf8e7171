"""The xds_scale benchmark's compiled driver (bench/xds_driver/driver.cc) against the Python one.

A scripted ADS server checks, for both drivers, what they send (Envoy-like requests and ACKs, byte for byte the
same) and when they report: complete only once CDS, LDS and every EDS/RDS resource named are held, a change
only when the pushed ClusterLoadAssignment really holds the address. Then the benchmark itself runs at a tiny
size with ``--driver cpp``: every proxy converges and sees every change, against meshplane and the baseline.
The driver is compiled on first use (~15 s) and cached in bench/xds_driver/.build/.
"""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from bench import xds_scale as X

SCRIPT = Path(X.__file__)


@pytest.fixture(scope="module")
def driver_bin() -> str:
    if shutil.which("g++") is None or subprocess.run(["pkg-config", "--exists", "grpc++"]).returncode != 0:
        pytest.skip("needs g++, pkg-config and libgrpc++-dev (.ci/run installs them)")
    binary, why = X.build_driver()
    assert binary is not None, why
    return binary


def _any(type_url: str, msg: Any) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=msg.SerializeToString())


def _response(type_url: str, version: str, resources: list[Any]) -> bytes:
    return discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=f"n{version}",
                                           resources=[_any(type_url, r) for r in resources]).SerializeToString()


def _hcm(route: str) -> lc_pb2.Filter:
    h = hcm_pb2.HttpConnectionManager(stat_prefix="x")
    h.rds.route_config_name = route
    return lc_pb2.Filter(name="hcm", typed_config=_any(
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", h))


def _cla(name: str, *addresses: str) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = cla.endpoints.add()
    for a in addresses:
        lb = group.lb_endpoints.add()
        lb.endpoint.address.socket_address.address = a
        lb.endpoint.address.socket_address.port_value = 80
    return cla


CLUSTERS = [cluster_pb2.Cluster(name="a", type=cluster_pb2.Cluster.EDS,
                                eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(service_name="a-eds")),
            cluster_pb2.Cluster(name="b", type=cluster_pb2.Cluster.EDS),  # EDS name: the cluster's name
            cluster_pb2.Cluster(name="c", type=cluster_pb2.Cluster.STATIC)]
LISTENERS = [listener_pb2.Listener(name="l1", filter_chains=[lc_pb2.FilterChain(filters=[_hcm("r1")])],
                                   default_filter_chain=lc_pb2.FilterChain(filters=[_hcm("r2")])),
             listener_pb2.Listener(name="l2", filter_chains=[lc_pb2.FilterChain(filters=[
                 lc_pb2.Filter(name="tcp", typed_config=any_pb2.Any(
                     type_url="type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"))])])]
ROUTES = [route_pb2.RouteConfiguration(name="r1"), route_pb2.RouteConfiguration(name="r2")]


class ScriptedAds:
    """An ADS server whose responses the test pushes to every stream; it records each stream's requests."""

    def __init__(self) -> None:
        self.outs: list[asyncio.Queue[bytes]] = []
        self.requests: dict[int, asyncio.Queue[bytes]] = collections.defaultdict(asyncio.Queue)  # by stream
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "envoy.service.discovery.v3.AggregatedDiscoveryService",
            {"StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._handle, request_deserializer=lambda b: b, response_serializer=lambda b: b)}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def _handle(self, requests: Any, context: Any) -> None:
        out: asyncio.Queue[bytes] = asyncio.Queue()
        stream = len(self.outs)
        self.outs.append(out)

        async def read() -> None:
            async for raw in requests:
                self.requests[stream].put_nowait(raw)

        reader = asyncio.create_task(read())
        try:
            while True:
                await context.write(await out.get())
        finally:
            reader.cancel()

    def push(self, data: bytes) -> None:
        for q in self.outs:
            q.put_nowait(data)

    async def expect(self, streams: int, type_url: str, version: str = "", names: tuple[str, ...] = ()) -> list[
            bytes]:
        """The next request of every stream: of this type, version and nonce, naming these resources."""
        got: list[bytes] = []
        for stream in range(streams):
            raw = await asyncio.wait_for(self.requests[stream].get(), 10)
            req = discovery_pb2.DiscoveryRequest.FromString(raw)
            assert req.type_url == type_url, req
            assert req.version_info == version and req.response_nonce == (f"n{version}" if version else ""), req
            assert tuple(req.resource_names) == names, req
            got.append(raw)
        return got


async def _line(proc: asyncio.subprocess.Process, timeout: float = 10) -> dict[str, Any] | None:
    assert proc.stdout is not None
    try:
        out = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except TimeoutError:
        return None
    assert out, f"driver exited with {await proc.wait()}"
    result: dict[str, Any] = json.loads(out)
    return result


async def _script(cmd: list[str]) -> list[bytes]:
    """Runs one driver with two proxies through the whole protocol; returns what the proxies sent, step by step."""
    ads = ScriptedAds()
    await ads.server.start()
    proc = await asyncio.create_subprocess_exec(*cmd, "--port", str(ads.port), "--first", "5", "--count", "2",
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None

    def send(line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line.encode() + b"\n")

    sent: list[bytes] = []
    try:
        assert await _line(proc) == {"ready": True}
        send("start")
        first = await ads.expect(2, X.CDS)
        nodes = sorted(discovery_pb2.DiscoveryRequest.FromString(r).node.id for r in first)
        assert nodes == [X.node_id(5), X.node_id(6)]
        sent += sorted(first)
        sent += sorted(await ads.expect(2, X.LDS))
        ads.push(_response(X.CDS, "1", CLUSTERS))
        sent += sorted(await ads.expect(2, X.CDS, "1"))
        sent += sorted(await ads.expect(2, X.EDS, "", ("a-eds", "b")))
        ads.push(_response(X.LDS, "2", LISTENERS))
        sent += sorted(await ads.expect(2, X.LDS, "2"))
        sent += sorted(await ads.expect(2, X.RDS, "", ("r1", "r2")))  # r2 from the default filter chain
        ads.push(_response(X.RDS, "3", ROUTES))
        sent += sorted(await ads.expect(2, X.RDS, "3", ("r1", "r2")))
        ads.push(_response(X.EDS, "4", [_cla("a-eds", "10.0.0.1")]))
        sent += sorted(await ads.expect(2, X.EDS, "4", ("a-eds", "b")))
        assert await _line(proc, 0.5) is None, "complete while b's ClusterLoadAssignment is missing"
        t0 = time.perf_counter()
        ads.push(_response(X.EDS, "5", [_cla("b", "10.0.0.2")]))
        complete = await _line(proc)
        assert complete is not None and len(complete["complete"]) == 2
        assert all(t >= t0 for t in complete["complete"]), (complete, t0)  # one clock: CLOCK_MONOTONIC
        sent += sorted(await ads.expect(2, X.EDS, "5", ("a-eds", "b")))

        send("watch a-eds 10.9.9.9")
        assert await _line(proc) == {"armed": True}
        # One response at a time (both proxies ACK before the next): the compiled driver's two threads would
        # otherwise race to its one-entry cache per type and parse a region twice (parsed_regions below).
        ads.push(_response(X.EDS, "6", [_cla("a-eds", "10.0.0.1", "10.0.0.3")]))  # another address
        sent += sorted(await ads.expect(2, X.EDS, "6", ("a-eds", "b")))
        ads.push(_response(X.EDS, "7", [_cla("b", "10.9.9.9")]))  # another cluster
        sent += sorted(await ads.expect(2, X.EDS, "7", ("a-eds", "b")))
        assert await _line(proc, 0.5) is None, "a change seen that no ClusterLoadAssignment holds"
        t1 = time.perf_counter()
        ads.push(_response(X.EDS, "8", [_cla("b", "10.0.0.2"), _cla("a-eds", "10.0.0.1", "10.9.9.9")]))
        hits = await _line(proc)
        assert hits is not None and len(hits["hits"]) == 2 and all(t >= t1 for t in hits["hits"]), (hits, t1)
        sent += sorted(await ads.expect(2, X.EDS, "8", ("a-eds", "b")))

        send("watch b 10.7.7.7")  # a second watch, re-armed
        assert await _line(proc) == {"armed": True}
        ads.push(_response(X.EDS, "9", [_cla("b", "10.7.7.7")]))
        hits = await _line(proc)
        assert hits is not None and len(hits["hits"]) == 2

        send("quit")
        final = await _line(proc)
        assert final is not None and set(final) == {"cpu_s", "peak_rss_mb", "parsed_regions"}, final
        assert final["parsed_regions"] == 9  # CDS, LDS, RDS, and 6 distinct EDS responses: once per process
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await ads.server.stop(0)
    return sent


async def test_compiled_driver_behaves_like_the_python_driver(driver_bin: str) -> None:
    cpp = await _script([driver_bin])
    python = await _script([sys.executable, str(SCRIPT), "--role", "proxies"])
    assert cpp == python  # the same requests, byte for byte


def test_benchmark_with_the_compiled_driver(driver_bin: str) -> None:
    n, changes = 10, 3
    done = subprocess.run([sys.executable, str(SCRIPT), "-S", "20", "-E", "2", "-N", str(n), "--changes",
                           str(changes), "--driver", "cpp", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["params"]["driver"] == "cpp"
    for server in ("meshplane", "baseline"):
        assert result[server]["proxies_converged"] == n, result
        assert result[server]["changes_observed"] == n * changes, result
