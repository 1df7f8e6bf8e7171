"""The config controller: keeps the mesh configuration current from a store watch and reports each change.

Why here and not in the store: the xDS server needs one consistent ConfigSnapshot per push (translation reads it
and never does I/O), and needs to know *what* changed to choose between a full push and an endpoint-only push.
The controller lists every collection at one resourceVersion, then watches every collection from there; each
event updates its object table and becomes a PushRequest naming the object (the debouncer merges them); an
update that changed only an object's status (analysis messages, conditions: nothing translation reads, except a
WorkloadEntry's health) updates the table and asks for no push.
A watch that ends or expires is restarted from a fresh list (which is then one full push).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from meshplane.api.kinds import default_registry
from meshplane.model.config import ConfigKey, ConfigSnapshot, JSONObject
from meshplane.model.push import PushRequest
from meshplane.model.resources import SECRETS, WORKLOAD_ENTRIES
from meshplane.model.spec import RESOURCES, ConfigObject, DecodeError, decode_resource
from meshplane.store.errors import Expired
from meshplane.store.interface import Store
from meshplane.store.types import EventType, GroupResource, WatchEvent

log = logging.getLogger(__name__)

# Not mesh configuration: Secrets reach gateways through their agents (key material stays out of translation and
# a changed certificate costs no xDS push).


def _key(gr: GroupResource, obj: JSONObject) -> ConfigKey:
    md = obj.get("metadata") or {}
    return ConfigKey(gr, str(md.get("namespace") or ""), str(md.get("name") or ""))


def _decoded(gr: GroupResource, obj: JSONObject) -> ConfigObject[Any] | None:
    """The object decoded once for every reader; None (logged) if it does not decode.

    Admission runs the same decode, so only an object stored by an older, laxer version can fail here; it then
    takes no effect, and the log line names it and the field.
    """
    try:
        return decode_resource(gr, obj)
    except DecodeError as e:
        md = obj.get("metadata") or {}
        log.error("%s %s/%s does not decode and takes no effect: %s", gr, md.get("namespace") or "",
                  md.get("name") or "", e)
        return None


def _status_only(gr: GroupResource, before: ConfigObject[Any] | None, after: ConfigObject[Any] | None) -> bool:
    """Whether an update changed nothing translation reads: same spec, same metadata but the resourceVersion
    (status writers: analysis messages, conditions). A WorkloadEntry's status is its health, which translation
    reads, so any change to one counts."""
    if gr == WORKLOAD_ENTRIES or before is None or after is None:
        return False
    return before.spec == after.spec and replace(before.meta, resource_version="") == replace(
        after.meta, resource_version="")


class ConfigController:
    """Owns the object table. ``on_change`` receives one PushRequest per store event."""

    def __init__(self, store: Store, on_change: Callable[[PushRequest], None]) -> None:
        self._store = store
        self._on_change = on_change
        self._objects: dict[GroupResource, dict[tuple[str, str], ConfigObject[Any]]] = {}
        # Per collection: the objects sorted by (namespace, name) as of the last snapshot, their keys in that
        # order, and objects that replaced an object at the same key since (patched in at the next snapshot).
        # Why: an endpoint churns by updates to existing WorkloadEntries; re-sorting ten thousand of them per
        # flush cost more than the rest of the flush.
        self._cached: dict[GroupResource, tuple[ConfigObject[Any], ...]] = {}
        self._keys: dict[GroupResource, list[tuple[str, str]]] = {}
        self._positions: dict[GroupResource, dict[tuple[str, str], int]] = {}
        self._patches: dict[GroupResource, dict[int, ConfigObject[Any]]] = {}
        self._rv = 0
        self._task: asyncio.Task[None] | None = None
        self._watch_ready = asyncio.Event()

    @property
    def rv(self) -> int:
        return self._rv

    def load(self) -> int:
        """List every collection at one resourceVersion (synchronous: nothing changes in between)."""
        rv = self._store.current_rv
        self._objects = {}
        self._cached, self._keys, self._positions, self._patches = {}, {}, {}, {}
        for kind in default_registry():
            if kind.gr == SECRETS or kind.gr not in RESOURCES:
                continue
            items, rv = self._store.list(kind.gr)
            if items:
                self._objects[kind.gr] = {(k.namespace, k.name): d for o in items for k in [_key(kind.gr, o)]
                                          for d in [_decoded(kind.gr, o)] if d is not None}
        self._rv = rv
        return rv

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="xds-config-controller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def snapshot(self) -> ConfigSnapshot:
        objects: dict[GroupResource, tuple[ConfigObject[Any], ...]] = {}
        for gr, table in self._objects.items():
            cached = self._cached.get(gr)
            if cached is None:
                keys = self._keys[gr] = sorted(table)
                cached = self._cached[gr] = tuple(table[k] for k in keys)
                self._positions.pop(gr, None)
            elif gr in self._patches:
                patched = list(cached)
                for pos, obj in self._patches.pop(gr).items():
                    patched[pos] = obj
                cached = self._cached[gr] = tuple(patched)
            if cached:
                objects[gr] = cached
        return ConfigSnapshot(self._rv, objects)

    def apply(self, event: WatchEvent) -> ConfigKey:
        key = _key(event.gr, event.obj)
        gr, k = event.gr, (key.namespace, key.name)
        table = self._objects.setdefault(gr, {})
        decoded = None if event.type is EventType.DELETED else _decoded(gr, event.obj)
        replaces = decoded is not None and k in table
        if decoded is None:
            table.pop(k, None)
        else:
            table[k] = decoded
        # Same key, same sorted position: patch it in at the snapshot.
        if replaces and decoded is not None and gr in self._cached:
            positions = self._positions.get(gr)
            if positions is None:
                positions = self._positions[gr] = {key: i for i, key in enumerate(self._keys[gr])}
            self._patches.setdefault(gr, {})[positions[k]] = decoded
        else:
            self._cached.pop(gr, None)
            self._patches.pop(gr, None)
        self._rv = max(self._rv, event.rv)
        return key

    async def _run(self) -> None:
        while True:
            watch = self._store.watch(None, since_rv=self._rv)
            try:
                async for event in watch:
                    if ((event.rv <= self._rv and event.type is not EventType.DELETED) or event.gr == SECRETS
                            or event.gr not in RESOURCES):
                        continue
                    table = self._objects.get(event.gr, {})
                    at = (_key(event.gr, event.obj).namespace, _key(event.gr, event.obj).name)
                    before = table.get(at)
                    key = self.apply(event)
                    if event.type is EventType.MODIFIED and _status_only(event.gr, before,
                                                                         self._objects[event.gr].get(at)):
                        continue  # in the table (the next snapshot has it), but nothing to push
                    self._on_change(PushRequest(full=True, config_updated=frozenset({key}),
                                                reasons=(f"{event.type.value.lower()} {key.gr.resource}",)))
            except Expired:
                log.warning("config watch expired at rv %d: relisting", self._rv)
                self.load()
                self._on_change(PushRequest(full=True, reasons=("relist",)))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("config watch failed; restarting")
                await asyncio.sleep(0.5)
            finally:
                watch.close()
            await asyncio.sleep(0)
