"""A real Envoy routes to endpoints that come from Kubernetes member clusters.

What is fake: the two member clusters' Kubernetes API servers. No Kubernetes API server can run on this machine,
so each is a ``FakeKubeApi`` (tests/integration/test_multicluster_support.py) that speaks the real list/watch
protocol and is reached through the real ``kubernetes_asyncio`` client with a real kubeconfig. What is real: the
member clusters are added and removed with ``meshplane cluster add|remove`` (the CLI's own code path, through the
real HTTP API into the store), the ``MemberClusterController`` with one ``KubeClusterSource`` per member, wired to
the ``XdsServer`` as ``meshplane server`` wires them (same ``DefaultTranslator`` defaults, same debounce), gRPC xDS on
loopback, the ``envoy`` binary (explicit HTTP proxy listener, as the harness runs it), and HTTP backends listening
on the loopback addresses the clusters' EndpointSlices name.

The mesh: ``reviews`` in namespace ``default`` (port 9080, http) exists in cluster-a (its Node in region-1/zone-a,
backend on a loopback address of its own) and cluster-b (Node in region-1/zone-b, backend on another). The
MemberClusters carry no region or zone, so locality can only come from the Node labels. Locality load balancing is
on by default (docs/multicluster.md, "Locality and failover"), so the product's behaviour is:

- a client sidecar in zone-a gets both clusters' endpoints (one merged service), cluster-a's at priority 0 and
  cluster-b's at priority 1, and sends every request to cluster-a;
- a client sidecar in another region sees both clusters as equally near and sends to both;
- when cluster-a's endpoint goes (its EndpointSlice deleted in the fake API; later, after the slice is restored
  and traffic has returned to zone-a, the whole member cluster removed with ``meshplane cluster remove``), the
  zone-a client's traffic moves to cluster-b.

Failover is checked with a continuous request loop: traffic must reach only cluster-b within 1 s of the change
(the product's default debounce is 0.1 s; 1 s is the generous deadline the change must meet), and no request may
fail at all: cluster-a's backend stays up while its endpoint is withdrawn, so requests still routed there succeed,
and EDS replaces the assignment atomically, so there is no moment without an endpoint. How long each move took is
printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from envoy_harness import Envoy, Harness, loopback_host, sidecar_node_id, wait_until

from meshplane.api.kinds import default_registry
from meshplane.apiserver.app import ApiServer, ApiServerSettings, serve
from meshplane.cli.main import main as meshplane_cli
from meshplane.kube import KubeSourceFactory, SourceSettings
from meshplane.model.proxy import Locality
from meshplane.multicluster import MEMBER_CLUSTERS, MemberClusterController
from meshplane.store import MemoryStore
from meshplane.xds import SyncState, XdsServer
from meshplane.xds.default_translator import DefaultTranslator
from tests.integration.test_multicluster import cond, until_status
from tests.integration.test_multicluster_support import (
    FakeKubeApi,
    endpoint_slice,
    namespace,
    node,
    pod,
    service,
    slice_endpoint,
)

pytestmark = pytest.mark.envoy

REVIEWS = "reviews.default.svc.cluster.local"
REVIEWS_CLUSTER = f"outbound|9080||{REVIEWS}"
TOKEN = "e2e-api-token-s3cr3t"
SAFETY = 30.0  # a hung wait fails after this; never a statement about speed
MOVE_DEADLINE = 1.0  # traffic must have moved this soon after the change (see the module docstring)
TAIL = 25  # consecutive answers from one backend that count as "traffic has moved there"


@dataclass
class Member:
    """One fake Kubernetes member cluster with one node, one reviews pod and its EndpointSlice."""

    name: str
    zone: str
    backend_ip: str
    api: FakeKubeApi
    backend_port: int = 0

    def publish(self) -> None:
        api, node_name, pod_name = self.api, f"{self.name}-node-1", "reviews-v1-0"
        api.upsert("namespaces", namespace("default"))
        api.upsert("nodes", node(node_name, "region-1", self.zone))
        api.upsert("pods", pod("default", pod_name, node_name, {"app": "reviews", "version": "v1"}, sa="reviews",
                               ip=self.backend_ip))
        api.upsert("services", service("default", "reviews", [("http", 9080)]))
        self.publish_slice()

    def publish_slice(self) -> None:
        # The Service's port 9080 targets the container port named "http": the backend's (free) port.
        self.api.upsert("endpointslices", endpoint_slice(
            "default", "reviews-x7k2p", "reviews",
            [slice_endpoint(self.backend_ip, "reviews-v1-0", node_name=f"{self.name}-node-1")],
            ports=[("http", self.backend_port)]))

    def delete_slice(self) -> None:
        self.api.delete("endpointslices", "default", "reviews-x7k2p")

    @property
    def endpoint(self) -> str:
        return f"{self.backend_ip}:{self.backend_port}"


@dataclass
class RequestLoop:
    """Sends requests one after another through a sidecar; records (start time, backend name or failure)."""

    harness: Harness
    envoy: Envoy
    results: list[tuple[float, str]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        url = f"http://{self.envoy.listen_host}:15001/"
        while True:
            t = loop.time()
            try:
                status, body, _ = await self.harness.get(url, host="reviews:9080")
                outcome = str(body.get("backend")) if status == 200 else f"failed:{status}"
            except Exception as e:  # a reset, a refused connection, a timeout: a failed request
                outcome = f"failed:{type(e).__name__}"
            self.results.append((t, outcome))
            await asyncio.sleep(0.002)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="request-loop")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def count(self, n: int) -> None:
        """Wait until ``n`` more requests have been answered (or have failed)."""
        target = len(self.results) + n

        async def done() -> bool:
            return len(self.results) >= target

        await wait_until(done, timeout=SAFETY, interval=0.01, what=f"{n} more requests")

    async def moved_to(self, backend: str, since: float) -> float:
        """Wait until the last TAIL answers (sent after ``since``) all came from ``backend``; return when the
        first request of that final run was sent."""
        loop = asyncio.get_running_loop()
        hard = loop.time() + SAFETY
        while True:
            after = [(t, o) for t, o in self.results if t >= since]
            run = 0
            for _, o in reversed(after):
                if o != backend:
                    break
                run += 1
            if run >= TAIL:
                return after[len(after) - run][0]
            if loop.time() > hard:
                raise AssertionError(f"traffic did not move to {backend}: last answers {[o for _, o in after[-10:]]}")
            await asyncio.sleep(0.01)

    def failures(self) -> list[tuple[float, str]]:
        return [(t, o) for t, o in self.results if o.startswith("failed:")]


async def cli(*argv: str) -> int:
    """``meshplane ARGV`` through its real code path (meshplane.client to the API), in a thread."""
    code: int = await asyncio.to_thread(meshplane_cli, list(argv))
    return code


@contextlib.asynccontextmanager
async def api_server(store: MemoryStore) -> AsyncIterator[str]:
    api = ApiServer(store, default_registry(), ApiServerSettings(tokens={TOKEN: "admin"}))
    runner = await serve(api.app(), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def controller(store: MemoryStore, server: XdsServer) -> AsyncIterator[MemberClusterController]:
    # As cli.serverproc wires it.
    ctl = MemberClusterController(store, server, backoff_max=15.0, source_factory=KubeSourceFactory(
        SourceSettings(request_timeout=10.0, backoff_max=15.0)))
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop()


@contextlib.asynccontextmanager
async def fake_apis(n: int) -> AsyncIterator[list[FakeKubeApi]]:
    apis: list[FakeKubeApi] = []
    try:
        for i in range(n):
            apis.append(await FakeKubeApi(token=f"member-{i}-token-s3cr3t").start())
        yield apis
    finally:
        for a in apis:
            await a.stop()


async def sidecar(harness: Harness, name: str, xds_address: str, locality: Locality, cluster_id: str) -> Envoy:
    """A client sidecar (explicit HTTP proxy on LISTEN:15001) with a locality, like the harness's own envoys."""
    host = loopback_host()
    md: dict[str, Any] = {"NAMESPACE": "default", "WORKLOAD_NAME": name, "LABELS": {"app": name},
                          "INSTANCE_IPS": host, "CLUSTER_ID": cluster_id, "NETWORK": "net-1"}
    e = Envoy(name, sidecar_node_id(host, name, "default"), md, xds_address, harness.workdir, listen_host=host,
              locality=locality)
    harness.envoys.append(e)  # stopped by the harness fixture, by PID
    await e.start()
    await e.wait_ready()
    return e


