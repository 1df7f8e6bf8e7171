"""The HTTP API directly: bad input, limits, discovery documents, authentication, audit, and durability."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.support.promtext import value
from tests.support.server import ServerProcess, start_server

VS_PATH = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"


def call(
    url: str, method: str, path: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        data = body.encode() if isinstance(body, str) else body
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed
    finally:
        conn.close()


def vs(name: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name},
            "spec": spec or {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
        }
    )


JSON = {"Content-Type": "application/json"}


def test_bad_input_is_refused_with_a_status_naming_the_problem(server: ServerProcess) -> None:
    url = server.url
    code, _, body = call(url, "POST", VS_PATH, "{not json", JSON)
    assert code == 400 and body["kind"] == "Status" and body["reason"] == "BadRequest"
    assert "could not be decoded" in body["message"]

    apply_yaml = {"Content-Type": "application/apply-patch+yaml"}
    code, _, body = call(url, "PATCH", VS_PATH + "/y?fieldManager=me", "spec: [unclosed\n  - : :", apply_yaml)
    assert code == 400 and "could not be decoded as YAML" in body["message"]

    code, _, body = call(url, "POST", VS_PATH, vs("t", hosts="reviews"), JSON)
    assert code == 422 and body["reason"] == "Invalid"
    assert any(c["field"] == "spec.hosts" for c in body["details"]["causes"])

    code, _, body = call(
        url, "POST", VS_PATH + "?fieldValidation=Strict", vs("u", hosts=["reviews"], hostz=["x"]), JSON
    )
    assert code == 400 and 'unknown field "spec.hostz"' in body["message"]

    regex = {
        "hosts": ["reviews"],
        "http": [{"match": [{"uri": {"regex": "(unclosed"}}], "route": [{"destination": {"host": "reviews"}}]}],
    }
    code, _, body = call(url, "POST", VS_PATH, vs("r", **regex), JSON)
    assert code == 422 and any("uri" in c["field"] for c in body["details"]["causes"])

    weights = {
        "hosts": ["reviews"],
        "http": [
            {
                "route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 40},
                ]
            }
        ],
    }
    code, _, body = call(url, "POST", VS_PATH, vs("w", **weights), JSON)
    assert code == 422 and body["details"]["kind"] == "VirtualService" and body["details"]["name"] == "w"

    huge = vs(
        "h",
        hosts=["reviews"],
        http=[{"route": [{"destination": {"host": "reviews"}}], "name": "x" * (4 * 1024 * 1024)}],
    )
    code, _, body = call(url, "POST", VS_PATH, huge, JSON)
    assert code == 413 and body["reason"] == "RequestEntityTooLarge"

    code, _, body = call(url, "POST", "/apis/networking.istio.io/v1/namespaces/default/virtualfoos", vs("x"), JSON)
    assert code == 404 and body["kind"] == "Status"
    code, _, body = call(
        url,
        "POST",
        VS_PATH,
        json.dumps({"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g"}}),
        JSON,
    )
    assert code == 400 and "does not match" in body["message"]

    # none of that stored anything
    code, _, body = call(url, "GET", VS_PATH)
    assert code == 200 and body["items"] == []


def test_existing_object_survives_a_bad_update(server: ServerProcess) -> None:
    url = server.url
    assert call(url, "POST", VS_PATH, vs("keep"), JSON)[0] == 201
    code, _, before = call(url, "GET", VS_PATH + "/keep")
    bad = {
        "spec": {
            "http": [
                {
                    "route": [
                        {"destination": {"host": "reviews"}, "weight": 30},
                        {"destination": {"host": "ratings"}, "weight": 30},
                    ]
                }
            ]
        }
    }
    code, _, _ = call(
        url, "PATCH", VS_PATH + "/keep", json.dumps(bad), {"Content-Type": "application/merge-patch+json"}
    )
    assert code == 422
    _, _, after = call(url, "GET", VS_PATH + "/keep")
    assert after == before


def test_discovery_forms(server: ServerProcess) -> None:
    agg = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    code, headers, body = call(server.url, "GET", "/apis", headers={"Accept": agg})
    assert code == 200 and headers["content-type"].startswith(
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    groups = {i["metadata"]["name"]: i for i in body["items"]}
    assert [v["version"] for v in groups["networking.istio.io"]["versions"]] == ["v1", "v1beta1", "v1alpha3"]
    code, _, legacy = call(server.url, "GET", "/apis", headers={"Accept": "application/json"})
    assert legacy["kind"] == "APIGroupList"
    code, _, rl = call(server.url, "GET", "/apis/security.istio.io/v1")
    assert "authorizationpolicies" in [r["name"] for r in rl["resources"]]
    code, _, oa = call(server.url, "GET", "/openapi/v3")
    assert "apis/networking.istio.io/v1" in oa["paths"]
    code, _, doc = call(server.url, "GET", "/openapi/v3/apis/networking.istio.io/v1")
    patch_op = doc["paths"]["/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices/{name}"]["patch"]
    assert {"name": "fieldValidation", "in": "query"}.items() <= patch_op["parameters"][2].items()
    assert "application/strategic-merge-patch+json" not in patch_op["requestBody"]["content"]
    assert call(server.url, "GET", "/version")[2]["major"] == "1"


def test_audit_trail_records_every_change(server: ServerProcess) -> None:
    url = server.url
    call(url, "POST", VS_PATH, vs("a"), JSON)
    call(
        url,
        "PATCH",
        VS_PATH + "/a",
        json.dumps({"spec": {"gateways": ["mesh"]}}),
        {"Content-Type": "application/merge-patch+json"},
    )
    call(
        url,
        "PATCH",
        VS_PATH + "/a",
        json.dumps({"metadata": {"labels": {"x": "y"}}}),
        {"Content-Type": "application/merge-patch+json"},
    )
    call(url, "DELETE", VS_PATH + "/a")
    _, _, audit = call(url, "GET", "/management/v1/audit")
    rows = [(r["verb"], r["name"], r["oldGeneration"], r["newGeneration"]) for r in audit["items"]]
    assert rows == [("create", "a", None, 1), ("update", "a", 1, 2), ("update", "a", 2, 2), ("delete", "a", 2, None)]
    assert all(r["user"].startswith("system:anonymous") and r["timestamp"] for r in audit["items"])


def test_metrics_count_requests_by_verb_resource_and_code_and_store_writes(server: ServerProcess) -> None:
    url = server.url
    assert call(url, "POST", VS_PATH, vs("a"), JSON)[0] == 201
    assert call(url, "POST", VS_PATH, vs("bad", hosts=[], http="x"), JSON)[0] == 422
    assert call(url, "GET", VS_PATH + "/a")[0] == 200
    assert call(url, "GET", VS_PATH)[0] == 200
    merge = {"Content-Type": "application/merge-patch+json"}
    assert call(url, "PATCH", VS_PATH + "/a", json.dumps({"spec": {"gateways": ["mesh"]}}), merge)[0] == 200
    assert call(url, "DELETE", VS_PATH + "/a")[0] == 200
    assert call(url, "GET", "/apis/networking.istio.io/v1/namespaces/default/no-such-things")[0] == 404
    code, headers, text = call(url, "GET", "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    vsr = "virtualservices"

    def requests(verb: str, resource: str, code: int) -> float | None:
        return value(text, "apiserver_request_total", verb=verb, resource=resource, code=str(code))

    assert requests("create", vsr, 201) == 1
    assert requests("create", vsr, 422) == 1
    assert requests("get", vsr, 200) == 1 and requests("list", vsr, 200) == 1
    assert requests("patch", vsr, 200) == 1 and requests("delete", vsr, 200) == 1
    assert requests("list", "unknown", 404) == 1  # an unknown plural does not become a label value
    assert value(text, "apiserver_request_duration_seconds_count", verb="create", resource=vsr) == 2
    writes = "networking.istio.io/virtualservices"
    assert value(text, "meshplane_store_writes_total", resource=writes, verb="create") == 1
    assert value(text, "meshplane_store_writes_total", resource=writes, verb="update") == 1
    assert value(text, "meshplane_store_writes_total", resource=writes, verb="delete") == 1
    assert value(text, "pilot_xds") == 0  # no proxy connected


def test_non_loopback_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "meshplane.cli.main", "server", "--data-dir", str(tmp_path), "--api-addr", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2 and "without authentication" in res.stderr


def test_bearer_tokens_and_kubeconfig(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("s3cret-token,alice\n")
    data = tmp_path / "d"
    data.mkdir()
    srv = start_server(data, "--token-file", str(tokens))
    try:
        code, _, body = call(srv.url, "GET", VS_PATH)
        assert code == 401 and body["reason"] == "Unauthorized"
        auth = {"Authorization": "Bearer s3cret-token", **JSON}
        assert call(srv.url, "POST", VS_PATH, vs("a"), auth)[0] == 201
        _, _, audit = call(srv.url, "GET", "/management/v1/audit", headers=auth)
        assert audit["items"][0]["user"] == "alice"
        kc = subprocess.run(
            [sys.executable, "-m", "meshplane.cli.main", "kubeconfig", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert "s3cret-token" in kc and srv.url in kc
        assert (data / "server.json").stat().st_mode & 0o077 == 0
    finally:
        srv.stop()


@pytest.mark.timeout(120)
def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    srv = start_server(data)
    acked: list[str] = []

    def create(i: int) -> str | None:
        try:
            code, _, _ = call(srv.url, "POST", VS_PATH, vs(f"vs-{i}"), JSON)
        except OSError:
            return None
        return f"vs-{i}" if code == 201 else None

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(create, i) for i in range(3000)]
        for done, f in enumerate(concurrent.futures.as_completed(futures), 1):
            if done == 600:
                srv.proc.send_signal(signal.SIGKILL)
            name = f.result()
            if name:
                acked.append(name)
    srv.proc.wait(10)
    assert 0 < len(acked) < 3000
    srv2 = start_server(data)
    try:
        _, _, body = call(srv2.url, "GET", VS_PATH)
        stored = {i["metadata"]["name"] for i in body["items"]}
        assert set(acked) <= stored
        rvs = [int(i["metadata"]["resourceVersion"]) for i in body["items"]]
        assert len(set(rvs)) == len(rvs)
        # the counter continues after a restart: a new write gets a higher version than anything before
        _, _, new = call(srv2.url, "POST", VS_PATH, vs("after"), JSON)
        assert int(new["metadata"]["resourceVersion"]) > max(rvs)
    finally:
        srv2.stop()
