"""The member-cluster controller and Kubernetes sources, in-process, against fake Kubernetes API servers.

Fakes: no Kubernetes API server can run on this machine, so each member cluster is a ``FakeKubeApi``
(tests/integration/test_multicluster_support.py): an aiohttp server on 127.0.0.1 speaking the real list/watch
protocol (resourceVersion resume, in-stream 410 ERROR events, streams dropped mid-way), reached through the real
``kubernetes_asyncio`` client and a real kubeconfig. The store is the real ``MemoryStore`` (``SqliteStore`` in
one test); the xDS server is replaced by ``Hooks``, which aggregates the registries exactly as ``XdsServer`` does.
Waits are event-driven (registry changes, store watch events) with generous safety timeouts; no test asserts
how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from meshplane.kube import KubeSourceFactory, SourceSettings
from meshplane.model.service import RegistrySnapshot, ShardKey
from meshplane.multicluster import MEMBER_CLUSTERS, MemberClusterController
from meshplane.registry import ServiceRegistry, aggregate
from meshplane.store import MemoryStore, SqliteStore, Store
from tests.integration.test_multicluster_support import (
    FakeKubeApi,
    SilentServer,
    endpoint_slice,
    kubeconfig_for,
    populate,
    service,
    slice_endpoint,
)

HOST = "reviews.default.svc.cluster.local"
SAFETY = 30.0  # a hung test fails after this; never an assertion about speed


class Hooks:
    """What XdsServer offers the controller, recording every change and keeping the aggregate snapshot."""

    def __init__(self) -> None:
        self.registries: list[ServiceRegistry] = []
        self.reasons: list[str] = []
        self._changed = asyncio.Event()
        self.snapshot = RegistrySnapshot()

    def add_registry(self, registry: ServiceRegistry) -> None:
        self.registries.append(registry)
        self.registry_changed("registry added")

    def remove_registry(self, registry: ServiceRegistry) -> None:
        self.registries = [r for r in self.registries if r is not registry]
        self.snapshot = aggregate(self.registries)  # withdrawn synchronously, as the next push would see it

    def registry_changed(self, reason: str = "") -> None:
        self.reasons.append(reason)
        self.snapshot = aggregate(self.registries)
        self._changed.set()

    async def until(self, pred: Callable[[RegistrySnapshot], bool], what: str) -> RegistrySnapshot:
        async def wait() -> None:
            while not pred(aggregate(self.registries)):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), SAFETY)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; snapshot hosts: "
                                 f"{ {h: len(e) for h, e in aggregate(self.registries).endpoints.items()} }") from None
        return aggregate(self.registries)


async def until_status(store: Store, name: str, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async def wait() -> dict[str, Any]:
        watch = store.watch(MEMBER_CLUSTERS)
        try:
            async for ev in watch:
                if ev.obj["metadata"]["name"] == name and pred(ev.obj):
                    return dict(ev.obj)
        finally:
            watch.close()
        raise AssertionError("watch ended")

    try:
        return await asyncio.wait_for(wait(), SAFETY)
    except TimeoutError:
        current = store.get(MEMBER_CLUSTERS, "", name)
        raise AssertionError(f"timed out waiting for status of {name}: {current}") from None


def cond(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return {}


def member(name: str, kubeconfig: str = "", **spec: Any) -> dict[str, Any]:
    if kubeconfig:
        spec["kubeconfig"] = kubeconfig
    return {"apiVersion": "meshplane.io/v1", "kind": "MemberCluster", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.start()
    yield s
    await s.close()


@contextlib.asynccontextmanager
async def running(store: Store, **kw: Any) -> AsyncIterator[tuple[MemberClusterController, Hooks]]:
    hooks = Hooks()
    backoff_max = kw.pop("backoff_max", 1.0)
    settings = SourceSettings(request_timeout=kw.pop("connect_timeout", 5.0), backoff_max=backoff_max)
    ctl = MemberClusterController(store, hooks, source_factory=KubeSourceFactory(settings), backoff_max=backoff_max)
    await ctl.start()
    try:
        yield ctl, hooks
    finally:
        await ctl.stop()


@contextlib.asynccontextmanager
async def fake_clusters(n: int) -> AsyncIterator[list[FakeKubeApi]]:
    apis = [await FakeKubeApi(token=f"tok-{i}-s3cr3t-value").start() for i in range(n)]
    try:
        yield apis
    finally:
        for a in apis:
            await a.stop()


def eps_of(snap: RegistrySnapshot, cluster: str) -> set[str]:
    return {e.address for e in snap.endpoints_of(HOST) if e.cluster_id == cluster}


async def test_two_clusters_merge_update_and_withdraw_on_remove(store: MemoryStore,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with fake_clusters(2) as (east, west), running(store) as (ctl, hooks):
        populate(east, cluster="east", region="us-east", zone="us-east-1a", services=["reviews", "ratings"],
                 ip_prefix="10.1")
        populate(west, cluster="west", region="eu-west", zone="eu-west-1b", services=["reviews"], ip_prefix="10.2")
        await store.create(MEMBER_CLUSTERS, member("east", east.kubeconfig(), network="net-1", region="us-east"),
                           actor="t")
        await store.create(MEMBER_CLUSTERS, member("west", west.kubeconfig(), network="net-2"), actor="t")

        snap = await hooks.until(lambda s: eps_of(s, "east") and eps_of(s, "west"), "both clusters' endpoints")
        # One service, endpoints from both clusters, each with its cluster, network, locality, labels and health.
        assert set(snap.services) == {HOST, "ratings.default.svc.cluster.local"}
        assert set(snap.shards[HOST]) == {ShardKey("east", "Kubernetes"), ShardKey("west", "Kubernetes")}
        by_ip = {e.address: e for e in snap.endpoints_of(HOST)}
        assert set(by_ip) == {"10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2"}
        e, w = by_ip["10.1.0.1"], by_ip["10.2.0.1"]
        assert (e.cluster_id, e.network, e.locality.region, e.locality.zone) == ("east", "net-1", "us-east",
                                                                                 "us-east-1a")
        assert (w.cluster_id, w.network, w.locality.region, w.locality.zone) == ("west", "net-2", "eu-west",
                                                                                 "eu-west-1b")
        assert e.labels["app"] == "reviews" and e.service_account == "reviews" and e.healthy

        for name in ("east", "west"):
            obj = await until_status(store, name, lambda o: cond(o, "Synced").get("status") == "True")
            assert cond(obj, "Connected")["status"] == "True" and cond(obj, "Connected")["lastTransitionTime"]
            assert obj["spec"]["kubeconfig"].startswith("apiVersion")  # the spec is kept by status writes
            assert obj["metadata"]["generation"] == 1

        # An EndpointSlice change in one cluster touches that cluster's shard of that host only.
        before = hooks.snapshot
        east.upsert("endpointslices", endpoint_slice("default", "reviews-abc", "reviews", [
            slice_endpoint("10.1.0.1", "reviews-0", node_name="east-node", ready=False),
            slice_endpoint("10.1.0.7", node_name="east-node")]))
        snap = await hooks.until(lambda s: "10.1.0.7" in eps_of(s, "east"), "the east slice update")
        assert snap.services == before.services
        assert snap.shards[HOST][ShardKey("west", "Kubernetes")] == before.shards[HOST][ShardKey("west",
                                                                                                 "Kubernetes")]
        assert not next(x for x in snap.endpoints_of(HOST) if x.address == "10.1.0.1").healthy
        assert snap.endpoints_of("ratings.default.svc.cluster.local") == before.endpoints_of(
            "ratings.default.svc.cluster.local")

        # Deleting a service in one cluster leaves the other cluster's endpoints.
        west.delete("endpointslices", "default", "reviews-abc")
        snap = await hooks.until(lambda s: not eps_of(s, "west"), "west's slice deletion")
        assert eps_of(snap, "east") == {"10.1.0.1", "10.1.0.7"}

        # Removing a member withdraws its endpoints at the watch event: measured, not bounded.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await store.delete(MEMBER_CLUSTERS, "", "east", actor="t")
        assert await asyncio.wait_for(ctl.withdrawn.get(), SAFETY) == "east"
        print(f"withdrawal after delete: {(loop.time() - t0) * 1000:.2f} ms")
        assert not eps_of(hooks.snapshot, "east") and "ratings.default.svc.cluster.local" not in hooks.snapshot.services
        assert ctl.member_names() == ["west"]
        assert hooks.reasons[-1] == "member cluster east removed"
    text = caplog.text
    assert "tok-0-s3cr3t-value" not in text and "tok-1-s3cr3t-value" not in text


async def test_dropped_watch_resumes_from_resource_version_and_410_relists(store: MemoryStore) -> None:
    async with fake_clusters(1) as (api,), running(store) as (ctl, hooks):
        populate(api, cluster="c", region="r", zone="z", services=["reviews"])
        await store.create(MEMBER_CLUSTERS, member("c", api.kubeconfig()), actor="t")
        await hooks.until(lambda s: len(eps_of(s, "c")) == 2, "initial sync")
        await asyncio.wait_for(api.watch_connected.wait(), SAFETY)
        lists = dict(api.lists)

        # Drop every stream mid-way, then change things while the client is away.
        api.drop_watches()
        api.upsert("endpointslices", endpoint_slice("default", "reviews-abc", "reviews", [
            slice_endpoint("10.1.0.1", "reviews-0"), slice_endpoint("10.1.0.2", "reviews-1"),
            slice_endpoint("10.1.0.3")]))
        await hooks.until(lambda s: "10.1.0.3" in eps_of(s, "c"), "the change made while disconnected")
        assert api.lists == lists  # resumed, not relisted
        resumed = api.watches["endpointslices"][-1]
        assert resumed and int(resumed) >= int(api.watches["endpointslices"][0])
        src = ctl.source("c")
        assert src.watch_resumes >= 1 and src.relists_after_gone == 0

        # The history is compacted: open watches get an in-stream 410 and the source lists again.
        await asyncio.wait_for(api.watch_connected.wait(), SAFETY)
        api.compact()
        api.upsert("services", service("default", "details", cluster_ip="10.96.9.9"))
        api.upsert("endpointslices", endpoint_slice("default", "details-1", "details",
                                                    [slice_endpoint("10.1.9.9")]))
        snap = await hooks.until(lambda s: s.endpoints_of("details.default.svc.cluster.local"), "after the 410")
        assert api.lists["services"] > lists["services"] and src.relists_after_gone >= 1
        assert eps_of(snap, "c") == {"10.1.0.1", "10.1.0.2", "10.1.0.3"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_clusters_report_errors_and_never_stall_others(store: MemoryStore,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    silent = await SilentServer().start()
    try:
        async with fake_clusters(1) as (good,), running(store, connect_timeout=0.5) as (_ctl, hooks):
            populate(good, cluster="good", region="r", zone="z", services=["reviews"])
            dead_cfg = kubeconfig_for(f"http://127.0.0.1:{_closed_port()}", "dead-token-s3cr3t")
            silent_cfg = kubeconfig_for(f"http://127.0.0.1:{silent.port}", "silent-token-s3cr3t")
            await store.create(MEMBER_CLUSTERS, member("dead", dead_cfg), actor="t")
            await store.create(MEMBER_CLUSTERS, member("silent", silent_cfg), actor="t")
            await store.create(MEMBER_CLUSTERS, member("good", good.kubeconfig()), actor="t")

            dead = await until_status(store, "dead", lambda o: bool((o.get("status") or {}).get("lastError")))
            hung = await until_status(store, "silent", lambda o: bool((o.get("status") or {}).get("lastError")))
            for obj in (dead, hung):
                assert cond(obj, "Connected")["status"] == "False" and cond(obj, "Synced")["status"] == "False"
                assert cond(obj, "Connected")["reason"] == "Unreachable"
            assert "timed out" in hung["status"]["lastError"]
            assert "127.0.0.1" in dead["status"]["lastError"] or "Connect" in dead["status"]["lastError"]

            # The good cluster syncs and keeps flowing while the others keep failing.
            await hooks.until(lambda s: len(eps_of(s, "good")) == 2, "the good cluster")
            for i in range(3):
                good.upsert("endpointslices", endpoint_slice("default", "reviews-abc", "reviews", [
                    slice_endpoint(f"10.9.0.{k}") for k in range(1, i + 3)]))
                await hooks.until(lambda s, n=i + 2: len(eps_of(s, "good")) == n, f"update {i}")
            assert {e.cluster_id for e in hooks.snapshot.endpoints_of(HOST)} == {"good"}
        text = caplog.text
        assert "dead-token-s3cr3t" not in text and "silent-token-s3cr3t" not in text
    finally:
        await silent.stop()


async def test_local_member_and_sqlite_status(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "store.db")
    await s.start()
    try:
        async with running(s) as (ctl, hooks):
            await s.create(MEMBER_CLUSTERS, member("local-east", local=True, region="r1", zone="z1", network="n1"),
                           actor="t")
            obj = await until_status(s, "local-east", lambda o: cond(o, "Connected").get("status") == "True")
            assert cond(obj, "Connected")["reason"] == "Local" and cond(obj, "Synced")["status"] == "True"
            assert obj["metadata"]["generation"] == 1 and obj["status"]["observedGeneration"] == 1
            assert hooks.registries == []  # endpoints of local members come from WorkloadEntries
            # A spec change restarts nothing but is observed in status.
            obj = dict(s.get(MEMBER_CLUSTERS, "", "local-east") or {})
            obj["spec"] = {**obj["spec"], "zone": "z2"}
            await s.update(MEMBER_CLUSTERS, obj, actor="t")
            obj = await until_status(s, "local-east", lambda o: o.get("status", {}).get("observedGeneration") == 2)
            assert ctl.member_names() == ["local-east"]
    finally:
        await s.close()


async def test_bad_kubeconfig_and_wrong_token_are_errors_not_crashes(store: MemoryStore,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with fake_clusters(1) as (api,), running(store) as (ctl, _hooks):
        await store.create(MEMBER_CLUSTERS, member("garbage", "not: [valid"), actor="t")
        await store.create(MEMBER_CLUSTERS, member("nocfg"), actor="t")
        await store.create(MEMBER_CLUSTERS, member("wrong", kubeconfig_for(api.url, "wrong-token-s3cr3t")),
                           actor="t")
        garbage = await until_status(store, "garbage", lambda o: bool(o.get("status", {}).get("lastError")))
        assert "YAML" in garbage["status"]["lastError"]
        nocfg = await until_status(store, "nocfg", lambda o: bool(o.get("status", {}).get("lastError")))
        assert cond(nocfg, "Connected")["reason"] == "InvalidSpec"
        wrong = await until_status(store, "wrong", lambda o: bool(o.get("status", {}).get("lastError")))
        assert "401" in wrong["status"]["lastError"] and api.unauthorized >= 1
        assert "wrong-token-s3cr3t" not in str(wrong["status"])
        # Fixing the credentials (a spec change) restarts the source, which then connects.
        fixed = dict(store.get(MEMBER_CLUSTERS, "", "wrong") or {})
        fixed["spec"] = {"kubeconfig": api.kubeconfig()}
        await store.update(MEMBER_CLUSTERS, fixed, actor="t")
        obj = await until_status(store, "wrong", lambda o: cond(o, "Synced").get("status") == "True")
        assert "lastError" not in obj["status"] and ctl.state("wrong").connected  # type: ignore[union-attr]
    assert "wrong-token-s3cr3t" not in caplog.text


class _Stubborn:
    """A registry source whose run() ignores cancellation until ``release`` is set (a cancel lost below it)."""

    def __init__(self, defaults: Any, release: asyncio.Event) -> None:
        self.cluster_id = defaults.cluster_id
        self.source = "Kubernetes"
        self._release = release
        self.running = asyncio.Event()

    def services(self) -> tuple[()]:
        return ()

    def endpoints(self) -> dict[str, Any]:
        return {}

    async def run(self) -> None:
        self.running.set()
        while not self._release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self._release.wait()


async def test_stop_is_bounded_when_a_source_ignores_cancellation(store: MemoryStore,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()
    sources: dict[str, _Stubborn] = {}

    def factory(defaults: Any, kubeconfig: str, selectors: Any, on_change: Any, on_status: Any) -> _Stubborn:
        sources[defaults.cluster_id] = _Stubborn(defaults, release)
        return sources[defaults.cluster_id]

    ctl = MemberClusterController(store, Hooks(), source_factory=factory, stop_timeout=0.5)
    await ctl.start()
    try:
        await store.create(MEMBER_CLUSTERS, member("a", "kubeconfig-a"), actor="t")
        await store.create(MEMBER_CLUSTERS, member("b", "kubeconfig-b"), actor="t")
        await asyncio.wait_for(asyncio.gather(*(s.running.wait() for s in list(sources.values()))), SAFETY)
        # Member b's spec changes: its old source is withdrawn (cancelled, and it does not end).
        old_b = sources["b"]
        obj = dict(store.get(MEMBER_CLUSTERS, "", "b") or {})
        obj["spec"] = {"kubeconfig": "kubeconfig-b2"}
        await store.update(MEMBER_CLUSTERS, obj, actor="t")
        assert await asyncio.wait_for(ctl.withdrawn.get(), SAFETY) == "b"
        await asyncio.wait_for(sources["b"].running.wait(), SAFETY)
        assert sources["b"] is not old_b
        await asyncio.wait_for(ctl.stop(), SAFETY)  # returns after stop_timeout, not never
        assert ctl.member_names() == []
        assert "did not stop within" in caplog.text
    finally:
        release.set()  # let the stubborn tasks end before the loop closes
        await asyncio.sleep(0)
