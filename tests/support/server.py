"""Running the real ``meshplane server`` process on loopback ports, for integration and e2e tests."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServerProcess:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    url: str
    xds: str = ""  # host:port of the xDS server

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
                info = json.loads(state.read_text())
                url = info["api"]
                with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return ServerProcess(data_dir, proc, url, str(info.get("xds", "")))
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError("server did not become ready in 30 s")



@contextlib.asynccontextmanager
async def in_process_api(tokens: dict[str, str]) -> AsyncIterator[str]:
    """The real API server on a free loopback port over a MemoryStore, in this process; yields its base URL."""
    from meshplane.api.kinds import default_registry
    from meshplane.apiserver.app import ApiServer, ApiServerSettings, serve
    from meshplane.store import MemoryStore

    store = MemoryStore()
    await store.start()
    runner = await serve(ApiServer(store, default_registry(), ApiServerSettings(tokens=tokens)).app(), "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await store.close()
