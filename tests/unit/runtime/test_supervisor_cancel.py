"""The supervisor's main loop ends cancelled when cancelled, also when its wait ends in the same step.

Why: on Python 3.11 ``asyncio.wait_for`` returned the awaited result instead of raising when the cancel and the
result arrived in the same event-loop step (CPython gh-86296). The loop waited for ``stop``/``wake`` that way, so
such a cancel was lost and the loop reconciled on. The coincidence is made on purpose here, as
tests/unit/kube/test_kube_cancel.py does for the Kubernetes reflector. No process is started: the server
start and the reconcile are stubbed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import meshplane.runtime.supervisor as supervisor
from meshplane.runtime.home import Home
from meshplane.runtime.manifest import parse_manifest
from meshplane.runtime.supervisor import Supervisor


def _supervisor(tmp_path: Path, turned: asyncio.Event) -> Supervisor:
    m = parse_manifest({"clusters": [{"name": "c1"}],
                        "workloads": [{"name": "web", "clusters": ["c1"], "command": ["true"], "ports": [9080]}]})
    sup = Supervisor(Home(tmp_path / "home"), m)

    async def start_server(session: Any) -> None:
        sup.api = "http://127.0.0.1:1"

    async def reconcile() -> None:
        turned.set()

    async def all_ready(client: Any) -> bool:
        return False

    async def shutdown() -> None:
        sup.phase = "stopped"

    sup.start_server = start_server  # type: ignore[method-assign]
    sup.reconcile = reconcile  # type: ignore[method-assign]
    sup.all_ready = all_ready  # type: ignore[method-assign]
    sup.shutdown = shutdown  # type: ignore[method-assign]
    return sup


async def test_a_cancel_arriving_with_a_wake_ends_the_loop_cancelled(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    turned = asyncio.Event()
    sup = _supervisor(tmp_path, turned)
    waits = 0
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def first(*events: asyncio.Event) -> None:
        nonlocal waits
        waits += 1
        if waits > 1:
            await asyncio.Event().wait()  # a second turn: waits until cancelled (again)
        await answer

    monkeypatch.setattr(supervisor, "_first", first)
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(turned.wait(), 5)  # the loop now waits for stop or wake
    # The wake and the cancel in one step.
    answer.set_result(None)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    if not done:
        task.cancel()
    assert done, "the supervisor did not stop after being cancelled"
    assert task.cancelled() and waits == 1


async def test_stop_ends_the_loop_and_shuts_down(tmp_path: Path) -> None:
    turned = asyncio.Event()
    sup = _supervisor(tmp_path, turned)
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(turned.wait(), 5)
    turned.clear()
    await asyncio.wait_for(turned.wait(), 5)  # a second turn: the wait timed out (RECONCILE_S)
    sup.stop_event.set()
    assert await asyncio.wait_for(task, 5) == 0
    assert sup.phase == "stopped"


async def test_a_cancelled_supervisor_still_stops_what_it_started(tmp_path: Path) -> None:
    """A cancel from outside (not the stop flag) still runs the shutdown: the child process is gone, its record
    removed, and the task ends cancelled."""
    turned = asyncio.Event()
    m = parse_manifest({"clusters": [{"name": "c1"}],
                        "workloads": [{"name": "web", "clusters": ["c1"], "command": ["true"], "ports": [9080]}]})
    home = Home(tmp_path / "home")
    sup = Supervisor(home, m)

    async def start_server(session: Any) -> None:
        sup.api = "http://127.0.0.1:1"
        sup.server = await sup.spawn("server", "fake-server", ["sleep", "60"], tmp_path / "server.log")

    async def reconcile() -> None:
        turned.set()

    async def all_ready(client: Any) -> bool:
        return False

    sup.start_server = start_server  # type: ignore[method-assign]
    sup.reconcile = reconcile  # type: ignore[method-assign]
    sup.all_ready = all_ready  # type: ignore[method-assign]
    task = asyncio.create_task(sup.run())
    await asyncio.wait_for(turned.wait(), 5)
    assert sup.server is not None
    child = sup.server.proc
    try:
        assert child.returncode is None
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=20)
        assert done, "the supervisor did not finish after being cancelled"
        assert task.cancelled()
        assert child.returncode is not None, "the child kept running after the supervisor was cancelled"
        assert sup.phase == "stopped"
        assert not any(r.kind == "server" for _, r in home.records())
    finally:
        if child.returncode is None:  # the test failed: do not leave the child behind
            child.kill()
            await child.wait()
