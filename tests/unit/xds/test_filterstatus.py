"""The EnvoyFilters' Applied writer and the status writer over one MemoryStore: each keeps the other's condition,
and neither rewrites what it wrote before (no write loop between them); rejections as ``meshplane analyze``
messages, on the analysis endpoint."""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from meshplane.cli.analyze_api import analyze_routes
from meshplane.model import xdstypes
from meshplane.model.config import ConfigSnapshot
from meshplane.model.resources import ENVOY_FILTERS
from meshplane.model.service import RegistrySnapshot
from meshplane.model.spec import decode_resource
from meshplane.statuswriter import StatusWriter
from meshplane.store import MemoryStore
from meshplane.xds.filterstatus import EnvoyFilterStatus, rejection_messages
from meshplane.xds.server import XdsServer
from meshplane.xds.status import Rejection

EF = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
      "metadata": {"name": "bad", "namespace": "default"},
      "spec": {"configPatches": [{"applyTo": "CLUSTER", "patch": {"operation": "MERGE",
                                                                   "value": {"lb_policy": "CLUSTER_PROVIDED"}}}]}}


class _Server:
    def __init__(self) -> None:
        self.list: list[Rejection] = []

    def rejections(self) -> list[Rejection]:
        return self.list


def _view(store: MemoryStore) -> Any:
    async def view() -> tuple[ConfigSnapshot, RegistrySnapshot]:
        objs = {ENVOY_FILTERS: tuple(decode_resource(ENVOY_FILTERS, o) for o in store.list(ENVOY_FILTERS)[0])}
        return ConfigSnapshot(store.current_rv, objs), RegistrySnapshot()

    return view


def _conditions(store: MemoryStore) -> dict[str, dict[str, Any]]:
    obj = store.get(ENVOY_FILTERS, "default", "bad")
    assert obj is not None
    return {c["type"]: c for c in obj["status"]["conditions"]}


async def test_applied_and_reconciled_stand_side_by_side() -> None:
    store = MemoryStore()
    await store.start()
    await store.create(ENVOY_FILTERS, EF, actor="t")
    server = _Server()
    applied = EnvoyFilterStatus(store, cast(XdsServer, server))
    writer = StatusWriter(store, _view(store))

    await applied.reconcile()
    assert await writer.run_once() == 1
    conds = _conditions(store)
    assert (conds["Applied"]["status"], conds["Reconciled"]["status"]) == ("True", "True")

    server.list = [Rejection("sleep-1", "default", "sleep", xdstypes.CLUSTER, "cluster provided LB", ("default/bad",))]
    rv = store.current_rv
    await applied.reconcile()
    assert store.current_rv == rv + 1
    assert await writer.run_once() == 0  # Applied changed; Reconciled is kept, nothing to write
    conds = _conditions(store)
    assert conds["Applied"]["status"] == "False" and "sleep-1" in conds["Applied"]["message"]
    assert conds["Reconciled"]["status"] == "True"
    await applied.reconcile()
    assert store.current_rv == rv + 1  # unchanged: not written again
    obj = store.get(ENVOY_FILTERS, "default", "bad")
    assert obj is not None and obj["metadata"]["generation"] == 1


def test_rejections_are_analysis_messages_of_their_source() -> None:
    rejections = [Rejection("sleep-1", "default", "sleep", xdstypes.CLUSTER, "cluster provided LB", ("default/bad",)),
                  Rejection("gw-1", "istio-system", "gw", xdstypes.LISTENER, "bad filter",
                            ("ASMLocalRateLimiter default/rl",))]
    msgs = {m.resource.friendly: m for m in rejection_messages(rejections)}
    bad = msgs["EnvoyFilter default/bad"]
    assert bad.type.code == "MPL0101" and bad.type.level.title == "Error"
    assert bad.text == ("proxy sleep-1 (default/sleep) rejected the CDS configuration this patches: cluster provided "
                        "LB; it keeps its last accepted configuration")
    assert "rejected the LDS" in msgs["ASMLocalRateLimiter default/rl"].text


async def test_analyze_endpoint_adds_the_live_rejections() -> None:
    store = MemoryStore()
    await store.start()
    await store.create(ENVOY_FILTERS, EF, actor="t")
    live = [Rejection("sleep-1", "default", "sleep", xdstypes.CLUSTER, "cluster provided LB", ("default/bad",))]
    app = web.Application()
    app.add_routes(analyze_routes(_view(store), lambda: "istio-system", lambda: rejection_messages(live)))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        body = await (await client.get("/management/v1/analyze")).json()
        assert [(i["code"], i["resource"]["name"]) for i in body["items"]] == [("MPL0101", "bad")]
        other = await (await client.get("/management/v1/analyze?namespace=other")).json()
        assert other["items"] == []
