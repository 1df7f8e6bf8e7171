"""The supervisor's part in multi-network: east-west gateway instances carry their network label, and the other
workloads wait (bounded) until those gateways have registered, because their address is part of every
cross-network ClusterLoadAssignment. No process is started here."""

from __future__ import annotations

import json
from pathlib import Path

from meshplane.runtime.home import Home
from meshplane.runtime.manifest import parse_manifest
from meshplane.runtime.supervisor import EASTWEST_WAIT_S, Instance, Supervisor


def _supervisor(tmp_path: Path) -> Supervisor:
    m = parse_manifest({
        "mesh": {"eastWestGateways": True},
        "clusters": [{"name": "c1", "network": "n1"}, {"name": "c2", "network": "n2"}],
        "workloads": [{"name": "web", "clusters": ["c1", "c2"], "command": ["true"], "ports": [9080]}],
    })
    home = Home(tmp_path / "home")
    home.create()
    sup = Supervisor(home, m)
    sup.octet = 77
    for w, c in m.placements():
        inst = Instance(w, c, 0, sup.address_for(w, c, 0))
        sup.instances[inst.name] = inst
    return sup


def _register(sup: Supervisor, name: str) -> None:
    d = sup.home.instance_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    (d / "status.json").write_text(json.dumps({"registered": True}))


def test_eastwest_instances_carry_their_network(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path)
    gw = sup.instances["istio-eastwestgateway-c2-0"]
    assert gw.eastwest and gw.labels["topology.istio.io/network"] == "n2"
    assert gw.address == "127.77.2.1"  # gateways get the first address of their cluster
    web = sup.instances["web-c1-0"]
    assert not web.eastwest and "topology.istio.io/network" not in web.labels
    assert sup.agent_config(gw).gateway_ports == {15443: 15443}


def test_workloads_wait_for_the_eastwest_gateways(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path)
    now = sup.started + 1
    assert sup.eastwest_pending(now)
    _register(sup, "istio-eastwestgateway-c1-0")
    assert sup.eastwest_pending(now)
    _register(sup, "istio-eastwestgateway-c2-0")
    assert not sup.eastwest_pending(now)


def test_the_wait_is_bounded(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path)
    assert not sup.eastwest_pending(sup.started + EASTWEST_WAIT_S + 1)
