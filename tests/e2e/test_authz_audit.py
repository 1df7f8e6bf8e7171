"""Envoy's authorization decisions in the security audit trail, end to end on the local runtime: ratings with an
AuthorizationPolicy DENY for one caller's principal and a dry-run (``istio.io/dry-run``) DENY for another's.

Checked with real processes and real Envoys: the denied caller gets 403 and an ``authz.deny`` record; the dry-run
caller still gets 200 and an ``authz.shadow_deny`` record; both carry the caller's SPIFFE id, the callee's id,
method, path and policy, and the reporting agent's SPIFFE id (``details.reportedBy``: the agent authenticates
with its bootstrap token), readable through ``meshplane audit -o json``; a report without a token is refused.
Waiting is bounded by generous deadlines; nothing asserts how long anything took.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_runtime_support import eventually, meshplane, running_mesh

pytestmark = [pytest.mark.envoy]

MANIFEST = """\
name: az
clusters: [{name: c1, network: network-1, region: region-1, zone: zone-a}]
security: {mtls: true}
workloads:
- name: ratings-v1
  namespace: default
  labels: {app: ratings, version: v1}
  serviceAccount: ratings
  ports: [{port: 9080, name: http, protocol: HTTP}]
  command: ["{python}", "-m", "meshplane.runtime.demoapp", "--service", "ratings", "--listen", "{listen}"]
  readiness: {httpGet: {path: /healthz}}
- name: bad
  namespace: default
  labels: {app: bad}
  serviceAccount: bad
  ports: [9080]
  command: ["{python}", "-m", "meshplane.runtime.demoapp", "--service", "details", "--listen", "{listen}"]
- name: probe
  namespace: default
  labels: {app: probe}
  serviceAccount: probe
  ports: [9080]
  command: ["{python}", "-m", "meshplane.runtime.demoapp", "--service", "details", "--listen", "{listen}"]
services:
- {name: ratings, namespace: default, ports: [{port: 9080, name: http}], selector: {app: ratings}}
"""


def policy(name: str, sa: str, dry_run: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if dry_run:
        meta["annotations"] = {"istio.io/dry-run": "true"}
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta,
            "spec": {"selector": {"matchLabels": {"app": "ratings"}}, "action": "DENY",
                     "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/default/sa/{sa}"]}}]}]}}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    manifest = tmp_path / "az.yaml"
    manifest.write_text(MANIFEST)
    with running_mesh(manifest, tmp_path / "home") as running:
        yield running


def via_sidecar(caller: dict[str, Any], path: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://{caller['address']}:15001"}))
    try:
        with opener.open(urllib.request.Request(f"http://ratings:9080{path}"), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def create(api: str, obj: dict[str, Any]) -> None:
    req = urllib.request.Request(f"{api}/apis/security.istio.io/v1/namespaces/default/authorizationpolicies",
                                 data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201


def audit(home: Path, kind: str) -> list[dict[str, Any]]:
    out = json.loads(meshplane("audit", "-o", "json", "--kind", kind, "--home", str(home)).stdout)
    items = out.get("items", out) if isinstance(out, dict) else out
    return [e for e in items if e.get("kind") == kind]


def test_rbac_deny_and_dry_run_deny_are_audited(mesh: tuple[Path, dict[str, Any]]) -> None:
    home, st = mesh
    bad = next(w for w in st["workloads"] if w["workload"] == "bad")
    probe = next(w for w in st["workloads"] if w["workload"] == "probe")
    eventually(lambda: via_sidecar(bad, "/") == 200 and via_sidecar(probe, "/") == 200, "both callers reach ratings")
    create(st["api"], policy("deny-bad", "bad", dry_run=False))
    create(st["api"], policy("would-deny-probe", "probe", dry_run=True))
    eventually(lambda: via_sidecar(bad, "/denied-path") == 403, "the DENY policy blocks bad")
    assert via_sidecar(probe, "/shadow-path") == 200  # a dry-run policy blocks nothing

    def recorded() -> bool:
        via_sidecar(probe, "/shadow-path")
        deny = [e for e in audit(home, "authz.deny") if e["details"].get("path") == "/denied-path"]
        shadow = [e for e in audit(home, "authz.shadow_deny") if e["details"].get("path") == "/shadow-path"]
        return bool(deny and shadow)

    eventually(recorded, "the deny and the dry-run deny in `meshplane audit`")
    deny = next(e for e in audit(home, "authz.deny") if e["details"].get("path") == "/denied-path")
    shadow = next(e for e in audit(home, "authz.shadow_deny") if e["details"].get("path") == "/shadow-path")
    ratings = "spiffe://cluster.local/ns/default/sa/ratings"
    assert deny["subject"] == "spiffe://cluster.local/ns/default/sa/bad" and deny["target"] == ratings
    assert "deny-bad" in deny["details"]["policy"] and deny["details"]["dryRun"] == "false"
    assert deny["details"]["method"] == "GET"
    assert shadow["subject"] == "spiffe://cluster.local/ns/default/sa/probe" and shadow["target"] == ratings
    assert "would-deny-probe" in shadow["details"]["policy"] and shadow["details"]["dryRun"] == "true"
    # Reported by ratings' agent under its own identity (its bootstrap token), not anonymously.
    assert deny["details"]["reportedBy"] == ratings and shadow["details"]["reportedBy"] == ratings
    # Nobody can forge a record: a report without a workload's token is refused, and that is audited.
    forged = {"kind": "authz.deny", "subject": "spiffe://cluster.local/ns/default/sa/probe", "target": ratings,
              "reason": "forged", "details": {"path": "/forged"}}
    req = urllib.request.Request(f"{st['api']}/management/v1/security/audit", data=json.dumps(forged).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 401
    assert not [e for e in audit(home, "authz.deny") if e["details"].get("path") == "/forged"]
    assert audit(home, "audit.refused")
    # bad's requests are never reported as shadow denies of probe's policy, and probe is never denied.
    assert not [e for e in audit(home, "authz.deny") if e["subject"].endswith("/sa/probe")]
