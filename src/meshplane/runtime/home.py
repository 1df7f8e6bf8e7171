"""The runtime's home directory: everything a running local mesh is, on disk (``--home DIR``, default ~/.meshplane).

Why on disk: ``meshplane down``, ``status``, ``scale`` and ``logs`` are separate processes that must find the
running mesh, and ``down`` must stop every process even when the supervisor itself was killed with SIGKILL. So
the supervisor records each process it starts (``procs/*.json``, see :mod:`meshplane.agent.procs`) *before*
doing anything else with it, and agents record their Envoy the same way.

    HOME/runtime.json          the supervisor's view: pid, phase, API/xDS URLs, ingress URLs, instances
    HOME/manifest.yaml         the manifest the mesh was started from
    HOME/replicas.json         replica counts set by ``meshplane scale`` (override the manifest)
    HOME/procs/*.json          one record per started process group (supervisor, server, apps, agents, Envoys)
    HOME/server/               the control plane's data dir (store, server.json)
    HOME/logs/                 supervisor.log, server.log
    HOME/instances/NAME/       agent.json, bootstrap.json, status.json, app.log, agent.log, envoy.log
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from meshplane.agent.procs import ProcRecord, read_record, write_json_atomic


def default_home() -> Path:
    return Path(os.environ.get("MESHPLANE_HOME") or Path.home() / ".meshplane")


class Home:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()

    @property
    def runtime_file(self) -> Path:
        return self.root / "runtime.json"

    @property
    def manifest_file(self) -> Path:
        return self.root / "manifest.yaml"

    @property
    def replicas_file(self) -> Path:
        return self.root / "replicas.json"

    @property
    def procs(self) -> Path:
        return self.root / "procs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    def instance_dir(self, name: str) -> Path:
        return self.root / "instances" / name

    def create(self) -> None:
        for d in (self.root, self.procs, self.logs, self.server_dir, self.root / "instances"):
            d.mkdir(parents=True, exist_ok=True)

    def read_runtime(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.runtime_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_runtime(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.runtime_file, data)

    def supervisor_record(self) -> ProcRecord | None:
        return read_record(self.procs / "supervisor.json")

    def running_supervisor(self) -> ProcRecord | None:
        """The supervisor's record when that very process still runs."""
        rec = self.supervisor_record()
        return rec if rec is not None and rec.alive() else None

    def records(self) -> list[tuple[Path, ProcRecord]]:
        out = []
        for p in sorted(self.procs.glob("*.json")) if self.procs.is_dir() else []:
            rec = read_record(p)
            if rec is not None:
                out.append((p, rec))
        return out

    def read_replicas(self) -> dict[str, int]:
        try:
            raw = json.loads(self.replicas_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(raw, dict):
            return {}
        return {str(k): int(v) for k, v in raw.items() if isinstance(v, int)}

    def write_replicas(self, data: dict[str, int]) -> None:
        write_json_atomic(self.replicas_file, data)

    def read_instance_status(self, name: str) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((self.instance_dir(name) / "status.json").read_text())
            if isinstance(data, dict):
                return data
        return {}
