"""Every command finds the running control plane the same way: ``--home``, ``$MESHPLANE_HOME``, ``./mesh-data``,
``~/.meshplane``; and the rough edges of addresses: a ``--server`` without a scheme, the xDS port given as the API,
an API address in use, each one line on stderr, not a traceback.

One real ``meshplane server`` started with ``--home`` (so its state is where a local mesh's is: HOME/server) serves
the module; the commands run in this process through ``main`` with the environment set per test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshplane.cli.main import main

pytestmark = pytest.mark.usefixtures("no_env_home")


@pytest.fixture
def no_env_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MESHPLANE_HOME, an empty working directory and an empty ~ unless a test sets them."""
    monkeypatch.delenv("MESHPLANE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("mesh") / "home"
    log = open(root.parent / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "meshplane.cli.main", "server", "--home", str(root),
                             "--api-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0", "--ca-addr", "none",
                             "--no-console-scrape"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MESHPLANE_HOME": ""})
    state = root / "server" / "server.json"
    try:
        deadline = time.monotonic() + 30
        while not state.exists():
            assert proc.poll() is None, (root.parent / "server.log").read_text()
            assert time.monotonic() < deadline, "server --home did not write HOME/server/server.json"
            time.sleep(0.05)
        yield root
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def state(home: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((home / "server" / "server.json").read_text())
    return data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_server_home_puts_its_state_in_the_home(home: Path) -> None:
    assert (home / "server" / "store.db").exists()
    with urllib.request.urlopen(state(home)["api"] + "/readyz", timeout=5) as r:
        assert r.status == 200


@pytest.mark.parametrize("how", ["flag", "env", "default-home"])
def test_kubeconfig_finds_the_server(home: Path, how: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["kubeconfig"]
    if how == "flag":
        argv += ["--home", str(home)]
    elif how == "env":
        monkeypatch.setenv("MESHPLANE_HOME", str(home))
    else:  # after `meshplane demo up` with no --home: ~/.meshplane
        (tmp_path / "user").mkdir()
        (tmp_path / "user" / ".meshplane").symlink_to(home)
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert f"server: {state(home)['api']}" in out


def test_commands_take_home(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = ["--home", str(home)]
    code, out, err = run(capsys, "proxy-status", *h)
    assert code == 0, err
    assert out.split()[:10] == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "SDS", "ISTIOD", "VERSION", "ERROR"]
    code, out, err = run(capsys, "cluster", "list", *h)
    assert code == 0 and out.startswith("NAME"), err
    code, out, err = run(capsys, "trace", *h)
    assert code == 0 and "no traces" in out, err
    code, out, err = run(capsys, "audit", *h)
    assert code == 0, err
    code, out, err = run(capsys, "analyze", *h)
    assert code == 0 and "No validation issues found" in err, err
    code, out, err = run(capsys, "bootstrap", "--workload", "web", *h)
    assert code == 0, err
    xds = json.loads(out)["static_resources"]["clusters"]
    assert state(home)["xds"].rpartition(":")[2] in json.dumps(xds)


def test_bootstrap_asks_a_server_given_by_url_for_its_xds(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "bootstrap", "--workload", "web", "--server", state(home)["api"])
    assert code == 0, err
    assert state(home)["xds"].rpartition(":")[2] in out


def test_version_names_client_and_control_plane(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "version", "--home", str(home), "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["clientVersion"]["version"]
    cp = doc["meshVersion"][0]["info"]
    assert (cp["id"], cp["xds"]) == (state(home)["replica"], state(home)["xds"])  # the replica id
    assert doc["dataPlaneVersion"] == []
    code, out, err = run(capsys, "version", "--short", "--home", str(home))
    assert code == 0 and out.splitlines()[1].startswith("control plane version: "), err


def test_no_server_anywhere_says_where_it_looked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "proxy-status")
    assert code == 2
    assert err.count("\n") == 1 and "no running mesh in" in err and "mesh-data" in err and "--server" in err
    code, _, err = run(capsys, "kubeconfig", "--home", str(tmp_path / "nothing"))
    assert code == 2 and "no running mesh in" in err and "Traceback" not in err


def test_a_server_without_scheme_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "proxy-status", "--server", "127.0.0.1:8080")
    assert code == 2
    assert err == ("error: --server '127.0.0.1:8080' is not a URL of the API: write it with its scheme, e.g. "
                   "http://127.0.0.1:8080\n")
    code, _, err = run(capsys, "cluster", "list", "--server", "127.0.0.1:8080")
    assert code == 2 and "http://127.0.0.1:8080" in err


def test_the_xds_port_given_as_the_api_is_named(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "proxy-status", "--server", f"http://{state(home)['xds']}")
    assert code == 2
    assert err.count("\n") == 1 and "HTTP/2 only: a gRPC port (xDS, CA or traces), not the API" in err
    assert "\\x00" not in err


def test_an_api_address_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "meshplane.cli.main", "server", "--data-dir",
                               str(tmp_path / "d"), "--api-addr", f"127.0.0.1:{port}", "--xds-addr", "none",
                               "--ca-addr", "none", "--otlp-addr", "none"],
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --api-addr 127.0.0.1:{port}: the address is in use (another meshplane server? `meshplane status` "
        "shows a local mesh's API)")
    assert "Traceback" not in proc.stderr


def test_a_dead_servers_state_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "dead"
    d.mkdir()
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (d / "server.json").write_text(json.dumps({"api": "http://127.0.0.1:1", "pid": int(child.stdout)}))
    code, _, err = run(capsys, "cluster", "list", "--data-dir", str(d))
    assert code == 2 and "is not running" in err
