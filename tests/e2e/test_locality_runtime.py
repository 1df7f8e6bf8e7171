"""Locality-first routing and automatic failover on the local runtime, with real Envoys (the multi-cluster issue's
"done when"): same-zone routing, failover when the local instance dies and the return when it is back, region
failover, ``failoverPriority`` on network and cluster labels, and a removed cluster leaving every proxy.

One mesh for the whole module keeps it quick: zone-a and zone-b (region-1, network-1) and zone-c (region-2,
network-2), one cluster each; a ``client`` in zone-a and ``ratings`` with one instance per zone. The test process
plays the client's application: it sends its requests through the client's sidecar (the explicit HTTP proxy on
port 15001, as the runtime's applications do), so whoever answers is whom the zone-a proxy chose. The demo
application names its cluster and zone in every answer. No DestinationRule has ``outlierDetection``: failover
relies only on meshplane's defaults (see docs/multicluster.md, "Locality and failover").

Statistics, not clocks: the failover assertions count requests of a continuous loop (failures under 0.5% across
a kill and the return); how long each move took is measured and printed, never asserted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_runtime_support import (
    eventually,
    meshplane,
    running_mesh,
    status,
)

pytestmark = pytest.mark.envoy

RATINGS = "ratings.default.svc.cluster.local"
RATINGS_CLUSTER = f"outbound|9080||{RATINGS}"
MAX_FAILURE_RATE = 0.005


def manifest() -> dict[str, Any]:
    def app(name: str, service: str, clusters: list[str], plays: str) -> dict[str, Any]:
        return {
            "name": name, "namespace": "default", "clusters": clusters,
            "labels": {"app": service, "version": "v1"}, "serviceAccount": f"sa-{service}",
            "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}],
            "command": ["{python}", "-m", "meshplane.runtime.demoapp", "--service", plays, "--listen",
                        "{listen}"],
            "readiness": {"httpGet": {"path": "/healthz"}},
        }

    return {
        "name": "locality",
        # zone-c is on another network; this module tests locality across a flat network (no east-west gateways)
        "mesh": {"localityLoadBalancing": True, "eastWestGateways": False},
        "clusters": [
            {"name": "cluster-a", "network": "network-1", "region": "region-1", "zone": "zone-a"},
            {"name": "cluster-b", "network": "network-1", "region": "region-1", "zone": "zone-b"},
            {"name": "cluster-c", "network": "network-2", "region": "region-2", "zone": "zone-c"},
        ],
        # The client's own application only answers health checks (details calls nothing).
        "workloads": [app("client", "client", ["cluster-a"], "details"),
                      app("ratings-v1", "ratings", ["cluster-a", "cluster-b", "cluster-c"], "ratings")],
        "services": [{"name": "ratings", "ports": [9080]}, {"name": "client", "ports": [9080]}],
    }


@dataclass
class Mesh:
    home: Path
    api: str
    client: str  # the client instance's address (its sidecar's outbound proxy is on :15001, admin on :15000)

    def instance(self, cluster: str, workload: str = "ratings-v1") -> dict[str, Any]:
        for w in status(self.home)["workloads"]:
            if w["workload"] == workload and w["cluster"] == cluster:
                return dict(w)
        raise AssertionError(f"no {workload} in {cluster}")

    def admins(self) -> list[str]:
        return [f"http://{w['address']}:15000" for w in status(self.home)["workloads"]]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The module's mesh; stopped afterwards, and every process it had is checked by PID to be gone."""
    root = tmp_path_factory.mktemp("locality")
    path = root / "locality.yaml"
    path.write_text(yaml.safe_dump(manifest(), sort_keys=False))
    with running_mesh(path, root / "home") as (home, st):
        client = next(w["address"] for w in st["workloads"] if w["workload"] == "client")
        yield Mesh(home, st["api"], client)


# --- traffic -------------------------------------------------------------------------------------------------


