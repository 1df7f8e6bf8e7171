"""Multi-network on the local runtime, with real Envoys (the multi-cluster issue's "done when"): on two networks,
cross-network calls pass through the east-west gateways and never go direct.

Two clusters on two networks (``mesh.eastWestGateways: true`` starts ``istio-eastwestgateway`` in each), a
``client`` in cluster-1, ``ratings`` only in cluster-2 and ``details`` in both. The test process plays the
client's application: it calls through the client's sidecar (explicit HTTP proxy on 15001). Evidence comes from
the proxies' own admin endpoints: the client sidecar's EDS (``/clusters``) holds network-2's gateway at :15443 and
never a network-2 instance, and cluster-2's east-west gateway counts at least as many connections on its
SNI-routed listener (``tcp.sni_dnat_15443.downstream_cx_total``) as the client opened to ratings (a
DestinationRule allows one request per connection, so each call opens one), over mTLS (the client's TLS
handshakes to ratings). Behaviour only; nothing is timed.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_runtime_support import (
    eventually,
    running_mesh,
)

pytestmark = pytest.mark.envoy

RATINGS = "ratings.default.svc.cluster.local"
DETAILS = "details.default.svc.cluster.local"
CALLS = 20


def manifest() -> dict[str, Any]:
    def app(name: str, service: str, clusters: list[str]) -> dict[str, Any]:
        return {
            "name": name, "namespace": "default", "clusters": clusters,
            "labels": {"app": service, "version": "v1"}, "serviceAccount": f"sa-{service}",
            "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}],
            "command": ["{python}", "-m", "meshplane.runtime.demoapp", "--service",
                        "details" if service == "client" else service, "--listen", "{listen}"],
            "readiness": {"httpGet": {"path": "/healthz"}},
        }

    return {
        "name": "multinetwork",
        "mesh": {"eastWestGateways": True},
        "clusters": [
            {"name": "cluster-1", "network": "network-1", "region": "region-1", "zone": "zone-a"},
            {"name": "cluster-2", "network": "network-2", "region": "region-1", "zone": "zone-b"},
        ],
        "workloads": [app("client", "client", ["cluster-1"]), app("ratings-v1", "ratings", ["cluster-2"]),
                      app("details-v1", "details", ["cluster-1", "cluster-2"])],
        "services": [{"name": s, "ports": [9080]} for s in ("client", "ratings", "details")],
        # One request per upstream connection, so every call opens a connection the gateway must count.
        "config": [{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                    "metadata": {"name": "ratings", "namespace": "default"},
                    "spec": {"host": "ratings", "trafficPolicy": {"connectionPool": {
                        "http": {"maxRequestsPerConnection": 1}}}}}],
    }


@dataclass
class Mesh:
    home: Path
    st: dict[str, Any]

    def one(self, workload: str, cluster: str) -> dict[str, Any]:
        found = [w for w in self.st["workloads"] if w["workload"] == workload and w["cluster"] == cluster]
        assert len(found) == 1, (workload, cluster, found)
        return dict(found[0])

    def admin(self, workload: str, cluster: str) -> str:
        return f"http://{self.one(workload, cluster)['address']}:15000"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The module's mesh; stopped afterwards, and every process it had is checked by PID to be gone."""
    root = tmp_path_factory.mktemp("multinetwork")
    path = root / "multinetwork.yaml"
    path.write_text(yaml.safe_dump(manifest(), sort_keys=False))
    with running_mesh(path, root / "home") as (home, st):
        yield Mesh(home, st)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def stat(admin: str, name: str) -> int:
    """One counter from Envoy's admin /stats (0 while it does not exist yet)."""
    text = _get(f"{admin}/stats?filter=^{re.escape(name)}$")
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def hosts(admin: str, cluster: str) -> set[str]:
    """The endpoints (address:port) the proxy has for ``cluster`` (Envoy's admin /clusters)."""
    out = set()
    for line in _get(f"{admin}/clusters").splitlines():
        if line.startswith(cluster + "::") and "::health_flags::" in line:
            out.add(line.split("::")[1])
    return out


