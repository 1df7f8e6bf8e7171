"""The ADS server against real Envoys, with a tiny translator (``minimesh``) so only the protocol is under test:
State-of-the-World and Delta reach a working route, live config changes, endpoint-only pushes and NACKs.
"""

from __future__ import annotations

import asyncio

import pytest
from e2e_objects import service_entry, workload_entry
from envoy_harness import Envoy, Harness, wait_until
from minimesh import BREAK, MiniTranslator

from meshplane.metrics import ControlPlaneMetrics
from meshplane.model import xdstypes
from meshplane.store import GroupResource, MemoryStore
from meshplane.xds import SyncState, XdsServer
from tests.support.promtext import value

pytestmark = pytest.mark.envoy

SE = GroupResource("networking.istio.io", "serviceentries")
WE = GroupResource("networking.istio.io", "workloadentries")
HOST = "echo.default.svc.cluster.local"
CLUSTER = f"outbound|80||{HOST}"


async def _mesh(store: MemoryStore, *backends: tuple[str, str, int]) -> None:
    await store.create(SE, service_entry("echo", HOST, selector={"app": "echo"}), actor="test")
    for name, host, port in backends:
        await store.create(WE, workload_entry(name, host, {"app": "echo"}, ports={"http-80": port}), actor="test")


async def _synced(server: XdsServer, node_id: str, types: int = 4) -> bool:
    for st in server.proxy_status():
        if st.node_id == node_id:
            return len(st.types) >= types and st.state is SyncState.SYNCED
    return False


async def _get(h: Harness, envoy: Envoy, host: str = HOST, path: str = "/hello") -> tuple[int, str]:
    status, body, _ = await h.get(f"http://{envoy.listen_host}:15001{path}", host=host)
    return status, str(body.get("backend", ""))


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_route_works(store: MemoryStore, harness: Harness, xds, delta: bool) -> None:  # type: ignore[no-untyped-def]
    b1 = await harness.backend("b1")
    await _mesh(store, ("b1", b1.host, b1.port))
    server, address = await xds(MiniTranslator())
    envoy = await harness.envoy("client", address, delta=delta)
    await envoy.wait_cluster(CLUSTER, [b1.address])
    await wait_until(lambda: _synced(server, envoy.node_id), what="proxy synced")
    assert await _get(harness, envoy) == (200, "b1")
    (status,) = [s for s in server.proxy_status() if s.node_id == envoy.node_id]
    assert status.delta is delta
    assert status.namespace == "default" and status.workload == "client" and status.cluster_id == "local"
    assert {t.short_name for t in status.types} == {"CDS", "EDS", "LDS", "RDS"}
    assert all(t.nacks == 0 for t in status.types)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_config_change_reaches_envoy_without_errors(store: MemoryStore, harness: Harness, xds,  # type: ignore[no-untyped-def]
                                                          delta: bool) -> None:
    b1, b2 = await harness.backend("b1"), await harness.backend("b2")
    await _mesh(store, ("b1", b1.host, b1.port))
    _server, address = await xds(MiniTranslator())
    envoy = await harness.envoy("client", address, delta=delta)
    await envoy.wait_cluster(CLUSTER, [b1.address])

    results: list[tuple[int, str]] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            results.append(await _get(harness, envoy))
            await asyncio.sleep(0.005)

    task = asyncio.create_task(loop())
    try:
        # A new service (full push: CDS, EDS, RDS change) ...
        other = "other.default.svc.cluster.local"
        await store.create(SE, service_entry("other", other, selector={"app": "other"}), actor="test")
        await store.create(WE, workload_entry("o1", b2.host, {"app": "other"}, ports={"http-80": b2.port}),
                           actor="test")
        await wait_until(lambda: _ok(harness, envoy, other, "b2"), what="new service routed")
        # ... and new endpoints for the old one (endpoint-only), while requests keep flowing.
        await store.create(WE, workload_entry("b2", b2.host, {"app": "echo"}, ports={"http-80": b2.port}),
                           actor="test")
        await envoy.wait_cluster(CLUSTER, sorted([b1.address, b2.address]))
        await store.delete(WE, "default", "b1", actor="test")
        await envoy.wait_cluster(CLUSTER, [b2.address])
        await wait_until(lambda: _ok(harness, envoy, HOST, "b2"), what="old endpoint drained")
    finally:
        stop.set()
        await task
    assert results, "the request loop ran"
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:5]
    assert {b for _, b in results} <= {"b1", "b2"}


