"""The member-cluster controller: turns MemberCluster objects into running registry sources, and their health
into the objects' status.

Why a controller of its own (Istio's multicluster secret controller plays this part): adding a cluster must be
one API call, and one cluster's trouble must never reach the control plane or the other clusters. So each
Kubernetes member runs in its own task with its own timeouts and backoff (an unreachable or silent API server
only ever delays that member's own status), and status is written from a per-member coalescing writer so a
flapping cluster costs at most one store write in flight. Removing a MemberCluster cancels its source and
withdraws its registry (``remove_registry`` + ``registry_changed``) in the same step as the watch event, before
any await, so its endpoints leave every proxy with the next push.

Stopping is bounded: every task the controller cancels (the watch loop, each member's source, the sources of
withdrawn members) is waited for at most ``stop_timeout`` seconds, then left behind with a warning. A cancellation
can be lost below us (Python 3.11's ``asyncio.wait_for`` returns the result instead of raising when the cancel
arrives in the same loop step as the result, which once left a source streaming a watch forever), and one such
task must not hang the control plane's shutdown.

Credentials: the API server redacts ``spec.kubeconfig`` on every read; this controller reads the real value
from the store directly and hands it to the source only. Neither logs it.

Local members (``spec.local: true``) are run by meshplane's local runtime: they have no API server to watch;
their endpoints are the WorkloadEntries labelled ``topology.istio.io/cluster: NAME`` (the ServiceEntry source
gives those endpoints that cluster id), so the controller only reports them Connected. Removing a local member
deletes those WorkloadEntries: there is no registry of its own to withdraw, and a removed cluster must leave
every proxy as a Kubernetes member does (its agents then hold no registration and do not recreate it).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from meshplane.model.proxy import Locality
from meshplane.model.resources import MEMBER_CLUSTERS, WORKLOAD_ENTRIES, JSONObject
from meshplane.model.spec import (
    DecodeError,
    MemberCluster,
    ObjectMeta,
    WorkloadEntry,
    decode_resource,
    object_meta,
)
from meshplane.registry.aggregate import ServiceRegistry
from meshplane.registry.kube_convert import ClusterDefaults, DiscoverySelector
from meshplane.registry.kube_source import SourceStatus
from meshplane.store.errors import Conflict, Expired, NotFound, StoreError
from meshplane.store.interface import Store
from meshplane.store.types import EventType

log = logging.getLogger(__name__)

ACTOR = "system:meshplane:multicluster"
CLUSTER_LABEL = "topology.istio.io/cluster"


class RegistryHooks(Protocol):
    """What the controller needs of the xDS server (``XdsServer`` has exactly these)."""

    def add_registry(self, registry: ServiceRegistry) -> None: ...

    def remove_registry(self, registry: ServiceRegistry) -> None: ...

    def registry_changed(self, reason: str = ...) -> None: ...


class SourceFactory(Protocol):
    """Builds the registry source of one Kubernetes member: a ServiceRegistry with ``async run()`` that keeps it
    current until cancelled (and, optionally, ``scrub(text)`` to remove credentials from a message).

    Production wires ``meshplane.kube.KubeSourceFactory`` in ``cli.serverproc``, so this package knows no
    Kubernetes client; tests may pass their own."""

    def __call__(self, defaults: ClusterDefaults, kubeconfig: str, selectors: Sequence[DiscoverySelector],
                 on_change: Callable[[str], None], on_status: Callable[[SourceStatus], None]) -> Any: ...


@dataclass(frozen=True, slots=True)
class MemberState:
    """What the controller knows of one member's health (mirrored into ``status``)."""

    connected: bool = False
    synced: bool = False
    error: str = ""
    connected_reason: str = "Connecting"
    synced_reason: str = "Syncing"


@dataclass(slots=True)
class _Member:
    name: str
    fingerprint: str
    generation: int
    source: Any = None  # a ServiceRegistry with run(); None for local members
    local: bool = False
    task: asyncio.Task[None] | None = None
    state: MemberState = field(default_factory=MemberState)
    pending: MemberState | None = None
    writer: asyncio.Task[None] | None = None


