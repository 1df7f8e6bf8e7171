"""The diagnosis commands' local parts: proxy-status rows (one per instance), INSTANCE resolution and the admin's
loopback rule, the node's Envoy version, and the runtime commands that have nothing to act on."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2

from meshplane.cli.diag_cmds import DiagError, check_admin, instance_dir, proxy_status_rows, status_types
from meshplane.cli.locate import ServerEndpoint
from meshplane.cli.main import build_parser, main
from meshplane.xds.ads import build_version

README = Path(__file__).resolve().parents[3] / "README.md"


def proxy(node: str, cluster: str, version: str = "1.40.0") -> dict[str, object]:
    return {"nodeId": node, "cluster": cluster, "envoyVersion": version,
            "controlPlane": {"id": "meshplane-42", "xds": "127.0.0.1:15010"},
            "types": {"CDS": {"state": "SYNCED"}, "LDS": {"state": "NACKED", "error": "bad listener"},
                      "EDS": {"state": "SYNCED"}, "RDS": {"state": "NOT_SENT"}}}


def test_replicas_of_one_workload_are_rows_of_their_own() -> None:
    rows = proxy_status_rows([proxy("sidecar~127.0.1.5~reviews-v1-cluster-1-1.default~default.svc.cluster.local",
                                    "cluster-1"),
                              proxy("sidecar~127.0.1.4~reviews-v1-cluster-1-0.default~default.svc.cluster.local",
                                    "cluster-1"),
                              proxy("odd-node", "", "")])
    assert [r[0] for r in rows] == ["odd-node", "reviews-v1-cluster-1-0.default", "reviews-v1-cluster-1-1.default"]
    assert rows[1][1:] == ["cluster-1", "SYNCED", "NACKED", "SYNCED", "-", "-", "meshplane-42@127.0.0.1:15010",
                           "1.40.0", "LDS: bad listener"]
    assert rows[0][1] == "-" and rows[0][8] == "-"


def test_types_beyond_istioctls_get_columns_of_their_own() -> None:
    items = [proxy("sidecar~10.9.1.1~a-0.default~default.svc.cluster.local", "c"),
             proxy("sidecar~10.9.1.2~b-0.default~default.svc.cluster.local", "c")]
    items[1]["types"] = {**items[1]["types"], "NDS": {"state": "SYNCED"}}  # type: ignore[dict-item]
    columns = status_types(items)
    assert columns == ("CDS", "LDS", "EDS", "RDS", "SDS", "NDS")
    assert [r[7] for r in proxy_status_rows(items, columns)] == ["-", "SYNCED"]
    assert status_types(items[:1]) == ("CDS", "LDS", "EDS", "RDS", "SDS")


def test_envoy_version_from_the_node() -> None:
    node = base_pb2.Node(id="x")
    assert build_version(node) == ""
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.version.minor_number = 40
    assert build_version(node) == "1.40.0"
    assert build_version(base_pb2.Node(id="x", user_agent_version="v1.2")) == "v1.2"


def test_instance_resolves_from_name_pod_namespace_or_proxy_id(tmp_path: Path) -> None:
    d = tmp_path / "instances" / "productpage-v1-cluster-1-0"
    d.mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"admin": "http://127.0.0.9:15000"}))
    for name in ("productpage-v1-cluster-1-0", "productpage-v1-cluster-1-0.default",
                 "sidecar~127.0.0.9~productpage-v1-cluster-1-0.default~default.svc.cluster.local"):
        assert instance_dir(tmp_path, name) == d
    with pytest.raises(DiagError, match=r"no instance 'reviews' in .* \(instances: productpage-v1-cluster-1-0\)"):
        instance_dir(tmp_path, "reviews")


def test_the_admin_is_read_on_loopback_only() -> None:
    assert check_admin("127.0.0.1:15000") == "http://127.0.0.1:15000"
    assert check_admin("http://[::1]:15000/") == "http://[::1]:15000"
    with pytest.raises(DiagError, match="loopback addresses only"):
        check_admin("http://192.168.1.1:15000")


def test_proxy_config_of_an_unknown_instance_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy-config", "routes", "nope", "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no instance 'nope' in ") and err.count("\n") == 1


def test_down_with_nothing_recorded_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["down", "--home", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out == f"nothing to stop: no mesh is recorded in {tmp_path / 'empty'}\n"


def test_logs_with_nothing_running_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["logs", "server", "--home", str(tmp_path / "empty")]) == 1
    assert "no mesh in" in capsys.readouterr().err
    (tmp_path / "stopped" / "logs").mkdir(parents=True)
    assert main(["logs", "server", "--home", str(tmp_path / "stopped")]) == 1
    assert "no log of 'server' in" in capsys.readouterr().err


def test_agent_takes_an_instance_of_a_home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "--home", str(tmp_path), "--instance", "web-0"]) == 1
    assert str(tmp_path / "instances" / "web-0" / "agent.json") in capsys.readouterr().err


def test_readme_names_files_that_exist() -> None:
    text = README.read_text()
    files = [w for line in text.splitlines() for w in line.split() if w.endswith((".yaml", ".yml"))
             and not w.startswith(("mesh.", "<"))]
    assert files
    root = README.parent
    assert [f for f in files if not (root / f).is_file()] == []


def _commands(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                                      argparse.ArgumentParser]]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, p
    for s in subs:
        seen: set[int] = set()
        for name, sub in s.choices.items():
            if id(sub) not in seen:  # an alias is the same parser
                seen.add(id(sub))
                yield from _commands(sub, (*path, name))


def test_every_command_takes_home() -> None:
    commands = dict(_commands(build_parser()))
    assert {("server",), ("kubeconfig",), ("bootstrap",), ("proxy-status",), ("agent",), ("cluster", "list"),
            ("demo", "up"), ("proxy-config",), ("analyze",)} <= set(commands)
    missing = [" ".join(c) for c, p in commands.items() if "--home" not in {o for a in p._actions
                                                                           for o in a.option_strings}]
    assert missing == []


def test_replicas_of_a_local_mesh_are_all_asked() -> None:
    ep = ServerEndpoint("http://127.9.0.2:8080", apis=("http://127.9.0.1:8080", "http://127.9.0.2:8080"))
    assert ep.replicas() == ["http://127.9.0.2:8080", "http://127.9.0.1:8080"]
    assert ServerEndpoint("http://127.0.0.1:8080").replicas() == ["http://127.0.0.1:8080"]


def test_a_home_with_replicas_names_every_replica(tmp_path: Path) -> None:
    from meshplane.cli import locate

    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "server.json").write_text(json.dumps({"api": "http://127.9.0.1:8080", "pid": 0}))
    (tmp_path / "runtime.json").write_text(json.dumps({"apis": ["http://127.9.0.1:8080", "http://127.9.0.2:8080"]}))
    ep = locate.endpoint(argparse.Namespace(home=str(tmp_path)))
    assert ep.replicas() == ["http://127.9.0.1:8080", "http://127.9.0.2:8080"]


def test_a_transparent_meshs_admin_is_read_on_its_own_bridge(tmp_path: Path) -> None:
    from meshplane.cli.diag_cmds import mesh_bridges

    net = tmp_path / "net"
    net.mkdir()
    (net / "bridge.mpbr183.json").write_text(json.dumps({"kind": "bridge", "name": "mpbr183"}))
    bridges = mesh_bridges(tmp_path)
    assert [str(b) for b in bridges] == ["10.183.0.0/16"]
    assert check_admin("http://10.183.1.1:15000", networks=bridges) == "http://10.183.1.1:15000"
    with pytest.raises(DiagError, match="this mesh's own bridge only"):
        check_admin("http://10.184.1.1:15000", networks=bridges, what="instance x's admin")
    assert mesh_bridges(tmp_path / "nothing") == ()


def test_analyze_finds_its_server_as_every_command_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--server", "127.0.0.1:8080"]) == 1
    assert capsys.readouterr().err == ("error: --server '127.0.0.1:8080' is not a URL of the API: write it with its "
                                       "scheme, e.g. http://127.0.0.1:8080\n")
    assert main(["analyze", "--home", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"error: no running mesh in {tmp_path} ")
