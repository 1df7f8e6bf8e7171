"""A second ``meshplane server`` on the xDS or CA port of a running one fails at start, naming the address.

gRPC binds with SO_REUSEPORT by default: two servers then both listened on 15010/15012 and the kernel split the
proxies between two control planes (a silent split brain). Both processes here are real ``meshplane server``s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, start_server


@pytest.fixture
def first(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "first"
    data.mkdir()
    srv = start_server(data, "--ca-addr", "127.0.0.1:0")
    yield srv
    srv.stop()


def _second(tmp_path: Path, *addrs: str) -> subprocess.CompletedProcess[str]:
    data = tmp_path / "second"
    data.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "meshplane.cli.main", "server", "--data-dir", str(data),
           "--api-addr", "127.0.0.1:0", "--otlp-addr", "none", *addrs]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it started: the bug
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"the second server started on a taken address {addrs}:\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_taken_xds_port_fails_naming_it(first: ServerProcess, tmp_path: Path) -> None:
    res = _second(tmp_path, "--xds-addr", first.xds, "--ca-addr", "127.0.0.1:0")
    assert res.returncode == 2
    assert f"error: xDS server: cannot listen on {first.xds}: the address is in use" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "second" / "server.json").exists()


def test_taken_ca_port_fails_naming_it(first: ServerProcess, tmp_path: Path) -> None:
    ca = json.loads((first.data_dir / "server.json").read_text())["ca"]
    res = _second(tmp_path, "--xds-addr", "127.0.0.1:0", "--ca-addr", ca)
    assert res.returncode == 2
    assert f"error: certificate signing service (CA): cannot listen on {ca}" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
