"""Process records on disk: how a process started by the runtime (or by an agent) can be found and stopped later,
by a different process, even after the one that started it was killed with SIGKILL.

Why records carry the kernel's start time and not only the PID: PIDs are reused. Before signalling a recorded
process we compare ``/proc/PID/stat`` field 22 (start time in clock ticks since boot) with the value recorded at
spawn time, so ``meshplane down`` never signals an unrelated process that happens to have inherited the number.
Every process the runtime starts leads its own session (``start_new_session``), so its PID is also its process
group id and one ``killpg`` reaches its children too (an agent's Envoy).

Linux-only (``/proc``); the local runtime needs the 127.0.0.0/8 loopback range, which is Linux behaviour anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None when no such process exists."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) is in parentheses and may contain spaces: split after the last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        state = fields[0]
        ticks = int(fields[19])
    except (IndexError, ValueError):
        return None
    if state == "Z":  # a zombie is dead; it only waits for its parent to reap it
        return None
    return ticks


@dataclass(frozen=True, slots=True)
class ProcRecord:
    pid: int
    start: int  # start_ticks(pid) at spawn time
    kind: str  # "server", "app", "agent", "envoy", "supervisor"
    instance: str = ""
    group: bool = True  # the process leads its own process group: signal the group

    def alive(self) -> bool:
        """Is the recorded process (the very same one, not a reused PID) still running?"""
        return start_ticks(self.pid) == self.start

    def group_alive(self) -> bool:
        """Does any process of the recorded group still run (the leader may be gone, its children not)?"""
        if self.alive():
            return True
        if not self.group or self.start == 0:
            return False
        return _group_has_members(self.pid, self.start)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process (or its group) if it is still the recorded one; never raises."""
        if self.group and self.group_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
        elif self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)


def _group_has_members(pgid: int, leader_start: int) -> bool:
    """True when some process in group ``pgid`` started no earlier than the recorded leader (so the group is the
    recorded one, not a new group that reused the number)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        try:
            if fields[0] != "Z" and int(fields[2]) == pgid and int(fields[19]) >= leader_start:
                return True
        except (IndexError, ValueError):
            continue
    return False


def record_for(pid: int, kind: str, instance: str = "", group: bool = True) -> ProcRecord:
    return ProcRecord(pid=pid, start=start_ticks(pid) or 0, kind=kind, instance=instance, group=group)


def write_json_atomic(path: Path, data: object, *, mode: int = 0o644) -> None:
    """Write JSON so readers never see a half-written file (write a temporary file, then rename). ``mode`` 0o600
    for files that carry a credential (an agent config with its bootstrap token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1, sort_keys=True))
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_record(path: Path, rec: ProcRecord) -> None:
    write_json_atomic(path, asdict(rec))


def read_record(path: Path) -> ProcRecord | None:
    try:
        raw = json.loads(path.read_text())
        return ProcRecord(pid=int(raw["pid"]), start=int(raw["start"]), kind=str(raw.get("kind", "")),
                          instance=str(raw.get("instance", "")), group=bool(raw.get("group", True)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_records(records: list[ProcRecord], *, grace: float = 10.0, poll: float = 0.05) -> list[ProcRecord]:
    """SIGTERM every record, wait up to ``grace`` seconds, SIGKILL what is left. Returns the records that still
    run afterwards (should be empty; a process we may not signal would stay)."""
    live = [r for r in records if r.group_alive()]
    for r in live:
        r.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        time.sleep(poll)
        live = [r for r in live if r.group_alive()]
    for r in live:
        r.signal(signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while live and time.monotonic() < deadline:
        time.sleep(poll)
        live = [r for r in live if r.group_alive()]
    return live
