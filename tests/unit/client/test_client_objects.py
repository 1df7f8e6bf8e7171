"""The client's object calls against the real API server (in process, a memory store, 127.0.0.1): paths from the
kind registry, bearer token, merge patch of the status subresource, create-or-replace, and the Status answers of
the API mapped to NotFound, Conflict and Refused with their messages."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from meshplane.client import Client, Conflict, InvalidRequest, NotFound, Refused, Unreachable
from tests.support.server import in_process_api

TOKEN = "client-test-token"
WE = ("networking.istio.io/v1", "WorkloadEntry")


@pytest.fixture
async def api() -> AsyncIterator[str]:
    async with in_process_api({TOKEN: "admin"}) as url:
        yield url


def workload_entry(name: str, address: str = "127.0.0.5", namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"address": address}}


async def test_create_get_list_replace_patch_delete(api: str) -> None:
    async with Client(api, token=TOKEN) as c:
        created = await c.create(workload_entry("web-0"))
        assert created["metadata"]["namespace"] == "default" and created["metadata"]["resourceVersion"]
        got = await c.get(*WE, "web-0", "default")
        assert got["spec"]["address"] == "127.0.0.5"
        await c.create(workload_entry("web-1", namespace="other"))
        assert [o["metadata"]["name"] for o in await c.list(*WE)] == ["web-0"]  # namespace defaults to default
        assert [o["metadata"]["name"] for o in await c.list(*WE, "other")] == ["web-1"]

        got["spec"]["address"] = "127.0.0.6"
        replaced = await c.replace(got)
        assert replaced["spec"]["address"] == "127.0.0.6"

        patched = await c.patch(*WE, "web-0", {"status": {"conditions": [{"type": "Healthy", "status": "False"}]}},
                                subresource="status")
        assert patched["status"]["conditions"][0]["status"] == "False"
        assert patched["spec"]["address"] == "127.0.0.6"  # the status subresource leaves the spec alone

        await c.delete(*WE, "web-0")
        with pytest.raises(NotFound) as e:
            await c.get(*WE, "web-0")
        assert str(e.value).startswith("get WorkloadEntry default/web-0: HTTP 404: ")
        assert 'workloadentries.networking.istio.io "web-0" not found' in str(e.value)
        with pytest.raises(NotFound):
            await c.delete(*WE, "web-0")


async def test_cluster_scoped_and_core_kinds(api: str) -> None:
    async with Client(api, token=TOKEN) as c:
        mc = {"apiVersion": "meshplane.io/v1", "kind": "MemberCluster",
              "metadata": {"name": "east", "namespace": "ignored"}, "spec": {"local": True, "region": "r",
                                                                             "zone": "z"}}
        assert "namespace" not in (await c.create(mc))["metadata"]
        assert [o["metadata"]["name"] for o in await c.list("meshplane.io/v1", "MemberCluster")] == ["east"]
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns1"},
                  "type": "Opaque", "data": {}}
        await c.create(secret)  # /api/v1/namespaces/ns1/secrets
        assert [o["metadata"]["name"] for o in await c.list("v1", "Secret", "ns1")] == ["s"]


async def test_apply_creates_then_replaces_at_the_live_version(api: str) -> None:
    async with Client(api, token=TOKEN) as c:
        assert await c.apply(workload_entry("web-0")) == "created"
        assert await c.apply(workload_entry("web-0", "127.0.0.9")) == "configured"
        assert (await c.get(*WE, "web-0"))["spec"]["address"] == "127.0.0.9"


async def test_conflicts_and_refusals_carry_the_apis_status(api: str) -> None:
    async with Client(api, token=TOKEN) as c:
        await c.create(workload_entry("web-0"))
        with pytest.raises(Conflict) as conflict:
            await c.create(workload_entry("web-0"))
        assert conflict.value.code == 409 and conflict.value.reason == "AlreadyExists"
        assert "create WorkloadEntry default/web-0: HTTP 409: " in str(conflict.value)

        stale = await c.get(*WE, "web-0")
        await c.replace({**stale, "spec": {"address": "127.0.0.7"}})
        with pytest.raises(Conflict):
            await c.replace({**stale, "spec": {"address": "127.0.0.8"}})  # its resourceVersion is not the live one

        bad = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": "bad"}, "spec": {"hosts": [], "http": "no"}}
        with pytest.raises(Refused) as refused:
            await c.create(bad)
        e = refused.value
        assert type(e) is Refused and e.code == 422 and e.reason == "Invalid" and e.status is not None
        assert str(e).startswith("create VirtualService default/bad: HTTP 422: ")
        assert e.message in str(e) and "is invalid" in e.message


async def test_the_bearer_token_is_sent_and_a_wrong_one_refused(api: str) -> None:
    async with Client(api, token="wrong") as c:
        with pytest.raises(Refused) as e:
            await c.list(*WE)
        assert e.value.code == 401 and str(e.value) == "list WorkloadEntry in default: HTTP 401: Unauthorized"
        assert "wrong" not in str(e.value) and "wrong" not in repr(c) + repr(c.transport)
    async with Client(api) as c:
        assert not await c.serving()  # /api needs the token too
    async with Client(api, token=TOKEN) as c:
        assert await c.serving()


async def test_a_kind_the_api_does_not_serve_sends_nothing() -> None:
    async with Client("http://127.0.0.1:1") as c:  # nothing listens there: any request would be Unreachable
        with pytest.raises(InvalidRequest, match=r"create Widget: kind not served by the API \(example.com/v1\)"):
            await c.create({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
        with pytest.raises(InvalidRequest, match="not served"):
            await c.get("networking.istio.io/v9", "WorkloadEntry", "x")
        with pytest.raises(InvalidRequest, match=r"create WorkloadEntry: metadata\.name is required"):
            await c.create({"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry", "metadata": {}})


async def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    async with Client(f"http://127.0.0.1:{port}/") as c:
        assert c.base == f"http://127.0.0.1:{port}"
        with pytest.raises(Unreachable) as e:
            await c.delete(*WE, "web-0")
        assert str(e.value).startswith(f"delete WorkloadEntry default/web-0: cannot reach the meshplane API at "
                                       f"http://127.0.0.1:{port} (")
        assert not await c.serving()


async def test_a_session_handed_in_stays_open(api: str) -> None:
    async with aiohttp.ClientSession() as session:
        c = Client(api, token=TOKEN, session=session)
        await c.create(workload_entry("web-0"))
        await c.close()
        assert not session.closed
    own = Client(api, token=TOKEN)
    await own.list(*WE)
    session_of = own.transport._session
    await own.close()
    assert session_of is not None and session_of.closed