async def endpoint_view(envoy: Envoy) -> dict[str, tuple[int, str, str]]:
    """reviews' endpoints in the proxy: "ip:port" -> (priority, zone, health) from the admin /clusters."""
    _, body = await envoy.admin_get("/clusters?format=json")
    for c in json.loads(body).get("cluster_statuses", []):
        if c["name"] == REVIEWS_CLUSTER:
            out = {}
            for h in c.get("host_statuses", []):
                sa = h["address"]["socket_address"]
                health = h.get("health_status", {}).get("eds_health_status", "")
                out[f"{sa['address']}:{sa['port_value']}"] = (int(h.get("priority", 0)),
                                                              str(h.get("locality", {}).get("zone", "")), health)
            return out
    return {}


async def until_view(envoy: Envoy, expected: dict[str, tuple[int, str, str]]) -> None:
    async def check() -> bool:
        return await endpoint_view(envoy) == expected

    try:
        await wait_until(check, timeout=SAFETY, what=f"{envoy.name}'s endpoints of reviews")
    except TimeoutError:
        raise AssertionError(f"{envoy.name}: {await endpoint_view(envoy)} != {expected}") from None


async def answers(harness: Harness, envoy: Envoy, n: int) -> list[str]:
    out = []
    for _ in range(n):
        status, body, _ = await harness.get(f"http://{envoy.listen_host}:15001/", host="reviews:9080")
        out.append(str(body.get("backend")) if status == 200 else f"failed:{status}")
    return out


