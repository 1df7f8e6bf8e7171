"""EnvoyFilter through real Envoys: Istio's reference examples change what the proxies do, and a patch Envoy rejects
is isolated (the proxy keeps its last good config) and shown on the EnvoyFilter's status.

One mesh (a ``reviews`` server sidecar and a ``sleep`` client sidecar, mTLS from meshplane's CA) is shared by the
steps: a Lua filter INSERT_BEFORE the router on the server's inbound port (request and response headers), a
cluster MERGE of ``connect_timeout`` on the client's outbound cluster, a listener REMOVE of the inbound port, and a
MERGE Envoy refuses (``lb_policy: CLUSTER_PROVIDED`` on an EDS cluster). Objects are written to the store directly,
as the API stores them after admission.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy_harness import wait_until
from security_mesh import REVIEWS, SecurityMesh

from meshplane.model import xdstypes
from meshplane.store import GroupResource
from meshplane.xds.filterstatus import EnvoyFilterStatus, rejection_messages

pytestmark = pytest.mark.envoy

EF = GroupResource("networking.istio.io", "envoyfilters")

LUA = """function envoy_on_request(request_handle)
  request_handle:headers():add("x-lua-request", "inbound")
end
function envoy_on_response(response_handle)
  response_handle:headers():add("x-lua-inbound", "reviews")
