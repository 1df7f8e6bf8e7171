"""The official ``kubernetes`` Python client against a running server: CRUD, conflicts, watch and 410 relist."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.support.server import ServerProcess, start_server

G, V, NS, PLURAL = "networking.istio.io", "v1", "default", "destinationrules"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """Without the status writer: these tests count a watch's events exactly, and its status writes are more."""
    data = tmp_path / "data"
    data.mkdir()
    srv = start_server(data, "--no-status")
    try:
        yield srv
    finally:
        srv.stop()


def _api(server: ServerProcess) -> client.CustomObjectsApi:
    cfg = client.Configuration()
    cfg.host = server.url
    return client.CustomObjectsApi(client.ApiClient(cfg))


def _dr(name: str, host: str = "reviews") -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "DestinationRule",
        "metadata": {"name": name},
        "spec": {"host": host, "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
    }


def test_create_list_patch_replace_conflict(server: ServerProcess) -> None:
    api = _api(server)
    created = api.create_namespaced_custom_object(G, V, NS, PLURAL, _dr("a"))
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    with pytest.raises(ApiException) as e:
        api.create_namespaced_custom_object(G, V, NS, PLURAL, _dr("a"))
    assert e.value.status == 409 and "already exists" in e.value.body
    api.create_namespaced_custom_object(G, V, NS, PLURAL, _dr("b", "ratings"))
    listed = api.list_namespaced_custom_object(G, V, NS, PLURAL)
    assert listed["kind"] == "DestinationRuleList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]
    assert [i["metadata"]["name"] for i in api.list_cluster_custom_object(G, V, PLURAL)["items"]] == ["a", "b"]

    patched = api.patch_namespaced_custom_object(G, V, NS, PLURAL, "a", {"spec": {"host": "details"}})
    assert patched["spec"]["host"] == "details" and patched["metadata"]["generation"] == 2
    api.api_client.set_default_header("Content-Type", "application/json-patch+json")
    jp = api.patch_namespaced_custom_object(
        G,
        V,
        NS,
        PLURAL,
        "a",
        [{"op": "replace", "path": "/spec/host", "value": "productpage"}],
        _content_type="application/json-patch+json",
    )
    assert jp["spec"]["host"] == "productpage"

    stale = dict(created)
    stale["spec"] = {"host": "x"}
    with pytest.raises(ApiException) as e:
        api.replace_namespaced_custom_object(G, V, NS, PLURAL, "a", stale)
    assert e.value.status == 409 and "the object has been modified" in e.value.body
    fresh = api.get_namespaced_custom_object(G, V, NS, PLURAL, "a")
    fresh["spec"]["host"] = "x"
    replaced = api.replace_namespaced_custom_object(G, V, NS, PLURAL, "a", fresh)
    assert replaced["spec"]["host"] == "x"

    with pytest.raises(ApiException) as e:
        api.get_namespaced_custom_object(G, V, NS, PLURAL, "nope")
    assert e.value.status == 404 and 'destinationrules.networking.istio.io \\"nope\\" not found' in e.value.body


def test_watch_replays_then_streams_with_bookmarks(server: ServerProcess) -> None:
    api = _api(server)
    api.create_namespaced_custom_object(G, V, NS, PLURAL, _dr("a"))
    rv = api.list_namespaced_custom_object(G, V, NS, PLURAL)["metadata"]["resourceVersion"]
    api.patch_namespaced_custom_object(G, V, NS, PLURAL, "a", {"spec": {"host": "details"}})

    def later() -> None:
        time.sleep(0.5)
        api.create_namespaced_custom_object(G, V, NS, PLURAL, _dr("c"))
        api.delete_namespaced_custom_object(G, V, NS, PLURAL, "c")

    t = threading.Thread(target=later)
    t.start()
    seen: list[tuple[str, str]] = []
    w = watch.Watch()
    for ev in w.stream(
        api.list_namespaced_custom_object,
        G,
        V,
        NS,
        PLURAL,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=3,
    ):
        seen.append((ev["type"], ev["object"]["metadata"]["name"] if ev["type"] != "BOOKMARK" else ""))
        if len([s for s in seen if s[0] != "BOOKMARK"]) == 3:
            w.stop()
    t.join()
    assert [s for s in seen if s[0] != "BOOKMARK"] == [("MODIFIED", "a"), ("ADDED", "c"), ("DELETED", "c")]


def test_watch_from_compacted_history_gets_410_and_relists(tmp_path: Any) -> None:
    data = tmp_path / "d"
    data.mkdir()
    srv = start_server(data, "--history-limit", "5", "--no-status")
    try:
        api = _api(srv)
        api.create_namespaced_custom_object(G, V, NS, PLURAL, _dr("a"))
        old_rv = api.list_namespaced_custom_object(G, V, NS, PLURAL)["metadata"]["resourceVersion"]
        for i in range(12):
            api.patch_namespaced_custom_object(G, V, NS, PLURAL, "a", {"metadata": {"labels": {"n": str(i)}}})
        with pytest.raises(ApiException) as e:
            for _ in watch.Watch().stream(
                api.list_namespaced_custom_object, G, V, NS, PLURAL, resource_version=old_rv, timeout_seconds=2
            ):
                pass
        assert e.value.status == 410 and "too old resource version" in str(e.value)
        # the client's answer to 410: relist, then watch from the new list's version
        listed = api.list_namespaced_custom_object(G, V, NS, PLURAL)
        assert listed["items"][0]["metadata"]["labels"] == {"n": "11"}
        events = list(
            watch.Watch().stream(
                api.list_namespaced_custom_object,
                G,
                V,
                NS,
                PLURAL,
                resource_version=listed["metadata"]["resourceVersion"],
                timeout_seconds=1,
            )
        )
        assert events == []
    finally:
        srv.stop()
