"""OPA on the local runtime, end to end: an ASMOPAPolicy (Rego v1, ``default allow := false``) applied through the
API is evaluated by the regorus engine in the ratings instance's agent, reached by its Envoy through ext_authz on a
Unix socket, with the caller's SPIFFE id from the mTLS handshake as ``source.principal``.

Checked with real processes and Envoys (the zero-trust manifest of ``test_zero_trust_runtime``): the policy allows
by identity (``good`` everywhere) and by path (anyone on ``/public``), denies the rest with 403; a policy that is
not Rego is refused by the API; every OPA deny is in the audit trail with the caller's and the callee's identity;
a policy using a Rego shared from the root namespace (``policyRegoID``) decides the same, one naming an ID nobody
publishes denies everyone.
Waiting is bounded by generous deadlines; nothing asserts how long anything took.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from test_runtime_support import eventually, meshplane
from test_zero_trust_runtime import instance, mesh, via_sidecar

pytestmark = [pytest.mark.envoy]
__all__ = ["mesh"]  # the fixture, shared with the zero-trust test

POLICY = """\
package istio.authz
import rego.v1

default allow := false

allow if input.attributes.source.principal == "spiffe://cluster.local/ns/default/sa/good"

allow if {
  input.attributes.request.http.method == "GET"
  startswith(input.attributes.request.http.path, "/public")
}
"""


def opa_policy(rego: str) -> dict[str, Any]:
    return {"apiVersion": "istio.alibabacloud.com/v1", "kind": "ASMOPAPolicy",
            "metadata": {"name": "ratings-opa", "namespace": "default"},
            "spec": {"workloadSelector": {"labels": {"app": "ratings"}}, "policy": rego}}


def post(api: str, obj: dict[str, Any], method: str = "POST") -> int:
    ns = obj["metadata"]["namespace"]
    url = f"{api}/apis/istio.alibabacloud.com/v1/namespaces/{ns}/asmopapolicies"
    if method == "DELETE":
        url += "/" + obj["metadata"]["name"]
    req = urllib.request.Request(url, data=json.dumps(obj).encode() if method == "POST" else None,
                                 headers={"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_opa_policy_allows_and_denies_by_path_and_identity(mesh: tuple[Path, dict[str, Any]]) -> None:
    home, st = mesh
    good, bad = instance(st, "good"), instance(st, "bad")
    eventually(lambda: via_sidecar(bad, "http://ratings:9080/private") == 200, "bad -> ratings before OPA")

    assert post(st["api"], opa_policy("package istio.authz\nallow if {{{")) == 422
    assert post(st["api"], opa_policy(POLICY)) == 201

    eventually(lambda: via_sidecar(bad, "http://ratings:9080/private") == 403, "OPA denies bad on /private")
    assert via_sidecar(bad, "http://ratings:9080/public/info") == 200  # allowed by path
    assert via_sidecar(good, "http://ratings:9080/private") == 200  # allowed by identity
    assert via_sidecar(good, "http://ratings:9080/public/info") == 200

    def denied_in_audit() -> bool:
        out = meshplane("audit", "--home", str(home), "-o", "json", "--kind", "opa.deny").stdout
        return any(e["subject"] == "spiffe://cluster.local/ns/default/sa/bad"
                   and e["target"] == "spiffe://cluster.local/ns/default/sa/ratings"
                   and e["details"].get("path") == "/private" for e in json.loads(out)["items"])

    eventually(denied_in_audit, "the OPA deny in the audit trail")
    table = meshplane("audit", "--home", str(home), "--since", "10m", "--kind", "opa").stdout
    assert "opa.deny" in table and "sa/bad" in table

    # Shared Rego (policyRegoID): the root namespace publishes POLICY (its own selector picks no workload), ratings'
    # policy names it and decides exactly as the inline one did.
    assert post(st["api"], opa_policy(POLICY), "DELETE") == 200
    eventually(lambda: via_sidecar(bad, "http://ratings:9080/private") == 200, "no OPA policy: bad passes again")
    publisher = {"apiVersion": "istio.alibabacloud.com/v1", "kind": "ASMOPAPolicy",
                 "metadata": {"name": "shared-authz", "namespace": "istio-system"},
                 "spec": {"workloadSelector": {"labels": {"app": "no-such-workload"}}, "policyRegoID": "good-or-public",
                          "policy": POLICY}}
    user = {"apiVersion": "istio.alibabacloud.com/v1", "kind": "ASMOPAPolicy",
            "metadata": {"name": "ratings-shared", "namespace": "default"},
            "spec": {"workloadSelector": {"labels": {"app": "ratings"}}, "policyRegoID": "good-or-public"}}
    assert post(st["api"], publisher) == 201
    assert post(st["api"], user) == 201
    eventually(lambda: via_sidecar(bad, "http://ratings:9080/private") == 403, "the shared Rego denies bad")
    assert via_sidecar(bad, "http://ratings:9080/public/info") == 200
    assert via_sidecar(good, "http://ratings:9080/private") == 200
    # A policy naming an ID nobody publishes fails closed: nobody passes.
    dangling = {**user, "metadata": {"name": "ratings-dangling", "namespace": "default"},
                "spec": {**user["spec"], "policyRegoID": "nowhere"}}
    assert post(st["api"], dangling) == 201
    eventually(lambda: via_sidecar(good, "http://ratings:9080/private") == 403, "an unresolved ID denies everyone")
