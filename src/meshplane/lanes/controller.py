"""Keeps the store's generated lane objects equal to what ``compile`` makes of the lane groups and lanes.

Level-triggered, like a Kubernetes controller: any change to a lane group, a lane or a generated object (somebody
edited or deleted one) schedules one reconcile, which lists everything, compiles, and writes only the difference:
create what is missing, update what differs, delete generated objects no group produces any more (their owner is
gone). The store has no garbage collector for ``ownerReferences``, so that last step is what removes them. Writes
that change nothing are skipped here (and would be no-ops in the store anyway), so a reconcile of an unchanged
world touches nothing and triggers no xDS push.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from meshplane.lanes.compile import (
    DESTINATION_RULES,
    GENERATED_BY,
    GENERATED_KINDS,
    LANE_GROUPS,
    LANES,
    Generated,
    compile_lanes,
)
from meshplane.store.errors import AlreadyExists, Conflict, Expired, NotFound
from meshplane.store.interface import Store
from meshplane.store.types import GroupResource, JSONObject

log = logging.getLogger("meshplane.lanes")

ACTOR = "system:controller:lanes"
_WATCHED = frozenset({LANE_GROUPS, LANES, *GENERATED_KINDS})


def _is_generated(obj: JSONObject) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(GENERATED_BY) == "lanes"


def _union_subsets(old: JSONObject, want: JSONObject) -> JSONObject:
    """``want`` keeping the subsets of ``old`` it drops (phase 1 of a reconcile)."""
    names = {s.get("name") for s in want["spec"].get("subsets") or []}
    kept = [s for s in (old.get("spec") or {}).get("subsets") or [] if s.get("name") not in names]
    if not kept:
        return want
    return {**want, "spec": {**want["spec"], "subsets": [*want["spec"].get("subsets", []), *kept]}}


def _same(existing: JSONObject, want: JSONObject) -> bool:
    md, wmd = existing.get("metadata") or {}, want["metadata"]
    return bool(existing.get("spec") == want["spec"] and (md.get("labels") or {}) == wmd["labels"]
                and (md.get("ownerReferences") or []) == wmd["ownerReferences"])


class LanesController:
    """Run with ``await start()`` next to the API server on the same store; ``await stop()`` ends it."""

    def __init__(self, store: Store, *, settle_s: float = 0.05, phase_delay_s: float = 1.5) -> None:
        self._store = store
        self._settle = settle_s
        self._phase_delay = phase_delay_s
        self._task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self.reconciles = 0

    async def start(self) -> None:
        await self.reconcile()
        self._task = asyncio.create_task(self._run(), name="lanes-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def desired(self) -> list[Generated]:
        groups, _ = self._store.list(LANE_GROUPS)
        lanes, _ = self._store.list(LANES)
        return compile_lanes(groups, lanes)

    async def reconcile(self) -> int:
        """One pass; returns the number of writes made.

        Make before break, in three phases: DestinationRules first gain the subsets the new routes need (keeping
        the ones old routes still use), then routes change, then DestinationRules lose what nothing routes to any
        more. A phase that wrote something is followed by ``phase_delay_s`` so proxies receive it (the xDS push is
        debounced) before the next phase depends on it: no request meets a route to a subset cluster its proxy
        does not have yet, or that was just removed."""
        self.reconciles += 1
        want = {g.key: g for g in self.desired()}
        have: dict[tuple[GroupResource, str, str], JSONObject] = {}
        for gr in GENERATED_KINDS:
            items, _ = self._store.list(gr)
            for obj in items:
                md = obj.get("metadata") or {}
                have[(gr, str(md.get("namespace") or "default"), str(md.get("name") or ""))] = obj
        for key, obj in have.items():
            if key in want and not _is_generated(obj):
                log.warning("lanes: %s %s/%s exists and is not generated; left alone", *[str(k) for k in key])
                del want[key]
        writes = 0
        # Phase 1: DestinationRules gain subsets.
        phase = 0
        for key, g in want.items():
            if key[0] != DESTINATION_RULES:
                continue
            old = have.get(key)
            if old is None:
                phase += await self._create(g.gr, g.obj)
                continue
            merged = _union_subsets(old, g.obj)
            if not _same(old, merged):
                phase += await self._update(g.gr, old, merged)
        writes += await self._pause_after(phase)
        # Phase 2: routes (and everything but DestinationRules).
        phase = 0
        for key, g in want.items():
            if key[0] == DESTINATION_RULES:
                continue
            old = have.get(key)
            if old is None:
                phase += await self._create(g.gr, g.obj)
            elif not _same(old, g.obj):
                phase += await self._update(g.gr, old, g.obj)
        for key, obj in have.items():
            if key[0] != DESTINATION_RULES and key not in want and _is_generated(obj):
                phase += await self._delete(*key)
        writes += await self._pause_after(phase)
        # Phase 3: DestinationRules lose what nothing routes to.
        for key, obj in have.items():
            if key[0] != DESTINATION_RULES:
                continue
            final = want.get(key)
            if final is None:
                if _is_generated(obj):
                    writes += await self._delete(*key)
                continue
            current = self._store.get(*key)
            if current is not None and not _same(current, final.obj):
                writes += await self._update(final.gr, current, final.obj)
        return writes

    async def _pause_after(self, writes: int) -> int:
        if writes and self._phase_delay > 0:
            await asyncio.sleep(self._phase_delay)
        return writes

    async def _create(self, gr: GroupResource, obj: JSONObject) -> int:
        try:
            await self._store.create(gr, obj, actor=ACTOR)
        except AlreadyExists:
            self._dirty.set()
            return 0
        return 1

    async def _update(self, gr: GroupResource, existing: JSONObject, want: JSONObject) -> int:
        obj: dict[str, Any] = {**existing, "spec": want["spec"]}
        obj["metadata"] = {**(existing.get("metadata") or {}), "labels": want["metadata"]["labels"],
                           "ownerReferences": want["metadata"]["ownerReferences"]}
        rv = (existing.get("metadata") or {}).get("resourceVersion")
        try:
            await self._store.update(gr, obj, actor=ACTOR, expected_rv=int(rv) if rv else None)
        except (Conflict, NotFound):
            self._dirty.set()
            return 0
        return 1

    async def _delete(self, gr: GroupResource, namespace: str, name: str) -> int:
        try:
            await self._store.delete(gr, namespace, name, actor=ACTOR)
        except NotFound:
            return 0
        return 1

    async def _reconcile_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._settle)  # one pass for a burst of changes (kubectl apply -f dir)
            self._dirty.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lanes: reconcile failed; retrying")
                await asyncio.sleep(0.5)
                self._dirty.set()

    async def _run(self) -> None:
        worker = asyncio.create_task(self._reconcile_loop(), name="lanes-reconcile")
        try:
            rv: int | None = self._store.current_rv
            while True:
                watch = self._store.watch(None, since_rv=rv)
                try:
                    async for event in watch:
                        rv = event.rv
                        if event.gr in _WATCHED and not (event.gr in GENERATED_KINDS
                                                         and not _is_generated(event.obj)):
                            self._dirty.set()
                except Expired:
                    rv = None
                    self._dirty.set()
                finally:
                    watch.close()
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
