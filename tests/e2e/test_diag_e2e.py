"""The diagnosis commands on a real local mesh: ``proxy-config`` reads a real Envoy's admin and shows istioctl's
tables, ``proxy-status`` one row per instance with its control plane and Envoy version, ``describe`` and
``version``; and every one of them, like ``cluster list`` and ``kubeconfig``, finds the mesh with no flag at all.

One mesh serves the module (``meshplane up`` of a one-cluster manifest: productpage and reviews, mTLS on, a
DestinationRule and a VirtualService for reviews). It is started in ``~/.meshplane`` of a private ``HOME`` and the
commands run with that ``HOME``, no ``MESHPLANE_HOME`` and an empty working directory: the default a new user has.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_runtime_support import running_mesh

pytestmark = pytest.mark.envoy

REVIEWS = "reviews.default.svc.cluster.local"
V1 = f"outbound|9080|v1|{REVIEWS}"


def _app(service: str) -> dict[str, Any]:
    return {
        "name": f"{service}-v1", "namespace": "default", "cluster": "east",
        "labels": {"app": service, "version": "v1"}, "serviceAccount": f"bookinfo-{service}",
        "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}],
        "command": ["{python}", "-m", "meshplane.runtime.demoapp", "--service", service, "--version", "v1",
                    "--listen", "{listen}"],
        "readiness": {"httpGet": {"path": "/healthz"}},
    }


MANIFEST: dict[str, Any] = {
    "name": "diag",
    "clusters": [{"name": "east", "network": "n1", "region": "r1", "zone": "z1"}],
    "workloads": [_app("productpage"), _app("reviews")],
    "services": [{"name": s, "namespace": "default", "ports": [{"port": 9080, "name": "http"}],
                  "selector": {"app": s}} for s in ("productpage", "reviews")],
    "config": [
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "reviews", "namespace": "default"},
         "spec": {"hosts": ["reviews"], "http": [
             {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
              "route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
             {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}},
    ],
}


class Mesh:
    def __init__(self, user: Path, st: dict[str, Any]) -> None:
        self.user, self.st = user, st
        self.cwd = user / "work"
        self.cwd.mkdir(exist_ok=True)
        self.instances = {w["workload"]: w for w in st["workloads"]}

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``meshplane ARGS`` as a new user types it: no flag, no MESHPLANE_HOME, a directory of their own."""
        env = {k: v for k, v in os.environ.items() if k != "MESHPLANE_HOME"}
        env["HOME"] = str(self.user)
        proc = subprocess.run([sys.executable, "-m", "meshplane.cli.main", *args], capture_output=True, text=True,
                              timeout=60, env=env, cwd=self.cwd)
        if check:
            assert proc.returncode == 0, f"meshplane {' '.join(args)}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
        return proc

    def table(self, *args: str) -> list[list[str]]:
        """The rows of a table command, cells split on runs of 3+ spaces (cells themselves hold single spaces)."""
        lines = self.run(*args).stdout.splitlines()
        return [re.split(r"\s{3,}", line.strip()) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("diag")
    user = root / "user"
    manifest = root / "mesh.yaml"
    manifest.write_text(yaml.safe_dump(MANIFEST))
    with running_mesh(manifest, user / ".meshplane", "--prometheus", "off") as (_, st):
        yield Mesh(user, st)


def test_proxy_status_has_a_row_per_instance_with_control_plane_and_version(mesh: Mesh) -> None:
    server = json.loads((mesh.user / ".meshplane" / "server" / "server.json").read_text())
    rows = mesh.table("proxy-status")
    assert rows[0] == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "SDS", "ISTIOD", "VERSION", "ERROR"]
    by_name = {r[0]: r for r in rows[1:]}
    assert set(by_name) == {f"{w['name']}.default" for w in mesh.st["workloads"]}
    envoy = subprocess.run(["envoy", "--version"], capture_output=True, text=True, timeout=30).stdout
    for row in by_name.values():
        assert len(row) == 9 and row[1:6] == ["east", "SYNCED", "SYNCED", "SYNCED", "SYNCED"], row  # no ERROR
        assert row[7] == f"{server['replica']}@{server['xds']}", row
        assert row[8] in envoy, (row, envoy)  # the version the proxy reported is the Envoy that runs
    only = mesh.table("proxy-status", mesh.instances["reviews-v1"]["name"])
    assert [r[0] for r in only[1:]] == [f"{mesh.instances['reviews-v1']['name']}.default"]


