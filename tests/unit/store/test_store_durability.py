"""kill -9 loses no acknowledged write: a real writer process is SIGKILLed mid-stream, twice, and the file checked.

On etcd the same, and then the etcd member itself is SIGKILLed under the writer (and restarted on its data).

The writer (``_durability_writer.py``) prints each write after its coroutine returned. After the kill, every printed
write must be in the audit trail with its rv (the audit row commits in the same transaction as the object), the
objects table must agree with the last audited change of each object, and the rv counter must continue above
everything acknowledged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from _store_helpers import VS, vs

import meshplane
from meshplane.runtime.etcd import EtcdProcess
from meshplane.store import SqliteStore
from meshplane.store.etcd import EtcdStore, parse_etcd_url

WRITER = Path(__file__).with_name("_durability_writer.py")


def run_writer_and_kill(
    path: Path | str, prefix: str, acks_before_kill: int, etcd: EtcdProcess | None = None
) -> list[tuple[str, str, int]]:
    """Start the writer, SIGKILL it (or, given ``etcd``, that etcd member) once it acknowledged
    ``acks_before_kill`` writes; return every acknowledged one."""
    env = dict(os.environ)
    src = str(Path(meshplane.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), prefix], stdout=subprocess.PIPE, env=env, text=True
    )

    # A safety net so a stuck writer cannot hang the test: it kills only the process started here.
    def kill_if_stuck() -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(30, kill_if_stuck)
    watchdog.start()
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready ")
        lines: list[str] = []
        while len(lines) < acks_before_kill:
            line = proc.stdout.readline()
            assert line, f"writer ended early with {proc.wait()}"
            lines.append(line)
        if etcd is not None:
            etcd.stop(signal.SIGKILL)  # the writer's writes in flight now fail; it dies of the first one
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        lines.extend(proc.stdout.read().splitlines(keepends=True))
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL or etcd is not None
    acks = []
    for line in lines:
        if line.endswith("\n"):  # a line cut by the kill was never a complete acknowledgement
            verb, key, rv = line.split()
            acks.append((verb, key, int(rv)))
    return acks


async def check(path: Path | str, acks: list[tuple[str, str, int]]) -> None:
    store = EtcdStore(parse_etcd_url(path)) if isinstance(path, str) else SqliteStore(path)
    await store.start()
    try:
        audited = {r.rv: (r.verb, f"{r.namespace}/{r.name}") for r in store.audit(limit=10**9)}
        for verb, key, rv in acks:
            assert audited.get(rv) == (verb, key), f"acknowledged {verb} {key} at rv {rv} is lost"
        last: dict[str, tuple[str, int]] = {}
        for rv, (verb, key) in sorted(audited.items()):
            last[key] = (verb, rv)
        stored = {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o for o in store.list(VS)[0]}
        assert set(stored) == {key for key, (verb, _) in last.items() if verb != "delete"}
        for key, obj in stored.items():
            assert int(obj["metadata"]["resourceVersion"]) == last[key][1]
        top = max(rv for _, _, rv in acks)
        assert store.current_rv >= top
        probe = await store.create(VS, vs(f"probe{top}"), actor="test")
        assert int(probe["metadata"]["resourceVersion"]) > top
    finally:
        await store.close()


async def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    first = run_writer_and_kill(path, "one", 300)
    assert len(first) >= 300
    await check(path, first)
    # Again on the file that has been through a crash (and a recovery), killed at another moment.
    second = run_writer_and_kill(path, "two", 451)
    await check(path, first + second)


async def test_sigkill_of_a_replica_or_of_etcd_loses_no_acknowledged_write(etcd_server: EtcdProcess) -> None:
    url = f"{etcd_server.url}/durability/"
    first = run_writer_and_kill(url, "one", 200)
    assert len(first) >= 200
    await check(url, first)
    second = run_writer_and_kill(url, "two", 301, etcd=etcd_server)
    assert len(second) >= 301
    etcd_server.restart()
    await check(url, first + second)
