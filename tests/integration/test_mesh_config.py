"""The mesh configuration of a real ``meshplane server`` process, as Istio users reach it: ``--mesh-config FILE``
is published as ConfigMap ``istio-system/istio`` (key ``mesh``); ``kubectl get/apply`` work on it; a change of
the ConfigMap or of the file is reloaded (``GET /management/v1/mesh-config`` says what is in effect); invalid
content is refused naming the field (422 at admission; logged for the file) and the previous settings stay."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import Kubectl
from tests.support.server import ServerProcess, start_server

DATA = Path(__file__).resolve().parents[1] / "data" / "authz-custom"


def _task_mesh() -> str:
    return str(yaml.safe_load((DATA / "istio-configmap.yaml").read_text())["data"]["mesh"])


@pytest.fixture
def mesh_file(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text(_task_mesh())
    return path


@pytest.fixture
def server(tmp_path: Path, mesh_file: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "data"
    data.mkdir()
    srv = start_server(data, "--mesh-config", str(mesh_file))
    try:
        yield srv
    finally:
        srv.stop()


def _status(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/management/v1/mesh-config", timeout=5) as r:
        return dict(json.loads(r.read()))


def _providers(server: ServerProcess) -> list[str]:
    return [p["name"] for p in _status(server)["extensionProviders"]]


def _eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _configmap(mesh: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "istio", "namespace": "istio-system"}, "data": {"mesh": mesh}})


def test_mesh_config_file_configmap_and_hot_reload(server: ServerProcess, kubectl: Kubectl, mesh_file: Path) -> None:
    # Published at start, readable with kubectl as Istio's users know it.
    cm = json.loads(kubectl.run("get", "configmap", "istio", "-n", "istio-system", "-o", "json").stdout)
    assert cm["data"]["mesh"] == _task_mesh()
    assert "istio" in kubectl.run("get", "cm", "-n", "istio-system").stdout
    status = _status(server)
    assert status["source"] == "ConfigMap istio-system/istio" and status["file"] == str(mesh_file)
    assert _providers(server) == ["sample-ext-authz-grpc", "sample-ext-authz-http"]

    # kubectl apply: reloaded (a tracing provider added; its field meshplane does not apply is warned about).
    added = _task_mesh() + ('\n- name: otel\n  opentelemetry:\n    service: otel.obs.svc.cluster.local\n'
                            '    port: 4317\n    maxTagLength: 64\n')
    out = kubectl.run("apply", "-f", "-", input=_configmap(added))
    assert "Warning" in out.stderr and "opentelemetry.maxTagLength" in out.stderr
    _eventually(lambda: "otel" in _providers(server), "the applied ConfigMap in effect")
    reloads = _status(server)["reloads"]

    # Invalid content is refused at admission, naming the field; the settings stay.
    bad = _task_mesh().replace('port: "8000"', 'port: "80000"')
    res = kubectl.run("apply", "-f", "-", input=_configmap(bad), check=False)
    assert res.returncode != 0
    assert "extensionProviders[1].envoyExtAuthzHttp.port" in res.stderr and "data[mesh]" in res.stderr
    res = kubectl.run("apply", "-f", "-", input=_configmap("noSuchField: 1\n"), check=False)
    assert res.returncode != 0 and "noSuchField" in res.stderr
    assert "otel" in _providers(server) and _status(server)["reloads"] == reloads

    # The file changes: published into the ConfigMap and reloaded.
    mesh_file.write_text(_task_mesh().split("- name: \"sample-ext-authz-http\"")[0])
    _eventually(lambda: _providers(server) == ["sample-ext-authz-grpc"], "the edited file in effect")
    cm = json.loads(kubectl.run("get", "configmap", "istio", "-n", "istio-system", "-o", "json").stdout)
    assert "sample-ext-authz-http" not in cm["data"]["mesh"]

    # An invalid file is not published: the ConfigMap and the settings stay.
    mesh_file.write_text("extensionProviders:\n- name: x\n  envoyExtAuthzGrpc: {service: s}\n")
    time.sleep(2.5)  # the file is polled every second; nothing may change
    assert _providers(server) == ["sample-ext-authz-grpc"]
    assert _status(server)["refused"] >= 1
    log = (server.data_dir.parent / f"{server.data_dir.name}-server.log").read_text()
    assert "extensionProviders[0].envoyExtAuthzGrpc.port: required" in log


def test_an_invalid_mesh_config_file_stops_the_server(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("outboundTrafficPolicy:\n  mode: OPEN\n")
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(RuntimeError, match="server exited"):
        start_server(data, "--mesh-config", str(bad))
    log = (tmp_path / "data-server.log").read_text()
    assert "outboundTrafficPolicy.mode: must be ALLOW_ANY or REGISTRY_ONLY" in log
