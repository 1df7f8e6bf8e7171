"""What the API-using commands print when the API cannot be reached: the call, the address and why, on stderr, with
each command's exit status (``proxy-status`` reports it as a configuration error, 2; the others fail with 1)."""

from __future__ import annotations

import socket

import pytest

from meshplane.cli.main import main


@pytest.fixture
def nowhere() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(("argv", "code", "call"), [
    (["cluster", "list"], 1, "list MemberCluster"),
    (["cluster", "remove", "east"], 1, "delete MemberCluster east"),
    (["cluster", "add", "lab", "--local", "--region", "r", "--zone", "z"], 1, "create MemberCluster lab"),
    (["audit"], 1, "GET /management/v1/audit"),
    (["proxy-status"], 2, "GET /management/v1/proxies"),
], ids=["cluster-list", "cluster-remove", "cluster-add", "audit", "proxy-status"])
def test_an_unreachable_api_is_named_with_the_call(nowhere: str, capsys: pytest.CaptureFixture[str],
                                                   argv: list[str], code: int, call: str) -> None:
    assert main([*argv, "--server", nowhere]) == code
    err = capsys.readouterr().err
    assert err.startswith(f"error: {call}: cannot reach the meshplane API at {nowhere} (")
