"""A single-member etcd on loopback, for the local runtime's replicated control plane and for tests.

Why a real etcd: the replicated store is only as good as the engine under it, so the local runtime and the tests
run the same etcd a production mesh runs (Debian's ``etcd-server``; ``scripts/setup`` installs it). One member is
enough to exercise every code path of the store (revisions, transactions, watches, compaction, leases); a
cluster of three is what docs/ha.md describes for production.

The member listens on ``host:client_port`` (clients) and ``host:peer_port`` (raft peers, unused with one member);
its data lives in ``data_dir``. ``start_etcd`` returns once ``/health`` answers.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EtcdProcess", "EtcdStartError", "etcd_binary", "etcd_command", "free_port", "start_etcd"]


class EtcdStartError(Exception):
    """etcd is not installed, or did not become healthy; the message says which and where its log is."""


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise EtcdStartError("etcd is not installed: apt-get install etcd-server (or run scripts/setup)")
    return path


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def etcd_command(data_dir: Path, host: str, client_port: int, peer_port: int, name: str = "meshplane") -> list[str]:
    client = f"http://{host}:{client_port}"
    peer = f"http://{host}:{peer_port}"
    return [
        etcd_binary(),
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"{name}={peer}",
        "--initial-cluster-state", "new",
        "--log-level", "warn",
        "--logger", "zap",
    ]


@dataclass
class EtcdProcess:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    host: str
    client_port: int
    peer_port: int
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def url(self) -> str:
        """The ``--store`` URL of this member."""
        return f"etcd://{self.endpoint}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self, timeout_s: float = 20.0) -> None:
        """Start the member again on the same ports and data (after ``stop``, e.g. a kill -9)."""
        self.stop()
        self.proc = _spawn(self.data_dir, self.host, self.client_port, self.peer_port, self.log_path)
        _wait_healthy(self, timeout_s)


def _spawn(data_dir: Path, host: str, client_port: int, peer_port: int, log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            etcd_command(data_dir, host, client_port, peer_port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log.close()


def start_etcd(
    data_dir: Path, *, host: str = "127.0.0.1", client_port: int = 0, peer_port: int = 0,
    log_path: Path | None = None, timeout_s: float = 20.0,
) -> EtcdProcess:
    """Start one etcd member (free ports when 0) and wait until it is healthy."""
    data_dir.mkdir(parents=True, exist_ok=True)
    client_port = client_port or free_port(host)
    peer_port = peer_port or free_port(host)
    log_path = log_path or data_dir.with_name(data_dir.name + ".log")
    proc = _spawn(data_dir, host, client_port, peer_port, log_path)
    etcd = EtcdProcess(proc, data_dir, host, client_port, peer_port, log_path)
    try:
        _wait_healthy(etcd, timeout_s)
    except BaseException:
        etcd.stop(signal.SIGKILL)
        raise
    return etcd


def _wait_healthy(etcd: EtcdProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if etcd.proc.poll() is not None:
            raise EtcdStartError(f"etcd exited with {etcd.proc.returncode}; see {etcd.log_path}")
        with (
            contextlib.suppress(OSError, ValueError, urllib.error.URLError),
            urllib.request.urlopen(f"http://{etcd.endpoint}/health", timeout=1) as response,
        ):
            if json.loads(response.read()).get("health") == "true":
                return
        time.sleep(0.1)
    raise EtcdStartError(f"etcd on {etcd.endpoint} did not become healthy in {timeout_s:.0f} s; see {etcd.log_path}")
