"""Zero trust on the local runtime, end to end: ``meshplane up`` with a small manifest (a ``ratings`` service and two
callers with their own service accounts), every sidecar getting its certificate from meshplane's CA through its
agent (key generated in the agent, SDS on a Unix socket).

What is checked, with real processes and real Envoys: callers reach ratings over mTLS (auto mTLS, then STRICT
applied through the API) while plaintext straight to ratings' mesh endpoint is refused under STRICT; an
AuthorizationPolicy DENY by principal blocks one caller and not the other (and the deny is counted); certificates
(20 s lifetime) are renewed several times under a request loop without one failed request; no private key shows
up in the API, the store, the logs or the status output.

Waiting is bounded by generous deadlines; nothing asserts how long anything took.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_runtime_support import eventually, meshplane, running_mesh

pytestmark = [pytest.mark.envoy]

CERT_TTL_S = 20

MANIFEST = f"""\
name: zt
clusters: [{{name: c1, network: network-1, region: region-1, zone: zone-a}}]
security: {{mtls: true, certTtlSeconds: {CERT_TTL_S}}}
workloads:
- name: ratings-v1
  namespace: default
  cluster: c1
  labels: {{app: ratings, version: v1}}
  serviceAccount: ratings
  ports: [{{port: 9080, name: http, protocol: HTTP}}]
  command: ["{{python}}", "-m", "meshplane.runtime.demoapp", "--service", "ratings", "--listen", "{{listen}}"]
  readiness: {{httpGet: {{path: /healthz}}}}
- name: good
  namespace: default
  cluster: c1
  labels: {{app: good}}
  serviceAccount: good
  ports: [9080]
  command: ["{{python}}", "-m", "meshplane.runtime.demoapp", "--service", "details", "--listen", "{{listen}}"]
- name: bad
  namespace: default
  cluster: c1
  labels: {{app: bad}}
  serviceAccount: bad
  ports: [9080]
  command: ["{{python}}", "-m", "meshplane.runtime.demoapp", "--service", "details", "--listen", "{{listen}}"]
services:
- {{name: ratings, namespace: default, ports: [{{port: 9080, name: http}}], selector: {{app: ratings}}}}
config:
# One request per upstream connection: every request is a new TLS handshake with the current certificates.
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {{name: ratings, namespace: default}}
  spec:
    host: ratings.default.svc.cluster.local
    trafficPolicy: {{connectionPool: {{http: {{maxRequestsPerConnection: 1}}}}}}