class Caller:
    """Requests to ratings through the client's sidecar over one keep-alive connection (reopened on errors)."""

    def __init__(self, client: str) -> None:
        self.client = client
        self.conn: http.client.HTTPConnection | None = None

    def call(self) -> str:
        """The zone that answered, or ``error: ...``."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.client, 15001, timeout=15)
            self.conn.request("GET", f"http://{RATINGS}:9080/ratings", headers={"Host": f"{RATINGS}:9080"})
            r = self.conn.getresponse()
            body = r.read()
            if r.status != 200:
                return f"error: HTTP {r.status} {body[:120]!r}"
            return str(json.loads(body)["zone"])
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return f"error: {e!r}"

    def zones(self, n: int) -> list[str]:
        return [self.call() for _ in range(n)]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class Loop:
    """A continuous request loop in a thread: every answer with the time it came back."""

    def __init__(self, client: str) -> None:
        self.caller = Caller(client)
        self.results: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            zone = self.caller.call()
            self.results.append((time.monotonic(), zone))
            time.sleep(0.002)

    def __enter__(self) -> Loop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.caller.close()

    def since(self, t: float) -> list[str]:
        return [z for when, z in list(self.results) if when >= t]

    def first(self, zone: str, after: float) -> float | None:
        return next((when for when, z in list(self.results) if when >= after and z == zone), None)

    def last_all(self, zone: str, n: int) -> bool:
        tail = [z for _, z in list(self.results)[-n:]]
        return len(tail) == n and all(z == zone for z in tail)

    def failures(self) -> list[str]:
        return [z for _, z in self.results if z.startswith("error")]


def report(what: str, loop: Loop, moved_s: float | None) -> None:
    failed = loop.failures()
    total = len(loop.results)
    moved = f"{moved_s:.3f}s" if moved_s is not None else "n/a"
    print(f"\n{what}: {total} requests, {len(failed)} failed ({len(failed) / max(total, 1):.3%}), moved in {moved}"
          + (f"; first failures: {failed[:3]}" if failed else ""))


def assert_failure_rate(loop: Loop) -> None:
    failed = loop.failures()
    assert len(loop.results) >= 200, f"too few requests to judge a rate: {len(loop.results)}"
    assert len(failed) / len(loop.results) < MAX_FAILURE_RATE, (len(failed), len(loop.results), failed[:5])


# --- configuration -------------------------------------------------------------------------------------------


def _api(mesh: Mesh, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(mesh.api + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


DR_PATH = "/apis/networking.istio.io/v1/namespaces/default/destinationrules"


def set_failover_priority(mesh: Mesh, keys: list[str] | None) -> None:
    """Replace the ratings DestinationRule with one whose localityLbSetting has ``failoverPriority: keys``
    (none: delete it). No outlierDetection, on purpose."""
    _api(mesh, "DELETE", f"{DR_PATH}/ratings")
    if keys is None:
        return
    dr = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
          "metadata": {"name": "ratings", "namespace": "default"},
          "spec": {"host": RATINGS, "trafficPolicy": {"loadBalancer": {
              "simple": "ROUND_ROBIN", "localityLbSetting": {"enabled": True, "failoverPriority": keys}}}}}
    assert _api(mesh, "POST", DR_PATH, dr) in (200, 201)


def envoy_hosts(admin: str) -> set[str]:
    """The addresses the proxy has for the ratings cluster (Envoy's admin /clusters)."""
    with urllib.request.urlopen(admin + "/clusters", timeout=5) as r:
        text = r.read().decode()
    out = set()
    for line in text.splitlines():
        if line.startswith(RATINGS_CLUSTER + "::") and "::health_flags::" in line:
            out.add(line.split("::")[1].rsplit(":", 1)[0])
    return out


def restarted(mesh: Mesh, old_pid: int) -> bool:
    inst = mesh.instance("cluster-a")
    return inst["pid"] not in (None, old_pid) and bool(inst["ready"])


def wait_zones(caller: Caller, want: set[str], n: int = 30) -> None:
    eventually(lambda: set(caller.zones(n)) == want, f"ratings answered only from {sorted(want)}")


# --- tests ---------------------------------------------------------------------------------------------------


def test_same_zone_by_default(mesh: Mesh) -> None:
    """Locality on mesh-wide, no DestinationRule: every call from zone-a stays in zone-a."""
    caller = Caller(mesh.client)
    eventually(lambda: caller.call() == "zone-a", "the first call answered from zone-a")
    zones = caller.zones(50)
    caller.close()
    assert zones == ["zone-a"] * 50, zones


def test_failover_when_the_local_instance_is_killed_and_back(mesh: Mesh) -> None:
    """SIGKILL zone-a's ratings application under a continuous loop: calls move to zone-b (same region, the next
    priority) and fewer than 0.5% of all requests fail; the runtime restarts the application and traffic returns
    to zone-a. The failure rate is a statistic over the whole loop (kill, failover, return), at least 200
    requests."""
    inst = mesh.instance("cluster-a")
    pid = int(inst["pid"])
    with Loop(mesh.client) as loop:
        eventually(lambda: loop.last_all("zone-a", 20), "the loop running against zone-a")
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: loop.first("zone-b", killed) is not None, "a call answered from zone-b")
        moved = loop.first("zone-b", killed)
        assert moved is not None
        eventually(lambda: restarted(mesh, pid), "the runtime restarted zone-a's ratings")
        back_from = time.monotonic()
        eventually(lambda: loop.last_all("zone-a", 50), "traffic back in zone-a")
        back = loop.first("zone-a", back_from)
    report("kill zone-a ratings", loop, moved - killed)
    print(f"back in zone-a {((back or back_from) - back_from):.3f}s after the restarted instance was ready")
    during = [z for when, z in loop.results if killed <= when < back_from]
    assert "zone-b" in during
    assert "zone-c" not in during, "zone-b (same region) comes before zone-c (other region)"
    assert_failure_rate(loop)