def test_routes_of_productpage_show_the_route_to_reviews(mesh: Mesh) -> None:
    pp = mesh.instances["productpage-v1"]["name"]
    rows = mesh.table("proxy-config", "routes", pp)
    assert rows[0] == ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "DESTINATION"]
    reviews = [r for r in rows if r[1] == f"{REVIEWS}:9080"]
    assert reviews == [
        ["http_proxy", f"{REVIEWS}:9080", f"{REVIEWS}, reviews.default.svc + 2 more...", "/* [end-user exact=jason]",
         V1],
        ["http_proxy", f"{REVIEWS}:9080", f"{REVIEWS}, reviews.default.svc + 2 more...", "/*", V1]]
    # The same through the proxy id proxy-status -o json gives, and only the route configuration asked for.
    node = next(p["nodeId"] for p in json.loads(mesh.run("proxy-status", "-o", "json").stdout)
                if pp in p["nodeId"])
    named = mesh.table("pc", "routes", node, "--name", "http_proxy")
    assert {r[0] for r in named[1:]} == {"http_proxy"} and reviews[0] in named


def test_clusters_listeners_endpoints_of_a_real_envoy(mesh: Mesh) -> None:
    pp = mesh.instances["productpage-v1"]
    clusters = mesh.table("proxy-config", "clusters", pp["name"], "--fqdn", "reviews")
    assert clusters == [["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
                        [REVIEWS, "9080", "-", "outbound", "EDS"], [REVIEWS, "9080", "v1", "outbound", "EDS"]]
    inbound = mesh.table("pc", "clusters", pp["name"], "--direction", "inbound")
    assert inbound[1:] and {r[3] for r in inbound[1:]} == {"inbound"}

    listeners = mesh.table("proxy-config", "listeners", pp["name"])
    assert listeners[0] == ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
    assert [pp["address"], "15001", "ALL", "Route: http_proxy"] in listeners
    assert {r[2] for r in listeners if r[:2] == [pp["address"], "9080"]} >= {"Trans: tls", "Trans: raw_buffer"}

    reviews = mesh.instances["reviews-v1"]
    endpoints = mesh.table("proxy-config", "endpoints", pp["name"], "--cluster", "reviews")
    assert endpoints[0] == ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]
    at = f"{reviews['address']}:9080"
    assert sorted(endpoints[1:]) == sorted([[at, "HEALTHY", "OK", f"outbound|9080||{REVIEWS}"],
                                            [at, "HEALTHY", "OK", V1]])

    # -o json is Envoy's own config: the cluster the table showed is in it.
    dumped = json.loads(mesh.run("pc", "clusters", pp["name"], "-o", "json").stdout)
    assert V1 in {c.get("name") for c in dumped}
    boot = json.loads(mesh.run("pc", "bootstrap", pp["name"], "-o", "json").stdout)
    assert boot["node"]["id"].split("~")[1] == pp["address"]


def test_secret_shows_the_mesh_certificate_and_root(mesh: Mesh) -> None:
    rows = mesh.table("proxy-config", "secret", mesh.instances["reviews-v1"]["name"])
    assert rows[0] == ["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]
    by_name = {r[0]: r for r in rows[1:]}
    assert set(by_name) == {"default", "ROOTCA"}
    assert by_name["default"][1:4] == ["Cert Chain", "ACTIVE", "true"]
    assert by_name["ROOTCA"][1:4] == ["CA", "ACTIVE", "true"]
    now = datetime.datetime.now(datetime.UTC)
    for row in by_name.values():
        not_after = datetime.datetime.fromisoformat(row[5].replace("Z", "+00:00"))
        not_before = datetime.datetime.fromisoformat(row[6].replace("Z", "+00:00"))
        assert not_before <= now < not_after, row
        assert len(row[4]) >= 16 and int(row[4], 16) > 0, row


def test_describe_and_version(mesh: Mesh) -> None:
    pod = mesh.run("describe", "pod", mesh.instances["productpage-v1"]["name"]).stdout
    assert "Service: productpage (productpage.default.svc.cluster.local)" in pod
    svc = mesh.run("describe", "service", "reviews").stdout
    assert "VirtualService: reviews.default" in svc
    assert "when header end-user exact jason: route to reviews.default.svc.cluster.local subset v1" in svc
    assert "DestinationRule: reviews.default" in svc and "Subsets: v1" in svc

    doc = json.loads(mesh.run("version", "-o", "json").stdout)
    assert [d["proxies"] for d in doc["dataPlaneVersion"]] == [2]
    assert doc["meshVersion"][0]["info"]["xds"] == mesh.st["xds"]


def test_the_other_commands_find_the_mesh_without_flags(mesh: Mesh) -> None:
    clusters = mesh.table("cluster", "list")
    assert clusters[1][:5] == ["east", "n1", "r1", "z1", "True"]
    kubeconfig = yaml.safe_load(mesh.run("kubeconfig").stdout)
    assert kubeconfig["clusters"][0]["cluster"]["server"] == mesh.st["api"]

    # An instance that is not there is one clear line naming those that are, not a traceback.
    res = mesh.run("pc", "routes", "no-such-instance", check=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "no instance 'no-such-instance'" in res.stderr and mesh.instances["reviews-v1"]["name"] in res.stderr
