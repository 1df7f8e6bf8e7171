"""Fixtures that run the real ``meshplane server`` process on a loopback port, and real kubectl against it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class ServerProcess:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    url: str

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_server(data_dir: Path, *extra: str) -> ServerProcess:
    """Start ``meshplane server`` on a free loopback port and wait until it answers /readyz."""
    state = data_dir / "server.json"
    if state.exists():
        state.unlink()
    log = open(data_dir.parent / f"{data_dir.name}-server.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshplane.cli.main",
            "server",
            "--data-dir",
            str(data_dir),
            "--api-addr",
            "127.0.0.1:0",
            "--xds-addr",
            "127.0.0.1:0",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {log.name}")
        if state.exists():
            try:
                url = json.loads(state.read_text())["api"]
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return ServerProcess(data_dir, proc, url)
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError("server did not become ready in 30 s")


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