def _fingerprint(obj: Mapping[str, Any]) -> str:
    """A digest of the spec (credentials included, so a rotated kubeconfig restarts the source)."""
    spec = obj.get("spec") or {}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def _entry_labels(obj: JSONObject) -> tuple[ObjectMeta, Mapping[str, str]]:
    """A stored WorkloadEntry's metadata and (typed) labels; no labels if it does not decode."""
    try:
        entry: WorkloadEntry = decode_resource(WORKLOAD_ENTRIES, obj).spec
    except DecodeError:
        return object_meta(obj.get("metadata")), {}
    return object_meta(obj.get("metadata")), entry.labels


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_status(old: Mapping[str, Any] | None, state: MemberState, generation: int) -> dict[str, Any]:
    """The ``status`` for ``state``; a condition's lastTransitionTime moves only when its status changes."""
    previous = {str(c.get("type")): c for c in (old or {}).get("conditions") or [] if isinstance(c, Mapping)}

    def cond(ctype: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        status = "True" if ok else "False"
        before = previous.get(ctype)
        when = str(before.get("lastTransitionTime")) if before and before.get("status") == status else _now()
        return {"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": when}

    conn_msg = state.error if not state.connected and state.error else (
        "the control plane reaches the cluster" if state.connected else "connecting")
    out: dict[str, Any] = {
        "conditions": [
            cond("Connected", state.connected, state.connected_reason, conn_msg),
            cond("Synced", state.synced, state.synced_reason,
                 "services and endpoints are current" if state.synced else "initial list not complete"),
        ],
        "observedGeneration": generation,
    }
    if state.error:
        out["lastError"] = state.error
    return out


class MemberClusterController:
    """Watches MemberCluster objects in ``store``; runs one registry source per Kubernetes member.

    ``source_factory(defaults, kubeconfig, selectors, on_change, on_status)`` builds a member's source (see
    :class:`SourceFactory`); ``backoff_max`` bounds the pause before a source that failed outright is run again.
    """

    def __init__(self, store: Store, hooks: RegistryHooks, *, source_factory: SourceFactory,
                 backoff_max: float = 15.0, stop_timeout: float = 10.0,
                 leader: Callable[[], bool] | None = None) -> None:
        self._store = store
        # Replicas sharing one store all run every member's source (each serves its own proxies) but only the
        # leader writes status and cleans up removed local members (see docs/ha.md); alone, this process leads.
        self._leader: Callable[[], bool] = leader or (lambda: True)
        self._hooks = hooks
        self._backoff_max = backoff_max
        self._stop_timeout = stop_timeout
        self._factory = source_factory
        self._members: dict[str, _Member] = {}
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.withdrawn: asyncio.Queue[str] = asyncio.Queue()  # names whose registry was withdrawn (tests)
        self._cleanups: set[asyncio.Task[None]] = set()  # deleting removed local members' WorkloadEntries
        self._retiring: set[asyncio.Task[None]] = set()  # sources of withdrawn members, cancelled, still ending

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start members for what is in the store now, then follow changes in the background."""
        rv = self._resync()
        self._task = asyncio.create_task(self._watch_loop(rv), name="multicluster-controller")

    async def stop(self) -> None:
        """Stop following the store and stop every member; bounded by ``stop_timeout`` (see the module docstring)."""
        if self._task is not None:
            await self._cancel_and_wait(self._task, "the member cluster watch")
            self._task = None
        await asyncio.gather(*(self._stop_member(name, withdraw=False) for name in list(self._members)))
        retiring = list(self._retiring)
        await asyncio.gather(*(self._cancel_and_wait(t, t.get_name()) for t in retiring))
        if self._cleanups:
            await asyncio.wait(list(self._cleanups), timeout=self._stop_timeout)

    async def _cancel_and_wait(self, task: asyncio.Task[None], what: str) -> None:
        """Cancel ``task`` and wait at most ``stop_timeout`` for it to end; a task that does not is left behind."""
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=self._stop_timeout)
        if not done:
            log.warning("multicluster: %s did not stop within %.1fs of being cancelled; leaving it", what,
                        self._stop_timeout)
        elif not task.cancelled() and task.exception() is not None:
            log.debug("multicluster: %s ended with %r", what, task.exception())

    # --- views -------------------------------------------------------------------------------------------------

    def member_names(self) -> list[str]:
        return sorted(self._members)

    def source(self, name: str) -> Any:
        m = self._members.get(name)
        return m.source if m else None

    def state(self, name: str) -> MemberState | None:
        m = self._members.get(name)
        return m.state if m else None

    # --- following the store -----------------------------------------------------------------------------------

    def _resync(self) -> int:
        objs, rv = self._store.list(MEMBER_CLUSTERS)
        names = set()
        for obj in objs:
            names.add(str(obj["metadata"]["name"]))
            self._reconcile(obj)
        for name in set(self._members) - names:
            self._remove(name)
        return rv

    async def _watch_loop(self, rv: int) -> None:
        while True:
            watch = self._store.watch(MEMBER_CLUSTERS, since_rv=rv)
            try:
                async for event in watch:
                    rv = max(rv, event.rv)
                    name = str(event.obj["metadata"]["name"])
                    if event.type == EventType.DELETED:
                        self._remove(name)
                    else:
                        self._reconcile(event.obj)
            except Expired:
                log.info("multicluster: member cluster watch expired; relisting")
                rv = self._resync()
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("multicluster: watch failed; relisting")
                await asyncio.sleep(1.0)
                rv = self._resync()
                continue
            finally:
                watch.close()
            # The watch ended (store closing): stop following.
            return

    def _reconcile(self, obj: JSONObject) -> None:
        meta = object_meta(obj.get("metadata"))
        name = meta.name
        fp = _fingerprint(obj)
        current = self._members.get(name)
        if current is not None and current.fingerprint == fp:
            return  # a status write of ours, or metadata only
        if current is not None:
            self._withdraw(name, reason=f"member cluster {name} changed")
        member = _Member(name, fp, meta.generation)
        self._members[name] = member
        try:
            spec: MemberCluster = decode_resource(MEMBER_CLUSTERS, obj).spec
        except DecodeError as e:  # admission decodes every stored object: only an object stored before it can
            self._set_state(member, MemberState(False, False, str(e), "InvalidSpec", "InvalidSpec"))
            return
        if spec.local:
            member.local = True
            self._set_state(member, MemberState(True, True, "", "Local", "Local"))
            log.info("multicluster: local member cluster %s", name)
            return
        kubeconfig = spec.kubeconfig or ""
        if not kubeconfig:
            self._set_state(member, MemberState(False, False, "spec.kubeconfig is empty (or use spec.local)",
                                                "InvalidSpec", "InvalidSpec"))
            return
        defaults = ClusterDefaults(name, spec.network or "", Locality(spec.region or "", spec.zone or ""))
        selectors = spec.discovery_selectors
        member.source = self._make_source(member, defaults, kubeconfig, selectors)
        self._hooks.add_registry(member.source)
        member.task = asyncio.create_task(self._run_member(member), name=f"member-{name}")
        log.info("multicluster: member cluster %s added (network %r, region %r, zone %r)", name,
                 defaults.network, defaults.locality.region, defaults.locality.zone)

    def _make_source(self, member: _Member, defaults: ClusterDefaults, kubeconfig: str,
                     selectors: Sequence[DiscoverySelector]) -> Any:
        def on_change(reason: str) -> None:
            if self._members.get(member.name) is member:
                self._hooks.registry_changed(reason)

        def on_status(status: SourceStatus) -> None:
            if self._members.get(member.name) is not member:
                return
            self._set_state(member, MemberState(
                status.connected, status.synced, status.error,
                "Connected" if status.connected else ("Unreachable" if status.error else "Connecting"),
                "Synced" if status.synced else "Syncing",
            ))

        return self._factory(defaults, kubeconfig, selectors, on_change, on_status)

    async def _run_member(self, member: _Member) -> None:
        """Run the source; should it ever fail outright, report it and start it again after a pause."""
        delay = 0.5
        while True:
            try:
                await member.source.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                msg = f"{type(e).__name__}: {e}"[:400]
                scrub = getattr(member.source, "scrub", None)
                if callable(scrub):
                    msg = scrub(msg)
                log.warning("multicluster: member cluster %s source failed: %s", member.name, msg)
                self._set_state(member, MemberState(False, member.state.synced, msg, "Failed", "Failed"))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)

    def _withdraw(self, name: str, reason: str = "") -> None:
        """Synchronously remove the member's registry (so the next push drops its endpoints); cancel its tasks."""
        member = self._members.pop(name, None)
        if member is None:
            return
        if member.task is not None:
            member.task.cancel()
            if not member.task.done():  # stop() waits (bounded) for what is still ending then
                self._retiring.add(member.task)
                member.task.add_done_callback(self._retiring.discard)
        # The status writer is left to finish its write: it sees the member is gone (or the spec changed) and
        # stops on its own.
        if member.source is not None:
            self._hooks.remove_registry(member.source)
            self._hooks.registry_changed(reason or f"member cluster {name} removed")
        log.info("multicluster: member cluster %s withdrawn", name)
        self.withdrawn.put_nowait(name)

    def _remove(self, name: str) -> None:
        """The MemberCluster was deleted: withdraw it; a local member's WorkloadEntries go too."""
        member = self._members.get(name)
        self._withdraw(name)
        if member is not None and member.local:
            task = asyncio.create_task(self._delete_local_entries(name), name=f"member-cleanup-{name}")
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

    async def _delete_local_entries(self, name: str) -> None:
        if not self._leader():
            return  # the leader's controller deletes them
        objs, _ = self._store.list(WORKLOAD_ENTRIES)
        mine = [meta for meta, labels in map(_entry_labels, objs) if labels.get(CLUSTER_LABEL) == name]
        for md in mine:
            if name in self._members:
                return  # added again meanwhile: its entries stay
            try:
                await self._store.delete(WORKLOAD_ENTRIES, md.namespace, md.name, actor=ACTOR)
            except NotFound:
                continue
            except StoreError as e:
                log.warning("multicluster: cannot delete WorkloadEntry %s of removed cluster %s: %s",
                            md.key, name, e)
        if mine:
            log.info("multicluster: deleted %d WorkloadEntries of removed local cluster %s", len(mine), name)

    async def _stop_member(self, name: str, *, withdraw: bool) -> None:
        member = self._members.pop(name, None)
        if member is None:
            return
        if member.task is not None:
            await self._cancel_and_wait(member.task, f"the source of member cluster {name}")
        if member.writer is not None:  # let an in-flight status write finish (see _withdraw)
            await asyncio.wait([member.writer], timeout=self._stop_timeout)
        if withdraw and member.source is not None:
            self._hooks.remove_registry(member.source)

    # --- status ------------------------------------------------------------------------------------------------

    def _set_state(self, member: _Member, state: MemberState) -> None:
        if state == member.state and member.pending is None and member.writer is not None:
            return
        if state.connected and not member.state.connected:
            log.info("multicluster: member cluster %s connected", member.name)
        member.state = state
        member.pending = state
        if member.writer is None or member.writer.done():
            member.writer = asyncio.create_task(self._write_status(member), name=f"member-status-{member.name}")

    def leadership_changed(self) -> None:
        """This replica became the leader: write the status every member has now (the last leader's may be old)."""
        for member in self._members.values():
            member.pending = member.state
            if member.writer is None or member.writer.done():
                member.writer = asyncio.create_task(self._write_status(member), name=f"member-status-{member.name}")

    async def _write_status(self, member: _Member) -> None:
        while member.pending is not None and self._members.get(member.name) is member and self._leader():
            state, member.pending = member.pending, None
            for _ in range(5):
                obj = self._store.get(MEMBER_CLUSTERS, "", member.name)
                if obj is None or _fingerprint(obj) != member.fingerprint:
                    return
                new = copy.deepcopy(dict(obj))
                new["status"] = render_status(obj.get("status"), state, member.generation)
                try:
                    await self._store.update(MEMBER_CLUSTERS, new, actor=ACTOR,
                                             expected_rv=int(obj["metadata"]["resourceVersion"]))
                    break
                except Conflict:
                    continue
                except NotFound:
                    return
                except StoreError as e:
                    log.warning("multicluster: cannot write status of %s: %s", member.name, e)
                    break
