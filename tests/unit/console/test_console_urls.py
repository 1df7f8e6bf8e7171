"""Where users find the console: `demo up` prints it, `meshplane status` shows it, and the proxies' view carries
the address and locality the console scrapes and groups by."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshplane.cli.runtime_cmds import _print_ready
from meshplane.cli.serverproc import proxy_status_json
from meshplane.runtime.control import format_status
from meshplane.runtime.home import Home
from meshplane.xds.status import ProxyStatus


def test_demo_up_prints_the_console(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _print_ready({"name": "bookinfo", "api": "http://127.9.0.1:8080", "xds": "127.9.0.1:15010", "ingress": {}},
                 Home(tmp_path))
    assert "  console http://127.9.0.1:8080/console/\n" in capsys.readouterr().out


def test_status_shows_the_console() -> None:
    st = {"name": "m", "home": "/h", "phase": "running", "error": "", "api": "http://127.9.0.1:8080",
          "console": "http://127.9.0.1:8080/console/", "xds": "x", "ingress": {}, "clusters": [], "workloads": []}
    assert "  console  http://127.9.0.1:8080/console/" in format_status(st)


def test_proxy_view_has_addresses_and_locality() -> None:
    p = ProxyStatus(connection_id="c", node_id="sidecar~127.9.1.2~a.default~default.svc.cluster.local",
                    namespace="default", workload="a", cluster_id="c1", proxy_type="sidecar", delta=False, peer="",
                    connected_since=0.0, pushes=0, types=(), addresses=("127.9.1.2",), locality="r/z")
    (doc,) = proxy_status_json([p])
    assert doc["addresses"] == ["127.9.1.2"] and doc["locality"] == "r/z"
