"""Process records: identity by start time survives PID reuse; stopping reaches a whole process group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from meshplane.agent.procs import ProcRecord, read_record, record_for, start_ticks, stop_records, write_record


def test_record_round_trip_and_identity(tmp_path: Path) -> None:
    me = record_for(os.getpid(), "test", "x", group=False)
    assert me.alive()
    write_record(tmp_path / "r.json", me)
    assert read_record(tmp_path / "r.json") == me
    assert not ProcRecord(os.getpid(), me.start + 1, "test", group=False).alive()  # a reused PID is not ours
    assert read_record(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{")
    assert read_record(tmp_path / "bad.json") is None


def test_stop_records_kills_the_group_even_when_the_leader_ignores_sigterm() -> None:
    # A leader that ignores SIGTERM and has a child in its group: both must be gone afterwards.
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print(c.pid, flush=True); time.sleep(60)")
    leader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        child_ticks = start_ticks(child)
        rec = record_for(leader.pid, "app")
        assert rec.group_alive()
        assert stop_records([rec], grace=0.5) == []
        leader.wait(timeout=10)
        assert start_ticks(child) != child_ticks
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()
