"""Fixtures that run the real ``meshplane server`` process on a loopback port, and real kubectl against it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, start_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "data"
    data.mkdir()
    srv = start_server(data)
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class Kubectl:
    server: str
    home: Path

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", "--server", self.server, "--cache-dir", str(self.home / "cache"), *args]
        env = {**os.environ, "HOME": str(self.home), "KUBECONFIG": str(self.home / "none")}
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def popen(self, *args: str) -> subprocess.Popen[str]:
        cmd = ["kubectl", "--server", self.server, "--cache-dir", str(self.home / "cache"), *args]
        env = {**os.environ, "HOME": str(self.home), "KUBECONFIG": str(self.home / "none")}
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture
def kubectl(server: ServerProcess, tmp_path: Path) -> Kubectl:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not on PATH: the real-kubectl tests need it")
    home = tmp_path / "kube"
    home.mkdir()
    return Kubectl(server.url, home)


DATA = Path(__file__).resolve().parents[1] / "data"