def test_region_failover_when_the_region_is_scaled_away(mesh: Mesh) -> None:
    """Scale ratings to 0 in zone-a and zone-b under a loop: calls go to zone-c in the other region; scaled back,
    they return to zone-a. Fewer than 0.5% of the loop's requests fail."""
    with Loop(mesh.client) as loop:
        eventually(lambda: loop.last_all("zone-a", 20), "the loop running against zone-a")
        t0 = time.monotonic()
        meshplane("scale", "ratings-v1", "--cluster", "cluster-a", "--replicas", "0", "--home", str(mesh.home))
        eventually(lambda: loop.last_all("zone-b", 20), "traffic in zone-b")
        t1 = time.monotonic()
        meshplane("scale", "ratings-v1", "--cluster", "cluster-b", "--replicas", "0", "--home", str(mesh.home))
        eventually(lambda: loop.last_all("zone-c", 20), "traffic in zone-c")
        to_c = loop.first("zone-c", t1)
        t2 = time.monotonic()
        meshplane("scale", "ratings-v1", "--cluster", "cluster-a", "--replicas", "1", "--home", str(mesh.home))
        meshplane("scale", "ratings-v1", "--cluster", "cluster-b", "--replicas", "1", "--home", str(mesh.home))
        eventually(lambda: loop.last_all("zone-a", 50), "traffic back in zone-a")
        back = loop.first("zone-a", t2)
    report("scale zone-a then zone-b to 0", loop, (to_c - t1) if to_c else None)
    print(f"zone-b after {((loop.first('zone-b', t0) or t0) - t0):.3f}s; "
          f"zone-a again {((back or t2) - t2):.3f}s after starting to scale back up")
    assert_failure_rate(loop)