async def _ok(h: Harness, envoy: Envoy, host: str, backend: str) -> bool:
    return await _get(h, envoy, host) == (200, backend)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_endpoint_only_change_sends_only_eds(store: MemoryStore, harness: Harness, xds,  # type: ignore[no-untyped-def]
                                                   delta: bool) -> None:
    b1, b2 = await harness.backend("b1"), await harness.backend("b2")
    await _mesh(store, ("b1", b1.host, b1.port))
    translator = MiniTranslator()
    server, address = await xds(translator)
    envoy = await harness.envoy("client", address, delta=delta)
    await envoy.wait_cluster(CLUSTER, [b1.address])
    await wait_until(lambda: _synced(server, envoy.node_id), what="proxy synced")
    before = {t.short_name: t for t in server.proxy_status()[0].types}
    cds_updates = (await envoy.stats("cluster_manager.cds.update_success"))["cluster_manager.cds.update_success"]
    full_before = server.full_pushes
    translator.generated.clear()

    we = store.get(WE, "default", "b1")
    assert we is not None
    changed = {**we, "spec": {**we["spec"], "address": b2.host, "ports": {"http-80": b2.port}}}
    await store.update(WE, changed, actor="test")
    await envoy.wait_cluster(CLUSTER, [b2.address])
    await wait_until(lambda: _synced(server, envoy.node_id), what="proxy synced again")
    assert await _get(harness, envoy) == (200, "b2")

    after = {t.short_name: t for t in server.proxy_status()[0].types}
    for short in ("CDS", "LDS", "RDS"):
        assert after[short].nonce_sent == before[short].nonce_sent, f"{short} was sent again"
    assert after["EDS"].nonce_sent != before["EDS"].nonce_sent
    assert server.full_pushes == full_before and server.eds_pushes >= 1
    assert {t for _, t, _ in translator.generated} == {xdstypes.ENDPOINT}
    assert all(names == (CLUSTER,) for _, _, names in translator.generated)
    stats = await envoy.stats("cluster_manager.cds.update_success")
    assert stats["cluster_manager.cds.update_success"] == cds_updates


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_nack_is_recorded_and_isolated(store: MemoryStore, harness: Harness, xds,  # type: ignore[no-untyped-def]
                                             delta: bool) -> None:
    b1, b2 = await harness.backend("b1"), await harness.backend("b2")
    await _mesh(store, ("b1", b1.host, b1.port))
    metrics = ControlPlaneMetrics()
    server, address = await xds(MiniTranslator(), metrics=metrics)
    bad = await harness.envoy("bad", address, delta=delta)
    good = await harness.envoy("good", address, delta=delta)
    for e in (bad, good):
        await wait_until(lambda e=e: _synced(server, e.node_id), what=f"{e.name} synced")

    se = store.get(SE, "default", "echo")
    assert se is not None
    broken = {**se, "metadata": {**se["metadata"], "annotations": {BREAK: "bad"}}}
    await store.update(SE, broken, actor="test")

    def cds(node_id: str):  # type: ignore[no-untyped-def]
        (st,) = [s for s in server.proxy_status() if s.node_id == node_id]
        return st.of(xdstypes.CLUSTER)

    async def nacked() -> bool:
        t = cds(bad.node_id)
        return t is not None and t.state is SyncState.NACKED

    await wait_until(nacked, what="CDS NACKED")
    t = cds(bad.node_id)
    assert t is not None and t.last_nack is not None
    assert "duration" in t.error.lower(), t.error  # Envoy's own words about the negative connect_timeout
    assert t.nacks == 1
    assert (await good.stats("cluster_manager.cds.update_rejected")).get("cluster_manager.cds.update_rejected") == 0
    assert await _synced(server, good.node_id)

    # More pushes, including one that changes the good proxy's config: the bad one is not re-sent the same
    # rejected clusters, keeps running its last good config, and the good one follows.
    await store.create(WE, workload_entry("b2", b2.host, {"app": "echo"}, ports={"http-80": b2.port}), actor="test")
    await good.wait_cluster(CLUSTER, sorted([b1.address, b2.address]))
    await bad.wait_cluster(CLUSTER, sorted([b1.address, b2.address]))
    await server.wait_idle()
    assert cds(bad.node_id).nacks == 1
    assert cds(bad.node_id).state is SyncState.NACKED
    assert (await _get(harness, bad))[0] == 200
    rejected = await bad.stats("cluster_manager.cds.update_rejected")
    assert rejected["cluster_manager.cds.update_rejected"] == 1

    # The control plane's metrics say the same: one CDS reject, two proxies, every type pushed, and the two
    # config changes made while they were connected converged (one observation per proxy and push).
    text = metrics.render().decode()
    assert value(text, "pilot_total_xds_rejects", type="cds") == 1
    assert value(text, "pilot_total_xds_rejects", type="eds") is None
    assert value(text, "pilot_xds") == 2
    for kind in ("cds", "eds", "lds", "rds"):
        assert (value(text, "pilot_xds_pushes", type=kind) or 0) >= 2, kind
    converged = value(text, "pilot_proxy_convergence_time_count")
    assert converged is not None and converged >= 3, text
    assert value(text, "meshplane_xds_flushes_total", kind="full") == 1
    assert value(text, "meshplane_xds_flushes_total", kind="eds") == 1

    # Fixing the config brings the proxy back to SYNCED.
    fixed = store.get(SE, "default", "echo")
    assert fixed is not None
    await store.update(SE, {**fixed, "metadata": {**fixed["metadata"], "annotations": {}}}, actor="test")
    await wait_until(lambda: _synced(server, bad.node_id), what="bad proxy synced after the fix")
