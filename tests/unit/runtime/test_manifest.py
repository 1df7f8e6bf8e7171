"""The manifest format: parsing, errors that name the field, service compilation to ServiceEntries, addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshplane.runtime.demo import demo_manifest
from meshplane.runtime.manifest import (
    ManifestError,
    expand,
    instance_address,
    load_manifest,
    parse_manifest,
    service_entry,
)


def minimal(**workload: Any) -> dict[str, Any]:
    w = {"name": "web", "command": ["{python}", "app.py"], "ports": [8000], **workload}
    return {"clusters": [{"name": "c1"}, {"name": "c2", "zone": "zone-b"}], "workloads": [w]}


def test_demo_manifest_is_bookinfo_shaped() -> None:
    m = parse_manifest(demo_manifest())
    assert [c.name for c in m.clusters] == ["cluster-1", "cluster-2"]
    assert {c.zone for c in m.clusters} == {"zone-a", "zone-b"} and {c.network for c in m.clusters} == {"network-1"}
    by_cluster = {c.name: sorted(w.name for w in m.workloads if c.name in w.clusters) for c in m.clusters}
    assert by_cluster["cluster-1"] == ["details-v1", "istio-ingressgateway", "productpage-v1", "ratings-v1",
                                       "reviews-v1", "reviews-v2"]
    assert by_cluster["cluster-2"] == ["details-v1", "istio-ingressgateway", "productpage-v1", "ratings-v1",
                                       "reviews-v1", "reviews-v3"]
    gw = m.find("istio-ingressgateway")[0]
    assert gw.gateway and gw.namespace == "istio-system" and gw.labels["istio"] == "ingressgateway"
    assert gw.ports[0].gateway_listen_port == 8080
    assert {w.service_account for w in m.workloads if not w.gateway} == {
        "bookinfo-productpage", "bookinfo-details", "bookinfo-reviews", "bookinfo-ratings"}
    kinds = [(o["kind"], o["metadata"]["name"]) for o in m.objects]
    assert ("Gateway", "bookinfo-gateway") in kinds and ("VirtualService", "bookinfo") in kinds
    se = next(o for o in m.objects if o["kind"] == "ServiceEntry" and o["metadata"]["name"] == "reviews")
    assert se["spec"]["hosts"] == ["reviews.default.svc.cluster.local"]
    assert se["spec"]["workloadSelector"] == {"labels": {"app": "reviews"}}
    assert se["spec"]["resolution"] == "STATIC" and se["spec"]["location"] == "MESH_INTERNAL"
    # Gateways come first in each cluster, so they get address .1.
    assert m.placements()[0][0].gateway


def test_defaults_and_placements() -> None:
    m = parse_manifest(minimal(clusters=["c1", "c2"], replicas=2))
    w = m.workloads[0]
    assert w.namespace == "default" and w.service_account == "default" and w.replicas == 2
    assert w.ports[0].port == 8000 and w.ports[0].app_port == 18000
    assert [(x.name, c.name) for x, c in m.placements()] == [("web", "c1"), ("web", "c2")]
    assert w.key("c2") == "default/web@c2"


@pytest.mark.parametrize(("change", "message"), [
    ({"name": "Web"}, "DNS label"),
    ({"clusters": ["nowhere"]}, "cluster 'nowhere' is not declared"),
    ({"replicas": -1}, "replicas"),
    ({"command": []}, "command: required"),
    ({"ports": [0]}, "port: expected a number"),
    ({"ports": [80, 80]}, "duplicate port"),
    ({"role": "router"}, "role"),
    ({"labels": {"app": "web", "version": [1]}}, r"web\.labels\.version: expected a string, got \[1\]"),
    ({"labels": {"version": True}}, r"web\.labels\.version: expected a string"),
    ({"labels": {"version": "v 1"}}, r"web\.labels: value 'v 1': a valid label must"),
    ({"labels": {"bad key!": "x"}}, r"web\.labels: key 'bad key!': name part must"),
    ({"labels": {"a": "x" * 64}}, "must be no more than 63 characters"),
    ({"env": {"A": {"nested": 1}}}, r"web\.env\.A: expected a string"),
])
def test_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(minimal(**change))


def test_unknown_top_level_field_and_duplicates() -> None:
    with pytest.raises(ManifestError, match="unknown field 'servces'"):
        parse_manifest({**minimal(), "servces": []})
    doc = minimal()
    doc["workloads"].append(dict(doc["workloads"][0]))
    with pytest.raises(ManifestError, match="declared twice"):
        parse_manifest(doc)


def test_gateway_by_label_needs_no_command() -> None:
    m = parse_manifest(minimal(command=[], labels={"istio": "ingressgateway"}, ports=[80, 443]))
    w = m.workloads[0]
    assert w.gateway
    assert [p.gateway_listen_port for p in w.ports] == [8080, 8443]


def test_service_forms() -> None:
    se = service_entry({"name": "api", "namespace": "shop", "ports": [{"port": 7070, "name": "grpc",
                                                                        "protocol": "grpc"}]}, 0)
    assert se["spec"]["hosts"] == ["api.shop.svc.cluster.local"]
    assert se["spec"]["ports"] == [{"number": 7070, "name": "grpc", "protocol": "GRPC"}]
    assert se["spec"]["workloadSelector"] == {"labels": {"app": "api"}}
    raw = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "x"},
           "spec": {"hosts": ["x.example"]}}
    assert service_entry(raw, 0) == raw
    with pytest.raises(ManifestError, match="at least one port"):
        service_entry({"name": "api"}, 0)


def test_extra_yaml_documents_become_config(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    vs = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
          "spec": {"hosts": ["web"]}}
    path.write_text(yaml.safe_dump(minimal()) + "---\n" + yaml.safe_dump(vs))
    m = load_manifest(path)
    assert m.name == "mesh" and m.objects[-1]["kind"] == "VirtualService"


def test_addresses_and_templates() -> None:
    assert instance_address(24, 2, 5) == "127.24.2.5"
    with pytest.raises(ManifestError):
        instance_address(24, 1, 255)
    assert expand("{python} --listen {listen} {unknown}", {"python": "py", "listen": "1.2.3.4:5"}) == (
        "py --listen 1.2.3.4:5 {unknown}")


def test_label_values_must_be_strings_and_env_values_are_text() -> None:
    with pytest.raises(ManifestError, match=r'web\.labels\.version: expected a string, got 1\.1 \(quote it'):
        parse_manifest(minimal(labels={"app": "web", "version": 1.1}))  # YAML's reading of `version: 1.10`
    m = parse_manifest(minimal(env={"DEBUG": 1, "VERBOSE": True}))
    assert dict(m.workloads[0].env) == {"DEBUG": "1", "VERBOSE": "True"}


@pytest.mark.parametrize("text", ["[1, 2]\n", "just a string\n", "42\n"])
def test_a_manifest_that_is_not_a_map_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError, match="expected a map with clusters, workloads, services at the top"):
        load_manifest(path)
