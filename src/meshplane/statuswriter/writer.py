"""Writes each Istio and ASM object's ``status``: a ``Reconciled`` condition and the analyzers' messages.

What an object gets (Istio's shape, as istiod writes it with ``PILOT_ENABLE_STATUS``)::

    status:
      conditions:
      - {type: Reconciled, status: "True", observedGeneration: 3, reason: Reconciled,
         message: generation 3 is translated and pushed, lastTransitionTime: ...}
      validationMessages:
      - {type: {code: IST0101, name: ReferencedResourceNotFound}, level: ERROR,
         description: 'Referenced host+subset in destinationrule not found: "reviews+v3"'}

``Reconciled`` is ``True`` once the generation it names has been translated and pushed with no error-level
message about it, ``False`` (reason: the first error's name) otherwise, so ``kubectl wait
--for=condition=Reconciled`` waits for the change to be in effect and fails for an object that is in the mesh but
broken.

Why a separate writer and when it writes: after a burst of changes settles, it waits for the xDS server to be idle
(the change is translated and pushed: ``view`` does that wait), analyzes the snapshot the push used, and writes
only the objects whose status differs, through the store with the object's resourceVersion as precondition (a
concurrent writer wins; the next pass speaks for the new version). A status write changes neither ``generation``
(the store bumps it only for spec changes) nor what translation reads (the xDS config controller pushes nothing
for a status-only change), and a pass that finds nothing to change writes nothing: no push loop, no write loop.
Its own writes do not wake it up.

Conditions of other types are kept as they are (``JwksResolved`` on RequestAuthentication, ``Healthy`` on
WorkloadEntry). ASMSwimLaneGroup's ``Reconciled`` belongs to the lanes controller (``meshplane.lanes``): a lane
group gets only ``validationMessages`` from here. WorkloadEntries and WorkloadGroups get no status from here:
theirs is their health, written by agents at endpoint churn rates (their messages are still in ``meshplane
analyze``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meshplane.analysis import AnalysisInput, Level, Message, analyze
from meshplane.model.config import ConfigSnapshot
from meshplane.model.resources import LANE_GROUPS, WORKLOAD_ENTRIES, WORKLOAD_GROUPS, GroupResource
from meshplane.model.service import RegistrySnapshot
from meshplane.model.spec import RESOURCES, ConfigObject, object_meta
from meshplane.store.errors import Conflict, Expired, NotFound, StoreError
from meshplane.store.interface import Store

log = logging.getLogger("meshplane.status")

ACTOR = "system:controller:status"
RECONCILED = "Reconciled"
_GROUPS = ("networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io",
           "istio.alibabacloud.com")
# Kinds whose Reconciled condition another controller owns.
_CONDITION_OWNED_ELSEWHERE = frozenset({LANE_GROUPS})
_NO_STATUS = frozenset({WORKLOAD_ENTRIES, WORKLOAD_GROUPS})
_MESSAGE_MAX = 1024

View = Callable[[], Awaitable[tuple[ConfigSnapshot, RegistrySnapshot]]]


def status_kinds() -> list[GroupResource]:
    """The collections this writer gives a status."""
    return [gr for gr in RESOURCES if gr.group in _GROUPS and gr not in _NO_STATUS]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_status(old: Any, generation: int, messages: Sequence[Message], *, condition: bool = True) -> dict[str, Any]:
    """``old`` (the stored status) with this writer's parts for ``messages``: the ``Reconciled`` condition (unless
    ``condition`` is False) and ``validationMessages`` (absent when there are none); everything else stays. The
    condition's lastTransitionTime moves only when its status does."""
    previous: dict[str, Any] = dict(old) if isinstance(old, Mapping) else {}
    out = dict(previous)
    if messages:
        out["validationMessages"] = [m.to_status() for m in messages]
    else:
        out.pop("validationMessages", None)
    if not condition:
        return out
    conditions = [c for c in previous.get("conditions") or [] if isinstance(c, Mapping)]
    before = next((c for c in conditions if c.get("type") == RECONCILED), None)
    errors = [m for m in messages if m.type.level is Level.ERROR]
    st = "False" if errors else "True"
    if errors:
        reason = errors[0].type.name
        message = "; ".join(f"[{m.type.code}] {m.text}" for m in errors)[:_MESSAGE_MAX]
    else:
        reason = RECONCILED
        message = f"generation {generation} is translated and pushed"
    cond: dict[str, Any] = {"type": RECONCILED, "status": st, "observedGeneration": generation, "reason": reason,
                            "message": message}
    kept = before is not None and before.get("status") == st and before.get("lastTransitionTime")
    cond["lastTransitionTime"] = kept or _now()
    out["conditions"] = [*(c for c in conditions if c.get("type") != RECONCILED), cond]
    return out


