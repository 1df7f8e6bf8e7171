"""The local runtime's process management, end to end with real processes: ``down`` after the supervisor was
killed with SIGKILL, ``scale`` up and to zero, restarts of crashed agents, and health reported into the
WorkloadEntry by the agent's readiness probe.

A one-cluster manifest with two small workloads keeps each mesh quick to start; every process is real (server,
agents, Envoys, demo applications) and every test checks by PID that nothing it started is left.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_runtime_support import (
    alive,
    eventually,
    get_json,
    meshplane,
    recorded_processes,
    status,
    status_processes,
    stopped_after,
)

from meshplane.agent.procs import start_ticks

pytestmark = pytest.mark.envoy


def small_manifest(flag: Path) -> dict[str, Any]:
    def app(service: str) -> dict[str, Any]:
        return {
            "name": f"{service}-v1", "namespace": "default", "cluster": "east", "labels": {"app": service,
                                                                                         "version": "v1"},
            "serviceAccount": f"sa-{service}", "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}],
            "command": ["{python}", "-m", "meshplane.runtime.demoapp", "--service", service, "--listen",
                        "{listen}"],
            "env": {"DEMO_UNHEALTHY_FILE": f"{flag}-{{name}}"},
            "readiness": {"httpGet": {"path": "/healthz"}},
        }

    return {
        "name": "small",
        "clusters": [{"name": "east", "network": "n1", "region": "r1", "zone": "z1"}],
        "workloads": [app("ratings"), app("details")],
        "services": [{"name": "ratings", "ports": [9080]}, {"name": "details", "ports": [9080]}],
    }


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    home = tmp_path / "home"
    flag = tmp_path / "unhealthy"
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(yaml.safe_dump(small_manifest(flag)))
    with stopped_after(home) as seen:
        meshplane("up", "-f", str(manifest), "--home", str(home))
        seen += recorded_processes(home)
        yield home, flag


def workload_entries(api: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(api + "/apis/networking.istio.io/v1/namespaces/default/workloadentries",
                                timeout=10) as r:
        items = json.loads(r.read())["items"]
    return {i["metadata"]["name"]: i for i in items}


def healthy(we: dict[str, Any]) -> str:
    for c in (we.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Healthy":
            return str(c.get("status"))
    return ""


def test_down_after_supervisor_sigkill(mesh: tuple[Path, Path]) -> None:
    home, _ = mesh
    st = status(home)
    procs = recorded_processes(home) + status_processes(st)
    supervisor = st["pid"]
    assert isinstance(supervisor, int)
    os.kill(supervisor, signal.SIGKILL)
    eventually(lambda: start_ticks(supervisor) is None, "the supervisor to die")
    others = [p for p in procs if p[0] != supervisor]
    assert len(alive(others)) == len(others) >= 2 * 3 + 1, "children outlive a SIGKILLed supervisor"
    assert status(home)["phase"] == "dead"
    meshplane("down", "--home", str(home))
    assert alive(procs) == []
    assert status(home)["phase"] == "stopped"


def test_registration_health_scale_and_restart(mesh: tuple[Path, Path]) -> None:
    home, flag = mesh
    st = status(home)
    api = st["api"]
    entries = workload_entries(api)
    assert set(entries) == {"ratings-v1-east-0", "details-v1-east-0"}
    we = entries["ratings-v1-east-0"]
    ratings = next(w for w in st["workloads"] if w["name"] == "ratings-v1-east-0")
    assert we["spec"]["address"] == ratings["address"]
    assert we["spec"]["labels"]["app"] == "ratings"
    assert we["spec"]["labels"]["topology.istio.io/cluster"] == "east"
    assert we["spec"]["serviceAccount"] == "sa-ratings"
    assert we["spec"]["locality"] == "r1/z1" and we["spec"]["network"] == "n1"
    assert healthy(we) == "True"

    # A failing readiness probe marks the WorkloadEntry unhealthy; recovery marks it healthy again.
    unhealthy_flag = Path(f"{flag}-ratings-v1-east-0")
    unhealthy_flag.touch()
    eventually(lambda: healthy(workload_entries(api)["ratings-v1-east-0"]) == "False", "Healthy=False")
    eventually(lambda: not next(w for w in status(home)["workloads"] if w["name"] == ratings["name"])["ready"],
               "status to show the instance not ready")
    unhealthy_flag.unlink()
    eventually(lambda: healthy(workload_entries(api)["ratings-v1-east-0"]) == "True", "Healthy=True")

    # Scale up: a second instance with its own address, registered, reachable through its sidecar.
    meshplane("scale", "ratings-v1", "--replicas", "2", "--home", str(home))
    st = status(home)
    insts = [w for w in st["workloads"] if w["workload"] == "ratings-v1"]
    assert len(insts) == 2 and all(w["ready"] for w in insts)
    assert len({w["address"] for w in insts}) == 2
    assert set(workload_entries(api)) >= {"ratings-v1-east-0", "ratings-v1-east-1"}
    second = next(w for w in insts if w["name"] == "ratings-v1-east-1")
    assert get_json(f"http://{second['address']}:9080/ratings/1")["instance"] == second["name"]

    # A crashed agent (and so its Envoy's supervisor) is restarted; its old Envoy does not linger.
    old_agent, old_envoy = second["agentPid"], second["envoyPid"]
    envoy_ticks = start_ticks(old_envoy)
    os.kill(old_agent, signal.SIGKILL)

    def agent_replaced() -> bool:
        w = next(w for w in status(home)["workloads"] if w["name"] == second["name"])
        return w["agentPid"] not in (None, old_agent) and w["ready"] and w["envoyPid"] != old_envoy

    eventually(agent_replaced, "the agent to be restarted")
    assert start_ticks(old_envoy) != envoy_ticks

    # Scale to zero: the instances stop, their entries go, and they stay stopped.
    meshplane("scale", "ratings-v1", "--replicas", "0", "--home", str(home))
    st = status(home)
    assert [w for w in st["workloads"] if w["workload"] == "ratings-v1"] == []
    assert not {"ratings-v1-east-0", "ratings-v1-east-1"} & set(workload_entries(api))
    assert alive([(p, t) for p, t in status_processes({"workloads": insts}) if p != old_agent]) == []
    for _ in range(5):
        assert [w for w in status(home)["workloads"] if w["workload"] == "ratings-v1"] == []
    assert [w["name"] for w in status(home)["workloads"]] == ["details-v1-east-0"]


def test_up_reports_an_instance_that_keeps_exiting(tmp_path: Path) -> None:
    """An application that cannot run makes ``up`` fail after a few restarts, naming the instance, the exit code
    and the end of its log, instead of waiting out the whole start timeout; ``down`` still stops everything."""
    doc = small_manifest(tmp_path / "unhealthy")
    doc["workloads"][1]["command"] = ["{python}", "-c", "import sys; print('cannot find my config'); sys.exit(3)"]
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    home = tmp_path / "home"
    with stopped_after(home) as seen:
        up = meshplane("up", "-f", str(manifest), "--home", str(home), check=False, timeout=120)
        seen += recorded_processes(home)
        assert up.returncode != 0
        assert "instance details-v1-east-0 keeps exiting: its application exited with 3" in up.stderr, up.stderr
        assert "cannot find my config" in up.stderr
        assert f"meshplane down --home {home}" in up.stderr
        running = status(home)
        looping = next(w for w in running["workloads"] if w["name"] == "details-v1-east-0")
        assert looping["restarts"] >= 3 and not looping["ready"]