end
"""


def envoy_filter(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


REVIEWS_LUA = envoy_filter("reviews-lua", {
    "workloadSelector": {"labels": {"app": "reviews"}},
    "configPatches": [{
        "applyTo": "HTTP_FILTER",
        "match": {"context": "SIDECAR_INBOUND", "listener": {"portNumber": 8080, "filterChain": {"filter": {
            "name": "envoy.filters.network.http_connection_manager",
            "subFilter": {"name": "envoy.filters.http.router"}}}}},
        "patch": {"operation": "INSERT_BEFORE", "value": {
            "name": "envoy.lua",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                             "inlineCode": LUA}}}}]})

CONNECT_TIMEOUT = envoy_filter("sleep-connect-timeout", {
    "workloadSelector": {"labels": {"app": "sleep"}},
    "configPatches": [{
        "applyTo": "CLUSTER",
        "match": {"context": "SIDECAR_OUTBOUND", "cluster": {"service": REVIEWS, "portNumber": 80}},
        "patch": {"operation": "MERGE", "value": {"connect_timeout": "0.5s"}}}]})

REMOVE_INBOUND = envoy_filter("reviews-no-inbound", {
    "workloadSelector": {"labels": {"app": "reviews"}},
    "configPatches": [{
        "applyTo": "LISTENER",
        "match": {"context": "SIDECAR_INBOUND", "listener": {"portNumber": 8080}},
        "patch": {"operation": "REMOVE"}}]})

REJECTED = envoy_filter("sleep-bad-timeout", {
    "workloadSelector": {"labels": {"app": "sleep"}},
    "configPatches": [{
        "applyTo": "CLUSTER",
        "match": {"context": "SIDECAR_OUTBOUND", "cluster": {"service": REVIEWS}},
        "patch": {"operation": "MERGE", "value": {"lb_policy": "CLUSTER_PROVIDED"}}}]})


async def _cluster(sec: SecurityMesh, client: str, name: str) -> dict[str, Any]:
    dump = await sec.workloads[client].envoy.config_dump()
    for section in dump["configs"]:
        for c in section.get("dynamic_active_clusters", []):
            if c["cluster"]["name"] == name:
                cluster: dict[str, Any] = c["cluster"]
                return cluster
    return {}


async def test_istio_examples_change_envoy_and_a_rejected_patch_is_isolated(sec: SecurityMesh) -> None:
    reviews = await sec.workload("reviews")
    await sec.workload("sleep", serve=False)
    await sec.synced()
    await sec.eventually("sleep", "/", 200)
    sleep = sec.workloads["sleep"].envoy
    url = f"http://{sleep.listen_host}:15001/lua"

    # Lua on the inbound side, before the router (Istio's reviews-lua example, its Lua adding headers).
    await sec.store.create(EF, REVIEWS_LUA, actor="test")
    await sec.synced()

    async def lua_header() -> bool:
        status, _, headers = await sec.h.get(url, host=REVIEWS)
        return status == 200 and headers.get("x-lua-inbound") == "reviews"

    await wait_until(lua_header, what="the Lua filter's response header")
    assert reviews.backend is not None
    assert reviews.backend.requests[-1][2].get("x-lua-request") == "inbound", "the app sees the Lua request header"

    # A cluster MERGE of connect_timeout on the client's outbound cluster (and no other cluster).
    name = f"outbound|80||{REVIEWS}"
    assert (await _cluster(sec, "sleep", name)).get("connect_timeout") != "0.500s"
    await sec.store.create(EF, CONNECT_TIMEOUT, actor="test")
    await sec.synced()

    async def merged() -> bool:
        return (await _cluster(sec, "sleep", name)).get("connect_timeout") == "0.500s"

    await wait_until(merged, what="connect_timeout merged")
    assert await sec.call("sleep", "/") == 200

    # A listener REMOVE: the server's inbound port is gone, so calls to it fail until the EnvoyFilter goes.
    await sec.store.create(EF, REMOVE_INBOUND, actor="test")
    await sec.synced()
    await wait_until(lambda: _is(sec.plaintext("reviews", "/"), 0), what="inbound listener removed")
    assert await sec.call("sleep", "/") != 200
    await sec.store.delete(EF, "default", "reviews-no-inbound", actor="test")
    await sec.synced()
    await sec.eventually("sleep", "/", 200)

    # A patch Envoy rejects: the client NACKs CDS, keeps its last good clusters (traffic flows, the merged
    # timeout stays), and the EnvoyFilter's status names the proxy and Envoy's error.
    status_writer = EnvoyFilterStatus(sec.store, sec.server)
    await sec.store.create(EF, REJECTED, actor="test")
    await sec.server.wait_idle()

    async def rejected() -> bool:
        return any(r.type_url == xdstypes.CLUSTER and "default/sleep-bad-timeout" in r.sources
                   for r in sec.server.rejections())

    await wait_until(rejected, what="the client rejects the patched clusters")
    assert await sec.call("sleep", "/") == 200
    assert await merged(), "the proxy keeps its last accepted clusters"
    await status_writer.reconcile()
    obj = sec.store.get(EF, "default", "sleep-bad-timeout")
    assert obj is not None
    cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Applied")
    assert cond["status"] == "False" and cond["reason"] == "Rejected"
    assert sleep.node_id in cond["message"] and "rejected CDS" in cond["message"]
    assert "cluster provided LB" in cond["message"], cond["message"]  # Envoy's own words
    (analyzed,) = [m for m in rejection_messages(sec.server.rejections())
                   if m.resource.friendly == "EnvoyFilter default/sleep-bad-timeout"]
    assert analyzed.type.code == "MPL0101" and sleep.node_id in analyzed.text  # meshplane analyze says it too
    good = sec.store.get(EF, "default", "reviews-lua")
    assert good is not None
    assert next(c for c in good["status"]["conditions"] if c["type"] == "Applied")["status"] == "True"

    await sec.store.delete(EF, "default", "sleep-bad-timeout", actor="test")
    await sec.server.wait_idle()

    async def accepted() -> bool:
        return not sec.server.rejections()

    await wait_until(accepted, what="the client accepts its clusters again")
    await status_writer.reconcile()
    assert sec.store.get(EF, "default", "sleep-bad-timeout") is None
    assert await sec.call("sleep", "/") == 200


async def _is(coro: Any, expected: object) -> bool:
    return bool(await coro == expected)
