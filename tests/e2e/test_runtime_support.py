"""Helpers for the runtime's end-to-end tests (no tests here): run ``meshplane`` commands as a user would, read
``status -o json``, send requests through ingress gateways, and check by PID that nothing is left behind.

Waiting is bounded by generous deadlines that only keep a broken run from hanging; no test asserts how long
anything took.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from meshplane.agent.procs import read_record, start_ticks

DEADLINE_S = 120.0


def meshplane(*args: str, check: bool = True, timeout: float = 400.0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "meshplane.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"meshplane {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def status(home: Path) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(meshplane("status", "-o", "json", "--home", str(home)).stdout)
    return out


def get_json(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Accept": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=20) as r:
        assert r.status == 200
        data: dict[str, Any] = json.loads(r.read())
        return data


def call_of(doc: dict[str, Any], service: str) -> dict[str, Any]:
    for c in doc.get("calls") or []:
        if c.get("service") == service:
            return dict(c)
    raise AssertionError(f"no call to {service} in {doc}")


def eventually(check: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    last: BaseException | None = None
    while time.monotonic() < end:
        try:
            if check():
                return
        except (AssertionError, OSError, urllib.error.URLError, ValueError, KeyError) as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"never happened: {what}" + (f" (last error: {last!r})" if last else ""))


Proc = tuple[int, int]  # (pid, start ticks): a process identity that survives PID reuse


def recorded_processes(home: Path) -> list[Proc]:
    """Every process the home records (supervisor, server, apps, agents, Envoys)."""
    out = []
    for p in sorted((home / "procs").glob("*.json")):
        rec = read_record(p)
        if rec is not None and rec.alive():
            out.append((rec.pid, rec.start))
    return out


def status_processes(st: dict[str, Any]) -> list[Proc]:
    out = []
    for w in st["workloads"]:
        for key in ("pid", "agentPid", "envoyPid"):
            pid = w.get(key)
            if isinstance(pid, int):
                ticks = start_ticks(pid)
                if ticks is not None:
                    out.append((pid, ticks))
    return out


def alive(procs: list[Proc]) -> list[Proc]:
    return [(pid, t) for pid, t in procs if start_ticks(pid) == t]


def kill_all(procs: list[Proc]) -> None:
    """Last-resort cleanup for a failed test: SIGKILL exactly the processes it saw (by PID and start time)."""
    for pid, t in procs:
        if start_ticks(pid) == t:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def stopped_after(home: Path, *, down_must_succeed: bool = False) -> Iterator[list[Proc]]:
    """Yields a list for the processes the caller sees; on the way out ``meshplane down --home home`` runs and must
    leave none of them, nor of those recorded in ``home`` (checked by PID and start time; whatever is left is killed
    so a failed test cannot leak processes)."""
    seen: list[Proc] = []
    try:
        yield seen
    finally:
        seen += recorded_processes(home)
        down = meshplane("down", "--home", str(home), check=False)
        left = alive(seen)
        kill_all(left)
    if down_must_succeed:
        assert down.returncode == 0, down.stderr
    assert left == [], f"processes left behind: {left}"


@contextlib.contextmanager
def running_mesh(manifest: Path, home: Path, *up_args: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``meshplane up -f manifest [UP_ARGS]`` in ``home``; yields (home, status). On the way out ``meshplane down``
    must succeed and leave none of the processes seen while the mesh ran (:func:`stopped_after`)."""
    with stopped_after(home, down_must_succeed=True) as seen:
        meshplane("up", "-f", str(manifest), "--home", str(home), *up_args)
        st = status(home)
        seen += recorded_processes(home) + status_processes(st)
        yield home, st
        seen += recorded_processes(home) + status_processes(status(home))
