"""Root rotation's overlap is checked at the boundary: absurd values are a 400 naming the field, through the
management API and ``meshplane ca rotate-root``, and nothing changes (the trust bundle is the same)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

from tests.support.server import ServerProcess


def _post(server: ServerProcess, body: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(server.url + "/management/v1/ca/rotate-root", data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _bundle(server: ServerProcess) -> str:
    with urllib.request.urlopen(server.url + "/management/v1/trust-bundle") as r:
        return str(json.loads(r.read())["pem"])


def _cli(server: ServerProcess, overlap: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshplane.cli.main", "ca", "rotate-root", "--server", server.url,
                           f"--overlap={overlap}"], capture_output=True, text=True, timeout=60)


def test_absurd_overlaps_are_refused(server: ServerProcess) -> None:
    before = _bundle(server)
    for body in ('{"overlapSeconds": 1e30}', '{"overlapSeconds": -1}', '{"overlapSeconds": 1.5}',
                 '{"overlapSeconds": "1h"}', '{"overlapSeconds": 315360001}'):
        code, status = _post(server, body)
        assert code == 400, (body, status)
        assert status["reason"] == "BadRequest" and "overlapSeconds must be" in str(status["message"])
    res = _cli(server, "1e30")
    assert res.returncode == 1
    assert "HTTP 400: overlapSeconds must be a whole number of seconds" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert _bundle(server) == before


def test_a_sensible_overlap_rotates(server: ServerProcess) -> None:
    before = _bundle(server)
    res = _cli(server, "90m")
    assert res.returncode == 0, res.stderr
    assert "2 roots trusted" in res.stdout
    after = _bundle(server)
    assert after != before and before.strip() in after  # the previous root is still trusted
    code, _ = _post(server, '{"overlapSeconds": 0}')
    assert code == 200