def test_failover_priority_by_network_and_cluster(mesh: Mesh) -> None:
    """``failoverPriority`` (no outlierDetection): on the network label, zone-a and zone-b (network-1) share the
    load and zone-c (network-2) gets none; ``topology.istio.io/cluster=cluster-c`` sends everything to zone-c;
    on [network, cluster] with zone-a's instance killed, calls go to cluster-b (same network) and never to
    cluster-c, with fewer than 0.5% failing."""
    caller = Caller(mesh.client)
    try:
        set_failover_priority(mesh, ["topology.istio.io/network"])
        wait_zones(caller, {"zone-a", "zone-b"}, 40)
        zones = caller.zones(60)
        assert set(zones) == {"zone-a", "zone-b"}, zones

        set_failover_priority(mesh, ["topology.istio.io/cluster=cluster-c"])
        wait_zones(caller, {"zone-c"})

        set_failover_priority(mesh, ["topology.istio.io/network", "topology.istio.io/cluster"])
        wait_zones(caller, {"zone-a"})
        pid = int(mesh.instance("cluster-a")["pid"])
        with Loop(mesh.client) as loop:
            eventually(lambda: loop.last_all("zone-a", 20), "the loop running against zone-a")
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            eventually(lambda: loop.first("zone-b", killed) is not None, "a call answered from cluster-b")
            moved = loop.first("zone-b", killed)
            eventually(lambda: restarted(mesh, pid), "the runtime restarted zone-a's ratings")
            eventually(lambda: loop.last_all("zone-a", 50), "traffic back in cluster-a")
        report("failoverPriority [network, cluster], kill cluster-a ratings", loop,
               (moved - killed) if moved else None)
        assert "zone-c" not in loop.since(killed), "cluster-c is on another network: the last priority"
        assert_failure_rate(loop)
    finally:
        caller.close()
        set_failover_priority(mesh, None)


def test_removed_cluster_leaves_every_proxy(mesh: Mesh) -> None:
    """The runtime declares its clusters as local MemberClusters (``meshplane cluster list``); removing cluster-a
    under a request loop (the DELETE ``meshplane cluster remove`` sends) withdraws zone-a's ratings endpoint
    from the proxy of every instance (Envoy admin /clusters) and calls move to zone-b, fewer than 0.5%
    failing."""
    caller = Caller(mesh.client)
    wait_zones(caller, {"zone-a"})
    caller.close()
    listed = json.loads(meshplane("cluster", "list", "-o", "json", "--server", mesh.api).stdout)
    assert {i["metadata"]["name"] for i in listed["items"]} == {"cluster-a", "cluster-b", "cluster-c"}
    assert all(i["spec"]["local"] for i in listed["items"])
    gone = mesh.instance("cluster-a")["address"]
    admins = mesh.admins()
    assert all(gone in envoy_hosts(a) for a in admins)
    with Loop(mesh.client) as loop:
        eventually(lambda: loop.last_all("zone-a", 20), "the loop running against zone-a")
        t0 = time.monotonic()
        # What ``meshplane cluster remove cluster-a`` sends, without the CLI's start-up in the measurement.
        assert _api(mesh, "DELETE", "/apis/meshplane.io/v1/memberclusters/cluster-a") in (200, 202)
        removed = time.monotonic()
        left: dict[str, float] = {}
        while len(left) < len(admins) and time.monotonic() - t0 < 60:
            for a in admins:
                if a not in left:
                    with contextlib.suppress(OSError):
                        if gone not in envoy_hosts(a):
                            left[a] = time.monotonic()
            time.sleep(0.01)
        eventually(lambda: loop.last_all("zone-b", 200), "traffic in zone-b")
    assert set(left) == set(admins), f"still listed by {sorted(set(admins) - set(left))}"
    slowest = max(left.values()) - t0
    to_b = loop.first("zone-b", t0)
    report("cluster remove cluster-a", loop, (to_b - t0) if to_b is not None else None)
    print(f"endpoints withdrawn from {len(admins)} proxies within {slowest:.3f}s of the DELETE "
          f"(the DELETE itself took {removed - t0:.3f}s)")
    assert_failure_rate(loop)