@dataclass(frozen=True, slots=True)
class WriterSettings:
    settle_s: float = 0.3  # one pass for a burst of changes (kubectl apply -f dir)
    resync_s: float = 30.0  # a pass even without store changes (member clusters' services come and go)
    root_namespace: Callable[[], str] = lambda: "istio-system"


class StatusWriter:
    """Run with ``await start()`` next to the xDS server on the same store; ``await stop()`` ends it."""

    def __init__(self, store: Store, view: View, settings: WriterSettings | None = None) -> None:
        self._store = store
        self._view = view
        self.settings = settings or WriterSettings()
        self._kinds = frozenset(status_kinds())
        self._dirty = asyncio.Event()
        self._own_writes: set[int] = set()  # resourceVersions of this writer's writes (not a reason to run)
        self._tasks: list[asyncio.Task[None]] = []
        self.passes = 0
        self.writes = 0

    async def start(self) -> None:
        """Start (again, after ``stop``: a replica that leads anew); a running writer is left as it is."""
        if self._tasks:
            return
        self._dirty.set()
        self._tasks = [asyncio.create_task(self._watch(), name="status-watch"),
                       asyncio.create_task(self._loop(), name="status-writer")]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def changed(self) -> None:
        """Something the analysis reads changed outside the store (e.g. a member cluster's services)."""
        self._dirty.set()

    async def run_once(self) -> int:
        """One pass: analyze the current view and write every status that differs; returns the writes made."""
        self.passes += 1
        config, registry = await self._view()
        messages = analyze(AnalysisInput(config, registry), root_namespace=self.settings.root_namespace())
        by_object: dict[tuple[str, str, str], list[Message]] = {}
        for msg in messages:
            r = msg.resource
            by_object.setdefault((r.kind, r.namespace, r.name), []).append(msg)
        writes = 0
        for gr in sorted(self._kinds):
            for obj in config.of(gr):
                msgs = by_object.get((obj.kind, obj.meta.namespace, obj.meta.name), [])
                writes += await self._write(gr, obj, msgs)
        self.writes += writes
        return writes

    async def _write(self, gr: GroupResource, obj: ConfigObject[Any], messages: list[Message]) -> int:
        stored = self._store.get(gr, obj.meta.namespace, obj.meta.name)
        if stored is None:
            return 0
        meta = object_meta(stored.get("metadata"))
        if meta.generation != obj.meta.generation:
            self._dirty.set()  # changed since the view was taken: the next pass speaks for the new generation
            return 0
        old = stored.get("status")
        new = render_status(old, meta.generation, messages, condition=gr not in _CONDITION_OWNED_ELSEWHERE)
        if new == old or (not new and not old):
            return 0
        try:
            written = await self._store.update(gr, {**stored, "status": new}, actor=ACTOR,
                                               expected_rv=int(meta.resource_version or 0) or None)
        except (Conflict, NotFound):
            self._dirty.set()
            return 0
        except StoreError as e:
            log.warning("status: cannot write the status of %s %s: %s", obj.kind, obj.meta.key, e)
            return 0
        rv = object_meta(written.get("metadata")).resource_version
        if rv.isdigit():
            self._own_writes.add(int(rv))
        return 1

    def _is_own(self, rv: int) -> bool:
        if rv in self._own_writes:
            self._own_writes.discard(rv)
            return True
        return False

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.settings.resync_s)
            await asyncio.sleep(self.settings.settle_s)
            self._dirty.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("status: pass failed; retrying")
                await asyncio.sleep(1.0)
                self._dirty.set()

    async def _watch(self) -> None:
        rv: int | None = self._store.current_rv
        while True:
            watch = self._store.watch(None, since_rv=rv)
            try:
                async for event in watch:
                    rv = event.rv
                    if event.gr in RESOURCES and not self._is_own(event.rv):
                        self._dirty.set()
            except Expired:
                rv = None
                self._dirty.set()
            finally:
                watch.close()
            await asyncio.sleep(0)


__all__ = ["ACTOR", "RECONCILED", "StatusWriter", "View", "WriterSettings", "render_status", "status_kinds"]
