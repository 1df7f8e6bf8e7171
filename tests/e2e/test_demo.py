"""The demo end to end, as a user runs it: ``meshplane demo up``, requests through both clusters' ingress gateways,
Istio's request-routing task applied with the real kubectl, an instance killed, ``meshplane demo down``.

Everything is real: the control plane process, one Envoy per instance, the demo application processes, kubectl.
Istio's task YAML is read unchanged from the project's copy in tests/data/bookinfo.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_runtime_support import (
    alive,
    call_of,
    eventually,
    get_json,
    kill_all,
    meshplane,
    recorded_processes,
    status,
    status_processes,
)

from tests.support.promtext import samples

pytestmark = [pytest.mark.envoy, pytest.mark.kubectl]

BOOKINFO = Path(__file__).resolve().parents[1] / "data" / "bookinfo"


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any], str]]:
    """A running demo in a private home (with what ``demo up`` printed); stopped afterwards, and every process it
    had is checked to be gone."""
    home = tmp_path / "home"
    seen: list[tuple[int, int]] = []
    try:
        printed = meshplane("demo", "up", "--home", str(home)).stdout
        seen += recorded_processes(home)
        st = status(home)
        seen += status_processes(st)
        yield home, st, printed
        seen += recorded_processes(home) + status_processes(status(home))
    finally:
        seen += recorded_processes(home)
        down = meshplane("demo", "down", "--home", str(home), check=False)
        left = alive(seen)
        kill_all(left)
    assert down.returncode == 0, down.stderr
    assert left == [], f"processes left behind by demo down: {left}"


def reviews_versions(url: str, n: int, headers: dict[str, str] | None = None) -> list[str]:
    out = []
    for _ in range(n):
        doc = get_json(url + "/productpage", headers)
        assert doc["service"] == "productpage"
        reviews = call_of(doc, "reviews")
        assert reviews["status"] == 200, reviews
        assert call_of(doc, "details")["status"] == 200
        out.append(str(reviews["version"]))
    return out


def kubectl_apply(api: str, name: str | Path) -> None:
    path = name if isinstance(name, Path) else BOOKINFO / name
    proc = subprocess.run(["kubectl", "--server", api, "apply", "-f", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


STRICT = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
"""
V2_FROM_PRODUCTPAGE = ('reporter="destination",destination_workload="reviews-v2",source_workload="productpage-v1",'
                       'response_code="200",connection_security_policy="mutual_tls",'
                       'destination_service="reviews.default.svc.cluster.local"')


def reviews_v2_count(st: dict[str, Any]) -> float:
    """istio_requests_total{V2_FROM_PRODUCTPAGE} summed over every reviews-v2 proxy, read from the proxies."""
    total = 0.0
    for w in st["workloads"]:
        if w["workload"] != "reviews-v2":
            continue
        with urllib.request.urlopen(f"http://{w['address']}:15090/stats/prometheus", timeout=10) as r:
            for (name, lbls), v in samples(r.read().decode()).items():
                want = dict(kv.split("=", 1) for kv in V2_FROM_PRODUCTPAGE.replace('"', "").split(","))
                if name == "istio_requests_total" and want.items() <= dict(lbls).items():
                    total += v
    return total


def _v2_samples(st: dict[str, Any]) -> list[Any]:
    out = []
    for w in st["workloads"]:
        if w["workload"] == "reviews-v2":
            with urllib.request.urlopen(f"http://{w['address']}:15090/stats/prometheus", timeout=10) as r:
                keep = ("reporter", "source_workload", "source_cluster", "connection_security_policy",
                        "response_code", "response_flags", "destination_workload", "destination_service")
                out += [(w["name"], {k: v for k, v in dict(lbls).items() if k in keep}, v)
                        for (name, lbls), v in samples(r.read().decode()).items() if name == "istio_requests_total"]
    return out


