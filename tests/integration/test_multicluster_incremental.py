"""Member-cluster changes reach the push pipeline incrementally: the real XdsServer and MemberClusterController
against fake Kubernetes API servers (no Kubernetes API server can run on this machine: ``FakeKubeApi`` speaks
the real list/watch protocol, see tests/integration/test_multicluster_support.py).

An EndpointSlice change in one cluster must become an endpoint-only push of exactly that host, applied to the
previous registry snapshot (no re-merge of the mesh, no new push context); a Service change must re-merge.
Counted, never timed: waits are bounded by a safety timeout only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from meshplane.kube import KubeSourceFactory, SourceSettings
from meshplane.model.proxy import Locality
from meshplane.multicluster import MEMBER_CLUSTERS, MemberClusterController
from meshplane.registry import aggregator as aggregator_mod
from meshplane.store import MemoryStore
from meshplane.xds import XdsServer, XdsSettings
from meshplane.xds.connection import Connection
from tests.integration.test_multicluster_support import (
    FakeKubeApi,
    endpoint_slice,
    populate,
    service,
    slice_endpoint,
)

SAFETY = 30.0
NODE = "sidecar~127.0.5.1~client-0.default~default.svc.cluster.local"


def _host(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


async def _nothing(_data: bytes) -> None:
    return None


async def _until(server: XdsServer, pred: Callable[[], bool], what: str) -> None:
    async def wait() -> None:
        while not pred():
            await asyncio.sleep(0.01)
        await server.wait_idle()

    try:
        await asyncio.wait_for(wait(), SAFETY)
    except TimeoutError as e:
        raise AssertionError(f"timed out waiting for {what}") from e


async def test_a_slice_change_is_an_endpoint_push_of_its_host_without_a_re_merge(monkeypatch: Any) -> None:
    merges: list[int] = []
    real = aggregator_mod.aggregate

    def counting(sources: Any) -> Any:
        merges.append(1)
        return real(sources)

    monkeypatch.setattr(aggregator_mod, "aggregate", counting)
    store = MemoryStore()
    await store.start()
    apis = [await FakeKubeApi(token=f"tok-{i}-s3cr3t-value").start() for i in range(2)]
    server = XdsServer(store, XdsSettings(debounce_quiet=0.01, debounce_max=0.05))
    await server.start("127.0.0.1:0")
    ctl = MemberClusterController(store, server, backoff_max=1.0, source_factory=KubeSourceFactory(
        SourceSettings(request_timeout=5.0, backoff_max=1.0)))
    await ctl.start()
    try:
        conn = Connection(delta=False, peer="test", translator=server.translator, send=_nothing)
        conn.proxy = server.translator.proxy_from_node(NODE, {"NAMESPACE": "default"}, Locality())
        server.register(conn)
        for i, api in enumerate(apis):
            populate(api, cluster=f"c{i}", region="r", zone=f"z{i}", services=["reviews", "ratings"],
                     ip_prefix=f"10.{i + 1}")
            await store.create(MEMBER_CLUSTERS, {
                "apiVersion": "meshplane.io/v1", "kind": "MemberCluster", "metadata": {"name": f"c{i}"},
                "spec": {"kubeconfig": api.kubeconfig(), "network": "n1", "region": "r", "zone": f"z{i}"}},
                actor="test")
        await _until(server, lambda: len(server.registry.endpoints_of(_host("reviews"))) == 4, "both clusters")
        merges_before, builds, updates = len(merges), server.context_builds, server.registry_updates

        apis[1].upsert("endpointslices", endpoint_slice("default", "reviews-abc", "reviews", [
            slice_endpoint("10.2.0.1", "reviews-0"), slice_endpoint("10.2.0.9", "reviews-1")]))
        await _until(server, lambda: "10.2.0.9" in {e.address for e in server.registry.endpoints_of(
            _host("reviews"))}, "the moved endpoint")
        assert len(merges) == merges_before, "an endpoint change re-merged the whole mesh"
        assert server.context_builds == builds and server.registry_updates > updates
        addrs = {e.address: e.cluster_id for e in server.registry.endpoints_of(_host("reviews"))}
        assert addrs == {"10.1.0.1": "c0", "10.1.0.2": "c0", "10.2.0.1": "c1", "10.2.0.9": "c1"}
        assert len(server.registry.endpoints_of(_host("ratings"))) == 4  # the other host untouched

        # A new Service changes the service list: merged whole, and the new host appears.
        apis[0].upsert("services", service("default", "details", cluster_ip="10.96.9.9"))
        apis[0].upsert("endpointslices", endpoint_slice("default", "details-1", "details",
                                                        [slice_endpoint("10.1.9.9")]))
        await _until(server, lambda: bool(server.registry.endpoints_of(_host("details"))), "the new service")
        assert len(merges) > merges_before and server.registry.service(_host("details")) is not None
    finally:
        await ctl.stop()
        await server.stop(0)
        for api in apis:
            await api.stop()
        await store.close()
