"""The runtime's multi-network manifest: east-west gateways (one per network, labelled with it, port 15443) and
the ServiceEntry through which the control plane finds them; the demo's two-network variant."""

from __future__ import annotations

from typing import Any

import pytest

from meshplane.runtime.demo import demo_manifest
from meshplane.runtime.manifest import ManifestError, parse_manifest


def _doc(mesh: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "clusters": [{"name": "c1", "network": "n1"}, {"name": "c2", "network": "n2"},
                     {"name": "c3", "network": "n2", "zone": "zone-c"}],
        "workloads": [{"name": "web", "clusters": ["c1", "c2"], "command": ["true"], "ports": [9080]}],
        **extra,
    }
    if mesh is not None:
        doc["mesh"] = mesh
    return doc


def test_eastwest_gateway_per_network_when_asked() -> None:
    m = parse_manifest(_doc({"eastWestGateways": True}))
    (ew,) = m.find("istio-eastwestgateway", "istio-system")
    assert ew.gateway and ew.labels["istio"] == "eastwestgateway"
    assert ew.clusters == ("c1", "c2")  # the first cluster of each network
    assert [p.port for p in ew.ports] == [15443] and ew.ports[0].gateway_listen_port == 15443
    se = m.objects[0]
    assert se["kind"] == "ServiceEntry" and se["metadata"]["namespace"] == "istio-system"
    assert se["spec"]["workloadSelector"] == {"labels": {"istio": "eastwestgateway"}}
    assert se["spec"]["exportTo"] == ["."]
    # Gateways are placed first, so they start before the workloads.
    assert m.placements()[0][0] is ew


def test_auto_needs_several_networks_and_is_the_default() -> None:
    assert parse_manifest(_doc({"eastWestGateways": "auto"})).find("istio-eastwestgateway")
    one = _doc({"eastWestGateways": "auto"})
    for c in one["clusters"]:
        c["network"] = "n1"
    assert not parse_manifest(one).find("istio-eastwestgateway")
    # the default is auto: several networks get their gateways without asking, one network none
    assert parse_manifest(_doc()).find("istio-eastwestgateway")
    flat = _doc()
    for c in flat["clusters"]:
        c["network"] = "n1"
    assert not parse_manifest(flat).find("istio-eastwestgateway")
    assert not parse_manifest(_doc({"eastWestGateways": False})).find("istio-eastwestgateway")


def test_eastwest_needs_mtls_and_a_valid_value() -> None:
    with pytest.raises(ManifestError, match="mtls"):
        parse_manifest(_doc({"eastWestGateways": True}, security={"mtls": False}))
    assert not parse_manifest(_doc({"eastWestGateways": "auto"}, security={"mtls": False})).find(
        "istio-eastwestgateway")
    with pytest.raises(ManifestError, match="eastWestGateways"):
        parse_manifest(_doc({"eastWestGateways": "sometimes"}))


def test_demo_on_two_networks() -> None:
    one = parse_manifest(demo_manifest())
    assert {c.network for c in one.clusters} == {"network-1"} and not one.find("istio-eastwestgateway")
    two = parse_manifest(demo_manifest(networks=2))
    assert [(c.name, c.network) for c in two.clusters] == [("cluster-1", "network-1"), ("cluster-2", "network-2")]
    (ew,) = two.find("istio-eastwestgateway")
    assert ew.clusters == ("cluster-1", "cluster-2")
