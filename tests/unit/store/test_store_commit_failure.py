"""A failed commit: its writes, and the pending writes built on them, fail; nothing of them is ever visible.

The failure is injected (see ``_store_helpers.fail_next_commit``): for SQLite inside the real transaction after its
statements ran, so SQLite's rollback is what keeps the file clean.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _store_helpers import DR, VS, FakeClock, fail_next_commit, gate_commits, vs

from meshplane.store import EventType, SqliteStore, StorageFailure
from meshplane.store._core import CoreStore


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """CoreStore's committer only: etcd commits on its own (see conftest's ``core_only``)."""
    return str(request.param)


async def test_a_failed_batch_and_the_writes_built_on_it_fail(store: CoreStore, tmp_path: Path) -> None:
    await store.create(VS, vs("kept"), actor="a")
    failed = fail_next_commit(store)
    gate = gate_commits(store)
    watch = store.watch(VS, since_rv=store.current_rv)

    doomed_create = asyncio.create_task(store.create(VS, vs("doomed"), actor="a"))
    doomed_update = asyncio.create_task(store.update(VS, vs("kept", hosts=["lost"]), actor="a"))
    await asyncio.sleep(0.01)  # the committer has taken rv 2 and 3 as one batch and waits at the gate
    built_on_create = asyncio.create_task(store.update(VS, vs("doomed", hosts=["x"]), actor="a"))
    built_on_update = asyncio.create_task(store.delete(VS, "default", "kept", actor="a"))
    independent = asyncio.create_task(store.create(DR, vs("fine"), actor="a"))
    await asyncio.sleep(0.01)
    gate.set()

    for task in (doomed_create, doomed_update, built_on_create, built_on_update):
        with pytest.raises(StorageFailure) as err:
            await task
        assert "injected" in str(err.value)
    fine = await independent
    assert [[c.event.rv for c in batch] for batch in failed] == [[2, 3]]

    # The failed rvs (2..5) are not reused; the committed state is intact.
    assert fine["metadata"]["resourceVersion"] == "6"
    assert store.current_rv == 6
    assert store.get(VS, "default", "doomed") is None
    kept = store.get(VS, "default", "kept")
    assert kept is not None and kept["spec"]["hosts"] == ["a.example.com"]
    assert [(r.rv, r.verb) for r in store.audit()] == [(1, "create"), (6, "create")]

    # The pending state was rolled back: writes now validate against the committed state again.
    again = await store.create(VS, vs("doomed"), actor="a")
    assert again["metadata"]["resourceVersion"] == "7"
    updated = await store.update(VS, vs("kept", hosts=["b"]), actor="a", expected_rv=1)
    assert updated["metadata"]["generation"] == 2

    # Watchers never saw the failed writes.
    events = [await asyncio.wait_for(watch.__anext__(), 1) for _ in range(2)]
    assert [(e.type, e.obj["metadata"]["name"], e.rv) for e in events] == [
        (EventType.ADDED, "doomed", 7),
        (EventType.MODIFIED, "kept", 8),
    ]
    replay = store.watch(since_rv=1)
    assert [e.rv for e in [await asyncio.wait_for(replay.__anext__(), 1) for _ in range(3)]] == [6, 7, 8]
    watch.close()
    replay.close()

    if isinstance(store, SqliteStore):
        path = store.path
        await store.close()
        reopened = SqliteStore(path, clock=FakeClock())
        await reopened.start()
        try:
            assert reopened.current_rv == 8
            assert reopened.list(VS)[0] == store.list(VS)[0]
            assert reopened.list(DR)[0] == [fine]
            assert [r.rv for r in reopened.audit()] == [1, 6, 7, 8]
        finally:
            await reopened.close()


async def test_a_broken_committer_fails_stop(store: CoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug after the commit (here: applying it) must not leave writers hanging: they fail, and so does every
    later write, while reads keep serving the last good state."""
    await store.create(VS, vs("kept"), actor="a")

    def broken_apply(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(store, "_apply", broken_apply)
    with pytest.raises(StorageFailure, match="committer stopped"):
        await asyncio.wait_for(store.create(VS, vs("lost"), actor="a"), 2)
    with pytest.raises(StorageFailure):
        await store.create(VS, vs("later"), actor="a")
    assert [o["metadata"]["name"] for o in store.list(VS)[0]] == ["kept"]
    await store.close()
