"""Real kubectl (and the Python client) at the edges of the API: kinds the server does not serve, OpenAPI v2,
/version, server-side apply of partial objects, and printer columns with list filters."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from kubernetes import client

from tests.integration.conftest import Kubectl

TYPO = """\
apiVersion: networking.istio.io/v1
kind: VirtualServce
metadata: {name: reviews}
spec: {hosts: [reviews]}
"""

HTTPROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec: {parentRefs: [{name: gw}]}
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews}
spec:
  replicas: 1
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews}}
    spec: {containers: [{name: reviews, image: reviews:v1}]}
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{port: 9080}]}
"""

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
"""

LABELS_ONLY = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: default
  labels: {{team: bookinfo}}
"""

MEMBER = """\
apiVersion: meshplane.io/v1
kind: MemberCluster
metadata: {name: east}
spec: {local: true, network: net-east, region: r1, zone: z1}
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_unknown_kinds_get_the_errors_of_a_real_cluster(kubectl: Kubectl, tmp_path: Path) -> None:
    for name, text, kind, version in [
        ("typo.yaml", TYPO, "VirtualServce", "networking.istio.io/v1"),
        ("route.yaml", HTTPROUTE, "HTTPRoute", "gateway.networking.k8s.io/v1"),
    ]:
        res = kubectl.run("apply", "-f", _write(tmp_path, name, text), check=False)
        assert res.returncode == 1, res
        assert f'no matches for kind "{kind}" in version "{version}"' in res.stderr, res.stderr
        assert "ensure CRDs are installed first" in res.stderr
        assert "openapi" not in res.stderr
    res = kubectl.run("get", "virtualservce", check=False)
    assert res.returncode == 1
    assert 'the server doesn\'t have a resource type "virtualservce"' in res.stderr
    # Client-side validation is still skipped for the kinds the server validates itself: a good object applies
    # with the default --validate=strict, a bad field is refused by the server.
    assert "created" in kubectl.run("apply", "-f", _write(tmp_path, "vs.yaml", VS)).stdout
    bad = VS.replace("hosts:", "hostz:")
    res = kubectl.run("apply", "-f", _write(tmp_path, "bad.yaml", bad), check=False)
    assert res.returncode == 1 and 'unknown field "spec.hostz"' in res.stderr, res.stderr


def test_workload_kinds_say_where_workloads_come_from(kubectl: Kubectl, tmp_path: Path) -> None:
    for name, text, kind in [("dep.yaml", DEPLOYMENT, "Deployment"), ("svc.yaml", SERVICE, "Service")]:
        f = _write(tmp_path, name, text)
        for args in (("apply", "-f", f), ("apply", "--server-side", "-f", f)):
            res = kubectl.run(*args, check=False)
            assert res.returncode == 1, res
            assert "Error from server (MethodNotAllowed)" in res.stderr, res.stderr
            assert kind in res.stderr
            assert 'workloads are declared in "meshplane up" manifests or come from member clusters' in res.stderr
    res = kubectl.run("get", "deployments")
    assert "No resources found" in res.stdout + res.stderr
    assert "meshplane stores no deployments" in res.stderr
    info = kubectl.run("cluster-info")
    assert f"Kubernetes control plane is running at {kubectl.server}" in info.stdout


def test_openapi_v2_and_version(kubectl: Kubectl) -> None:
    with urllib.request.urlopen(kubectl.server + "/openapi/v2") as r:
        doc = json.loads(r.read())
    assert doc["swagger"] == "2.0"
    item = doc["paths"]["/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices/{name}"]
    assert "fieldValidation" in [p["name"] for p in item["patch"]["parameters"]]
    proto = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    req = urllib.request.Request(kubectl.server + "/openapi/v2", headers={"Accept": proto})
    with urllib.request.urlopen(req) as r:
        assert r.headers["Content-Type"].startswith("application/com.github.proto-openapi.spec.v2")
        assert r.read().startswith(b"\x0a\x032.0")  # field 1 (swagger), length 3
    cfg = client.Configuration()
    cfg.host = kubectl.server
    code = client.VersionApi(client.ApiClient(cfg)).get_code()  # GET /version/
    assert code.major == "1" and code.git_version.startswith("v1.")
    assert "Server Version: v1." in kubectl.run("version").stdout


def test_server_side_apply_validates_the_merged_object(kubectl: Kubectl, tmp_path: Path) -> None:
    f = _write(tmp_path, "vs.yaml", VS)
    kubectl.run("apply", "-f", f)
    # kubectl's client-side-to-server-side migration applies only the last-applied annotation as its own manager.
    res = kubectl.run("apply", "--server-side", "-f", f)
    assert "serverside-applied" in res.stdout
    assert "failed to migrate" not in res.stderr, res.stderr
    # A second manager that owns only a label.
    labels = _write(tmp_path, "labels.yaml", LABELS_ONLY.format(name="reviews"))
    kubectl.run("apply", "--server-side", "--field-manager=labeller", "-f", labels)
    obj = json.loads(kubectl.run("get", "vs", "reviews", "-o", "json", "--show-managed-fields").stdout)
    assert obj["metadata"]["labels"] == {"team": "bookinfo"}
    assert obj["spec"]["hosts"] == ["reviews"]
    managers = {m["manager"] for m in obj["metadata"]["managedFields"]}
    assert {"kubectl", "kubectl-last-applied", "labeller"} <= managers
    # The merge is what is validated: labels alone do not make a VirtualService.
    fresh = _write(tmp_path, "fresh.yaml", LABELS_ONLY.format(name="ratings"))
    res = kubectl.run("apply", "--server-side", "-f", fresh, check=False)
    assert res.returncode == 1
    assert 'The VirtualService "ratings" is invalid' in res.stderr, res.stderr


def test_get_member_clusters_shows_connected(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run("apply", "-f", _write(tmp_path, "mc.yaml", MEMBER))
    deadline = time.monotonic() + 30
    while True:
        lines = kubectl.run("get", "mc").stdout.splitlines()
        header = lines[0].split()
        row = dict(zip(header, lines[1].split(), strict=False))
        if row.get("CONNECTED") == "True" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert header[:5] == ["NAME", "NETWORK", "REGION", "ZONE", "CONNECTED"]
    assert row["NAME"] == "east" and row["CONNECTED"] == "True", lines