async def test_envoy_routes_to_kubernetes_member_clusters_and_fails_over(
        store: MemoryStore, harness: Harness, xds: Any, tmp_path: Path) -> None:
    # The server's defaults: DefaultTranslator with default MeshSettings (locality LB on) and its debounce.
    server, xds_address = await xds(DefaultTranslator(), quiet=0.1, max_delay=1.0)
    loop = asyncio.get_running_loop()
    async with fake_apis(2) as (api_a, api_b), api_server(store) as url, controller(store, server) as ctl:
        conn = ["--server", url, "--token", TOKEN]
        a = Member("cluster-a", "zone-a", loopback_host(), api_a)
        b = Member("cluster-b", "zone-b", loopback_host(), api_b)
        for m in (a, b):
            m.backend_port = (await harness.backend(m.name, m.backend_ip)).port
            m.publish()
            cfg = tmp_path / f"{m.name}.kubeconfig"
            cfg.write_text(m.api.kubeconfig())
            assert await cli("cluster", "add", m.name, "--kubeconfig", str(cfg), "--network", "net-1", *conn) == 0
        for m in (a, b):
            obj = await until_status(store, m.name, lambda o: cond(o, "Synced").get("status") == "True")
            assert cond(obj, "Connected")["status"] == "True"

        # Started together: with no SDS server in their bootstrap (no CA here), each waits Envoy's 15 s initial
        # fetch timeout for the SDS secret of the auto-mTLS match on reviews' cluster before it is ready (every
        # harness Envoy with a mesh-internal service does; the plaintext endpoints used here are unaffected).
        near, far = await asyncio.gather(
            sidecar(harness, "client", xds_address, Locality("region-1", "zone-a"), "cluster-a"),
            sidecar(harness, "far-client", xds_address, Locality("region-2", "zone-x"), "cluster-c"))

        # One service, endpoints from both clusters, locality from the Nodes: zone-a's proxy ranks cluster-a first.
        await until_view(near, {a.endpoint: (0, "zone-a", "HEALTHY"), b.endpoint: (1, "zone-b", "HEALTHY")})
        await until_view(far, {a.endpoint: (0, "zone-a", "HEALTHY"), b.endpoint: (0, "zone-b", "HEALTHY")})
        assert await answers(harness, near, 100) == ["cluster-a"] * 100
        spread = await answers(harness, far, 100)
        assert set(spread) == {"cluster-a", "cluster-b"}, spread
        # Both are in one priority; a 2-host balancer leaving one under 10 of 100 is not a chance event.
        assert min(spread.count("cluster-a"), spread.count("cluster-b")) >= 10, spread

        requests = RequestLoop(harness, near)
        requests.start()
        try:
            await requests.count(50)
            assert {o for _, o in requests.results} == {"cluster-a"}

            # 1. cluster-a's EndpointSlice is deleted in its API server: traffic moves to cluster-b.
            t0 = loop.time()
            a.delete_slice()
            moved = await requests.moved_to("cluster-b", t0)
            print(f"slice deleted -> only cluster-b after {(moved - t0) * 1000:.0f} ms")
            assert moved - t0 <= MOVE_DEADLINE, f"traffic moved {moved - t0:.2f} s after the slice deletion"
            await requests.count(100)
            assert {o for t, o in requests.results if t >= moved} == {"cluster-b"}
            await until_view(near, {b.endpoint: (0, "zone-b", "HEALTHY")})

            # 2. It comes back: zone-a's proxy returns to its own zone.
            t1 = loop.time()
            a.publish_slice()
            back = await requests.moved_to("cluster-a", t1)
            print(f"slice restored -> only cluster-a after {(back - t1) * 1000:.0f} ms")
            await requests.count(50)

            # 3. `meshplane cluster remove cluster-a`: its endpoints leave the proxy; traffic moves to cluster-b.
            t2 = loop.time()
            assert await cli("cluster", "remove", "cluster-a", *conn) == 0
            removed = await requests.moved_to("cluster-b", t2)
            print(f"cluster removed -> only cluster-b after {(removed - t2) * 1000:.0f} ms")
            assert removed - t2 <= MOVE_DEADLINE, f"traffic moved {removed - t2:.2f} s after cluster remove"
            await requests.count(100)
            assert {o for t, o in requests.results if t >= removed} == {"cluster-b"}
        finally:
            await requests.stop()
        print(f"{len(requests.results)} requests in the loop, {len(requests.failures())} failed")
        assert requests.failures() == [], requests.failures()[:10]
        assert ctl.member_names() == ["cluster-b"]
        assert [o["metadata"]["name"] for o in store.list(MEMBER_CLUSTERS)[0]] == ["cluster-b"]
        await until_view(near, {b.endpoint: (0, "zone-b", "HEALTHY")})
        await until_view(far, {b.endpoint: (0, "zone-b", "HEALTHY")})

        # Neither proxy rejected anything it was sent.
        await server.wait_idle()
        for envoy in (near, far):
            st = next(s for s in server.proxy_status() if s.node_id == envoy.node_id)
            assert st.state is SyncState.SYNCED and all(t.nacks == 0 for t in st.types), st