"""

STRICT = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
          "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
DENY_BAD = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny-bad", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "ratings"}}, "action": "DENY",
                     "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bad"]}}]}]}}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    manifest = tmp_path / "zt.yaml"
    manifest.write_text(MANIFEST)
    with running_mesh(manifest, tmp_path / "home") as running:
        yield running


def instance(st: dict[str, Any], workload: str) -> dict[str, Any]:
    return next(w for w in st["workloads"] if w["workload"] == workload)


def via_sidecar(caller: dict[str, Any], url: str = "http://ratings:9080/") -> int:
    """Status of a request sent through ``caller``'s sidecar (explicit HTTP proxy), as its application would."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://{caller['address']}:15001"}))
    try:
        with opener.open(urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def plaintext(server: dict[str, Any]) -> int:
    """Status of a plaintext request from outside the mesh to ``server``'s mesh endpoint; 0 when refused."""
    try:
        with urllib.request.urlopen(f"http://{server['address']}:9080/", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, ConnectionError, OSError):
        return 0


def kubectl_apply(st: dict[str, Any], obj: dict[str, Any]) -> None:
    data = json.dumps(obj).encode()
    ns = obj["metadata"]["namespace"]
    plural = {"PeerAuthentication": "peerauthentications", "AuthorizationPolicy": "authorizationpolicies"}[obj["kind"]]
    req = urllib.request.Request(f"{st['api']}/apis/security.istio.io/v1/namespaces/{ns}/{plural}", data=data,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201


def envoy_stats(inst: dict[str, Any]) -> str:
    with urllib.request.urlopen(f"http://{inst['address']}:15000/stats", timeout=5) as r:
        return str(r.read().decode())


def stat(text: str, pattern: str) -> int:
    return sum(int(m.group(1)) for m in re.finditer(rf"^{pattern}: (\d+)$", text, re.M))


def cert_status(home: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "instances" / name / "status.json").read_text())
    return dict(data.get("certificate") or {})


def test_zero_trust_on_the_runtime(mesh: tuple[Path, dict[str, Any]]) -> None:
    home, st = mesh
    ratings, good, bad = instance(st, "ratings-v1"), instance(st, "good"), instance(st, "bad")

    # Every instance has its own SPIFFE certificate from the mesh CA.
    for w in (ratings, good, bad):
        cs = cert_status(home, w["name"])
        assert cs["identity"] == f"spiffe://cluster.local/ns/default/sa/{w['serviceAccount']}", cs
        assert cs["serial"] and cs["issued"] >= 1

    # Auto mTLS: callers reach ratings over TLS; without a policy ratings is PERMISSIVE, so plaintext works too.
    eventually(lambda: via_sidecar(good) == 200, "good -> ratings")
    assert via_sidecar(bad) == 200
    assert stat(envoy_stats(good), r"cluster\.outbound\|9080\|\|ratings\.default\.svc\.cluster\.local\.ssl"
                                   r"\.handshake") >= 1
    assert plaintext(ratings) == 200

    # STRICT mesh-wide: mesh traffic keeps working, plaintext from outside the mesh is refused.
    kubectl_apply(st, STRICT)
    eventually(lambda: plaintext(ratings) == 0, "plaintext to ratings refused under STRICT")
    assert via_sidecar(good) == 200 and via_sidecar(bad) == 200

    # DENY by principal: bad is blocked, good is not.
    kubectl_apply(st, DENY_BAD)
    eventually(lambda: via_sidecar(bad) == 403, "bad -> ratings denied")
    assert via_sidecar(good) == 200
    assert stat(envoy_stats(ratings), r"http\.inbound_[0-9.]+_9080\.rbac\.denied") >= 1

    # Renewal under a request loop: at least two new certificates on every side, not one failed request.
    start = {w["name"]: cert_status(home, w["name"])["issued"] for w in (ratings, good)}
    results: list[int] = []

    def renewed_twice() -> bool:
        results.append(via_sidecar(good))
        return all(cert_status(home, n)["issued"] >= start[n] + 2 for n in start)

    eventually(renewed_twice, "two renewals of ratings' and good's certificates", deadline_s=CERT_TTL_S * 6)
    assert results and all(r == 200 for r in results), f"{results.count(200)}/{len(results)} succeeded: {results}"
    assert cert_status(home, ratings["name"])["caFailures"] == 0

    # The CA recorded every issuance with the identity; the audit trail is readable through the API and the CLI.
    with urllib.request.urlopen(f"{st['api']}/management/v1/security/audit?kind=certificate.issued&limit=10000",
                                timeout=10) as r:
        events = json.loads(r.read())["items"]
    assert {e["subject"] for e in events} >= {"spiffe://cluster.local/ns/default/sa/ratings",
                                              "spiffe://cluster.local/ns/default/sa/good"}
    out = meshplane("audit", "--home", str(home), "-o", "json").stdout
    kinds = {e["kind"] for e in json.loads(out)["items"]}
    assert {"certificate.issued", "token.issued", "change"} <= kinds, kinds

    # No private key anywhere a user or another process could read it: API, store, logs, status.
    assert_no_private_keys(home, st)


KEY_MARKERS = ("PRIVATE KEY",)


def assert_no_private_keys(home: Path, st: dict[str, Any]) -> None:
    texts: dict[str, str] = {}
    for path in ("/apis/networking.istio.io/v1/workloadentries", "/apis/security.istio.io/v1/peerauthentications",
                 "/management/v1/audit?limit=5000", "/management/v1/security/audit?limit=10000",
                 "/management/v1/proxies", "/management/v1/trust-bundle"):
        with urllib.request.urlopen(st["api"] + path, timeout=10) as r:
            texts[f"API {path}"] = r.read().decode()
    texts["status -o json"] = meshplane("status", "-o", "json", "--home", str(home)).stdout
    texts["status"] = meshplane("status", "--home", str(home)).stdout
    texts["audit"] = meshplane("audit", "--home", str(home)).stdout
    for name in ("server", "ratings-v1", "good", "bad"):
        texts[f"logs {name}"] = meshplane("logs", name, "--home", str(home)).stdout
    store = home / "server" / "store.db"
    texts["store"] = b"".join(p.read_bytes() for p in store.parent.glob("store.db*")).decode("latin-1")
    for p in home.rglob("*"):
        # Only the CA's own keys (0600, in the server's CA directory) may exist on disk.
        if p.is_file() and p.parent != home / "server" / "ca":
            texts[str(p.relative_to(home))] = p.read_bytes().decode("latin-1")
    for p in (home / "server" / "ca").glob("*key*"):
        assert p.stat().st_mode & 0o077 == 0, f"{p} is readable by others"
    leaks = [where for where, text in texts.items() if any(m in text for m in KEY_MARKERS)]
    assert leaks == [], f"private key material in: {leaks}"
    # The sidecar's key is in Envoy (over SDS) only: its admin config dump redacts it.
    url = f"http://{instance(st, 'good')['address']}:15000/config_dump?include_eds"
    with urllib.request.urlopen(url, timeout=10) as r:
        dump = r.read().decode()
    assert "sds-grpc" in dump and "PRIVATE KEY" not in dump