def check_standard_metrics(st: dict[str, Any], tmp_strict: Path) -> None:
    """Issue's demo check: 100 requests routed to reviews-v2 under STRICT are counted by Istio's standard metric
    at the destination, with mutual TLS, and PromQL over the runtime's Prometheus gives the same number."""
    tmp_strict.write_text(STRICT)
    kubectl_apply(st["api"], tmp_strict)
    jason = {"end-user": "jason"}
    url = st["ingress"]["cluster-1"]
    eventually(lambda: set(reviews_versions(url, 4, jason)) == {"v2"}, "jason's traffic on v2 under STRICT")
    before = reviews_v2_count(st)
    assert set(reviews_versions(url, 100, jason)) == {"v2"}
    after = reviews_v2_count(st)
    assert after - before == 100, _v2_samples(st)
    if st.get("prometheus"):
        query = urllib.parse.urlencode({"query": f"sum(istio_requests_total{{{V2_FROM_PRODUCTPAGE}}})"})

        def scraped() -> bool:
            with urllib.request.urlopen(f"{st['prometheus']}/api/v1/query?{query}", timeout=10) as r:
                result = json.loads(r.read())["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) == after

        eventually(scraped, "PromQL to count what the proxies counted")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_demo_end_to_end(demo: tuple[Path, dict[str, Any], str]) -> None:
    home, st, printed = demo
    # demo up prints each ingress's base URL, to which the README's curl lines append /productpage.
    for cluster, url in st["ingress"].items():
        assert f"  ingress {cluster}: {url}" in printed.splitlines(), printed
        assert urllib.parse.urlsplit(url).path in ("", "/"), url
    # status -o json: the promised fields.
    assert st["api"].startswith("http://127.") and st["xds"]
    assert set(st["ingress"]) == {"cluster-1", "cluster-2"}
    names = {(w["workload"], w["cluster"]) for w in st["workloads"]}
    assert ("reviews-v2", "cluster-1") in names and ("reviews-v3", "cluster-2") in names
    assert ("reviews-v3", "cluster-1") not in names
    for w in st["workloads"]:
        for key in ("name", "namespace", "cluster", "region", "zone", "network", "labels", "address", "pid",
                    "ready"):
            assert key in w, (key, w)
        assert w["ready"], w
        assert w["region"] == "region-1" and w["zone"] == {"cluster-1": "zone-a", "cluster-2": "zone-b"}[
            w["cluster"]]
        if w["workload"] == "istio-ingressgateway":
            assert w["namespace"] == "istio-system" and w["labels"]["istio"] == "ingressgateway"
        else:
            assert w["namespace"] == "default" and isinstance(w["pid"], int)
    # The address is the instance's mesh endpoint: its port 9080 answers through its sidecar.
    ratings = next(w for w in st["workloads"] if w["workload"] == "ratings-v1")
    direct = get_json(f"http://{ratings['address']}:9080/ratings/0")
    assert direct["service"] == "ratings" and direct["instance"] == ratings["name"]

    # Every version of reviews answers over a few dozen requests through the two ingresses.
    versions: set[str] = set()
    for url in st["ingress"].values():
        versions |= set(reviews_versions(url, 24))
    assert versions == {"v1", "v2", "v3"}
    v2_doc = next(d for d in (get_json(st["ingress"]["cluster-1"] + "/productpage") for _ in range(40))
                  if call_of(d, "reviews")["version"] == "v2")
    assert call_of(call_of(v2_doc, "reviews"), "ratings")["status"] == 200  # v2 calls ratings

    # Istio's request-routing task, applied with kubectl, takes effect without restarting anything.
    api = st["api"]
    kubectl_apply(api, "destination-rule-all.yaml")
    kubectl_apply(api, "virtual-service-all-v1.yaml")
    for url in st["ingress"].values():
        eventually(lambda u=url: set(reviews_versions(u, 12)) == {"v1"}, "all reviews traffic on v1")
    kubectl_apply(api, "virtual-service-reviews-test-v2.yaml")
    jason = {"end-user": "jason"}
    for url in st["ingress"].values():
        eventually(lambda u=url: set(reviews_versions(u, 12, jason)) == {"v2"}, "jason's traffic on reviews v2")
        assert set(reviews_versions(url, 12)) == {"v1"}
    # ... and productpage's Envoy shows why: its route to reviews, read from its admin by proxy-config.
    pp = next(w["name"] for w in st["workloads"] if (w["workload"], w["cluster"]) == ("productpage-v1", "cluster-1"))
    routes = meshplane("proxy-config", "routes", pp, "--home", str(home)).stdout.splitlines()
    reviews = [line.split() for line in routes if "reviews.default.svc.cluster.local:9080" in line]
    assert [r[-3:] for r in reviews] == [
        ["[end-user", "exact=jason]", "outbound|9080|v2|reviews.default.svc.cluster.local"],
        ["more...", "/*", "outbound|9080|v1|reviews.default.svc.cluster.local"]], routes
    # The README's other diagnosis lines: proxy-status has every instance; describe names the routing in effect.
    rows = meshplane("proxy-status", "--home", str(home)).stdout.splitlines()
    assert {r.split()[0] for r in rows[1:]} == {f"{w['name']}.{w['namespace']}" for w in st["workloads"]}, rows
    described = meshplane("describe", "pod", "reviews-v2-cluster-1-0", "--home", str(home)).stdout
    assert "VirtualService: reviews.default" in described, described
    assert "when header end-user exact jason: route to reviews.default.svc.cluster.local subset v2" in described
    check_standard_metrics(st, tmp_strict=home / "strict.yaml")
    pids_before = {w["name"]: w["pid"] for w in status(home)["workloads"]}
    assert pids_before == {w["name"]: w["pid"] for w in st["workloads"]}, "nothing was restarted"

    # Kill the application of one reviews instance: it is replaced (new process) or routed around.
    victim = next(w for w in st["workloads"] if w["workload"] == "reviews-v1" and w["cluster"] == "cluster-1")
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        now = {w["name"]: w for w in status(home)["workloads"]}
        w = now[victim["name"]]
        return w["pid"] not in (None, victim["pid"]) and w["ready"] and w["restarts"] >= 1

    eventually(replaced, "the killed reviews instance to be replaced")
    for url in st["ingress"].values():
        eventually(lambda u=url: set(reviews_versions(u, 12)) == {"v1"}, "reviews v1 answering again")
