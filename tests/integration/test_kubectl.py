"""The real kubectl against a running ``meshplane server``: every flow the issue lists, end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from tests.integration.conftest import Kubectl

VS_V1 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""

VS_V2 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
  labels: {tier: backend}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"""

DR = """\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_apply_create_unchanged_configured(kubectl: Kubectl, tmp_path: Path) -> None:
    f1 = _write(tmp_path, "v1.yaml", VS_V1)
    assert "virtualservice.networking.istio.io/reviews created" in kubectl.run("apply", "-f", f1).stdout
    assert "virtualservice.networking.istio.io/reviews unchanged" in kubectl.run("apply", "-f", f1).stdout
    f2 = _write(tmp_path, "v2.yaml", VS_V2)
    assert "virtualservice.networking.istio.io/reviews configured" in kubectl.run("apply", "-f", f2).stdout
    obj = json.loads(kubectl.run("get", "vs", "reviews", "-o", "json").stdout)
    assert obj["metadata"]["labels"] == {"tier": "backend"}
    assert obj["spec"]["http"][0]["match"][0]["headers"]["end-user"] == {"exact": "jason"}
    assert obj["metadata"]["generation"] == 2
    assert obj["apiVersion"] == "networking.istio.io/v1"


def test_get_table_all_namespaces_yaml(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run("apply", "-f", _write(tmp_path, "vs.yaml", VS_V1))
    kubectl.run("apply", "-n", "other", "-f", _write(tmp_path, "dr.yaml", DR))
    out = kubectl.run("get", "vs").stdout.splitlines()
    assert out[0].split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    cells = out[1].split()
    assert cells[0] == "reviews" and cells[2] == '["reviews"]' and cells[3].endswith("s")
    everything = kubectl.run("get", "vs,dr", "-A").stdout
    assert "default     virtualservice.networking.istio.io/reviews" in everything.replace("   ", "     ")[:0] or (
        "reviews" in everything and "other" in everything
    )
    dr_lines = [line.split() for line in kubectl.run("get", "dr", "-A").stdout.splitlines()]
    assert dr_lines[0] == ["NAMESPACE", "NAME", "HOST", "AGE"]
    assert dr_lines[1][:3] == ["other", "reviews", "reviews"]
    as_yaml = yaml.safe_load(kubectl.run("get", "vs", "reviews", "-o", "yaml").stdout)
    assert as_yaml["kind"] == "VirtualService" and as_yaml["spec"]["hosts"] == ["reviews"]
    names = kubectl.run("get", "dr", "-n", "other", "-o", "name").stdout.split()
    assert names == ["destinationrule.networking.istio.io/reviews"]
    # the API group shortcut and categories resolve
    assert "reviews" in kubectl.run("get", "istio-io", "-n", "other").stdout


def test_get_watch_sees_changes(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run("apply", "-f", _write(tmp_path, "v1.yaml", VS_V1))
    proc = kubectl.popen("get", "vs", "-w", "--output-watch-events")
    try:
        time.sleep(1.5)
        kubectl.run("apply", "-f", _write(tmp_path, "v2.yaml", VS_V2))
        kubectl.run("delete", "vs", "reviews")
        time.sleep(1.5)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    events = [line.split()[0] for line in out.splitlines()[1:]]
    # The spec change, and the status writer's (Reconciled, validationMessages) as further MODIFIED events.
    assert events[0] == "ADDED" and events[-1] == "DELETED" and len(events) >= 3, out
    assert set(events[1:-1]) == {"MODIFIED"}, out


def test_server_side_apply_and_conflict(kubectl: Kubectl, tmp_path: Path) -> None:
    f1 = _write(tmp_path, "v1.yaml", VS_V1)
    assert "serverside-applied" in kubectl.run("apply", "--server-side", "-f", f1).stdout
    f2 = _write(tmp_path, "v2.yaml", VS_V2)
    kubectl.run("apply", "--server-side", "-f", f2)
    obj = json.loads(kubectl.run("get", "vs", "reviews", "-o", "json").stdout)
    assert len(obj["spec"]["http"]) == 2 and obj["metadata"]["labels"] == {"tier": "backend"}
    # another manager applying a different value for a field the first owns conflicts, unless forced
    res = kubectl.run(
        "apply", "--server-side", "--field-manager", "other", "-f", _write(tmp_path, "v1b.yaml", VS_V1), check=False
    )
    assert res.returncode != 0 and "conflict" in res.stderr.lower()
    kubectl.run(
        "apply",
        "--server-side",
        "--field-manager",
        "other",
        "--force-conflicts",
        "-f",
        _write(tmp_path, "v1c.yaml", VS_V1),
    )
    obj = json.loads(kubectl.run("get", "vs", "reviews", "-o", "json").stdout)
    assert len(obj["spec"]["http"]) == 1


def test_diff_patch_label_delete(kubectl: Kubectl, tmp_path: Path) -> None:
    f1 = _write(tmp_path, "v1.yaml", VS_V1)
    kubectl.run("apply", "-f", f1)
    assert kubectl.run("diff", "-f", f1, check=False).returncode == 0
    d = kubectl.run("diff", "-f", _write(tmp_path, "v2.yaml", VS_V2), check=False)
    assert d.returncode == 1 and "jason" in d.stdout
    # diff must not have changed anything (dry run)
    assert "jason" not in kubectl.run("get", "vs", "reviews", "-o", "yaml").stdout
    kubectl.run("patch", "vs", "reviews", "--type", "merge", "-p", '{"spec":{"gateways":["mesh"]}}')
    kubectl.run(
        "patch",
        "vs",
        "reviews",
        "--type",
        "json",
        "-p",
        '[{"op":"add","path":"/spec/hosts/-","value":"reviews.default.svc.cluster.local"}]',
    )
    obj = json.loads(kubectl.run("get", "vs", "reviews", "-o", "json").stdout)
    assert obj["spec"]["gateways"] == ["mesh"]
    assert obj["spec"]["hosts"] == ["reviews", "reviews.default.svc.cluster.local"]
    res = kubectl.run("patch", "vs", "reviews", "-p", '{"spec":{"gateways":["x"]}}', check=False)
    assert res.returncode != 0 and "application/strategic-merge-patch+json is not supported" in res.stderr
    kubectl.run("label", "vs", "reviews", "team=a")
    kubectl.run("annotate", "vs", "reviews", "note=hello")
    obj = json.loads(kubectl.run("get", "vs", "-l", "team=a", "-o", "json").stdout)
    assert [o["metadata"]["name"] for o in obj["items"]] == ["reviews"]
    assert obj["items"][0]["metadata"]["annotations"]["note"] == "hello"
    assert json.loads(kubectl.run("get", "vs", "-l", "team!=a", "-o", "json").stdout)["items"] == []
    assert "deleted" in kubectl.run("delete", "-f", f1).stdout
    res = kubectl.run("get", "vs", "reviews", check=False)
    assert res.returncode != 0 and 'virtualservices.networking.istio.io "reviews" not found' in res.stderr


def test_explain_and_api_resources(kubectl: Kubectl) -> None:
    resources = kubectl.run("api-resources").stdout
    for line in (
        "virtualservices",
        "destinationrules",
        "authorizationpolicies",
        "trafficlabels",
        "asmswimlanegroups",
        "memberclusters",
    ):
        assert line in resources
    vs_line = next(line for line in resources.splitlines() if line.startswith("virtualservices"))
    assert vs_line.split()[1:4] == ["vs", "networking.istio.io/v1", "true"]
    explained = kubectl.run("explain", "vs.spec.http").stdout
    assert "KIND:" in explained and "VirtualService" in explained and "route" in explained
    assert "networking.istio.io/v1beta1" in kubectl.run("api-versions").stdout


def test_strict_unknown_field_and_invalid(kubectl: Kubectl, tmp_path: Path) -> None:
    bad = VS_V1.replace("  hosts: [reviews]", "  hosts: [reviews]\n  spex: 1")
    res = kubectl.run("apply", "-f", _write(tmp_path, "bad.yaml", bad), check=False)
    assert res.returncode != 0 and 'unknown field "spec.spex"' in res.stderr
    warn = kubectl.run("apply", "--validate=warn", "-f", _write(tmp_path, "warn.yaml", bad))
    assert 'unknown field "spec.spex"' in warn.stderr
    weights = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: split}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 70
    - destination: {host: reviews, subset: v2}
      weight: 20
"""
    res = kubectl.run("apply", "-f", _write(tmp_path, "w.yaml", weights), check=False)
    assert res.returncode != 0
    assert 'The VirtualService "split" is invalid' in res.stderr and "spec.http[0].route" in res.stderr
    # nothing was stored by the failed writes, and the earlier object is intact
    assert kubectl.run("get", "vs", "split", check=False).returncode != 0


def test_namespaces_are_listable(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl.run("apply", "-n", "bookinfo", "-f", _write(tmp_path, "dr.yaml", DR))
    names = kubectl.run("get", "ns", "-o", "name").stdout.split()
    assert {"namespace/default", "namespace/istio-system", "namespace/bookinfo"} <= set(names)
    kubectl.run("create", "ns", "team-a")
    assert "team-a" in kubectl.run("get", "ns").stdout