def call(client: str, host: str) -> dict[str, Any]:
    """One request on a fresh connection through the client's sidecar; the demo application's JSON answer."""
    conn = http.client.HTTPConnection(client, 15001, timeout=15)
    try:
        conn.request("GET", f"http://{host}:9080/", headers={"Host": f"{host}:9080", "Connection": "close"})
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body[:200])
        doc: dict[str, Any] = json.loads(body)
        return doc
    finally:
        conn.close()


def test_client_eds_holds_the_gateway_never_the_remote_instance(mesh: Mesh) -> None:
    client = mesh.admin("client", "cluster-1")
    gw2 = f"{mesh.one('istio-eastwestgateway', 'cluster-2')['address']}:15443"
    ratings2 = mesh.one("ratings-v1", "cluster-2")["address"]
    details1 = f"{mesh.one('details-v1', 'cluster-1')['address']}:9080"
    details2 = mesh.one("details-v1", "cluster-2")["address"]
    eventually(lambda: hosts(client, f"outbound|9080||{RATINGS}") == {gw2}, "ratings reached via network-2's gateway")
    eventually(lambda: hosts(client, f"outbound|9080||{DETAILS}") == {details1, gw2},
               "details: own network direct, network-2 via its gateway")
    everything = _get(f"{client}/clusters")
    assert ratings2 + ":" not in everything and details2 + ":" not in everything, "a network-2 address, direct"


def test_cross_network_calls_pass_through_the_eastwest_gateway(mesh: Mesh) -> None:
    client_addr = mesh.one("client", "cluster-1")["address"]
    client = mesh.admin("client", "cluster-1")
    gw2 = mesh.admin("istio-eastwestgateway", "cluster-2")
    gw1 = mesh.admin("istio-eastwestgateway", "cluster-1")
    upstream = f"cluster.outbound|9080||{RATINGS}"
    sni = "tcp.sni_dnat_15443.downstream_cx_total"
    eventually(lambda: call(client_addr, RATINGS).get("cluster") == "cluster-2", "a first call to ratings")
    before = (stat(client, f"{upstream}.upstream_cx_total"), stat(client, f"{upstream}.ssl.handshake"),
              stat(gw2, sni), stat(gw1, sni))
    answers = [call(client_addr, RATINGS) for _ in range(CALLS)]
    after = (stat(client, f"{upstream}.upstream_cx_total"), stat(client, f"{upstream}.ssl.handshake"),
             stat(gw2, sni), stat(gw1, sni))
    assert {a["cluster"] for a in answers} == {"cluster-2"}
    opened, handshakes, through_gw2, through_gw1 = (a - b for a, b in zip(after, before, strict=True))
    print(f"\n{CALLS} calls: client opened {opened} connections to ratings ({handshakes} TLS handshakes); "
          f"network-2's gateway accepted {through_gw2}, network-1's {through_gw1}")
    assert opened >= CALLS and handshakes >= opened, "the client sidecar originates mTLS to the gateway"
    assert through_gw2 >= opened, "every connection to ratings passed network-2's east-west gateway"
    assert through_gw1 == 0, "network-1's gateway is not on the path out of network-1"


def test_same_network_stays_direct(mesh: Mesh) -> None:
    """details has an instance on the client's own network and zone: locality keeps every call there, and
    network-2's gateway sees none of them."""
    client_addr = mesh.one("client", "cluster-1")["address"]
    gw2 = mesh.admin("istio-eastwestgateway", "cluster-2")
    sni = "tcp.sni_dnat_15443.downstream_cx_total"
    before = stat(gw2, sni)
    answers = [call(client_addr, DETAILS) for _ in range(CALLS)]
    assert {a["cluster"] for a in answers} == {"cluster-1"}
    assert stat(gw2, sni) == before
