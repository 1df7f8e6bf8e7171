"""Keeps the store's generated lane objects equal to what ``compile`` makes of the lane groups and lanes.

Level-triggered, like a Kubernetes controller: any change to a lane group, a lane or a generated object (somebody
edited or deleted one) schedules one reconcile, which lists everything, compiles, and writes only the difference:
create what is missing, update what differs, delete generated objects no group produces any more (their owner is
gone). The store has no garbage collector for ``ownerReferences``, so that last step is what removes them. Writes
that change nothing are skipped here (and would be no-ops in the store anyway), so a reconcile of an unchanged
world touches nothing and triggers no xDS push.

Generated objects go through the API's admission (:func:`meshplane.api.validation.validate`, which ends with the
typed decode translation relies on) before they are written: the controller writes to the store directly, and
nothing may reach the store that the API would refuse. When any object a lane group generates is refused, none of
that group's objects is written and none of its stored ones is deleted: the group stays as it last worked (make
before break), and its status says why (condition ``Reconciled=False``, reason ``InvalidGenerated``, naming the
object and field). A group or lane the store holds but that does not decode (written by an older version) holds
its group the same way.

Besides ``Reconciled``, a group's status says what it generated (``status.generated``: ``Kind namespace/name``)
and, as its own conditions, why part of it routes nothing: ``IngressRouted`` (False: the Gateway it names does
not exist, or no lane has an ingress rule for one of the group's services) and, in permissive mode,
``FallbackTargetFound`` (False: ``fallbackTarget`` names no lane of the group).

Ordering, so that no request crosses lanes while a change arrives (proxies receive pushes one by one, and a
phase may reach them in more than one push): subsets first; then everything behind the entry (service routes,
keeping the lane routes the change drops; TrafficLabels; header propagation); then the entry itself (the
gateway VirtualService, which decides which lane a request enters); then the service routes lose what the entry
no longer sends; last the subsets nothing routes to. A proxy therefore knows a lane before any request is sent
into it, and keeps knowing it until no request is.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from meshplane.api.errors import InvalidObject, StrictDecodingError
from meshplane.api.kinds import KindRegistry, default_registry
from meshplane.api.validation import validate
from meshplane.lanes.compile import (
    DESTINATION_RULES,
    GENERATED_BY,
    GENERATED_KINDS,
    GROUP_LINK_LABEL,
    LANE_GROUP_LABEL,
    LANE_GROUPS,
    LANES,
    VIRTUAL_SERVICES,
    Generated,
    Group,
    compile_groups,
    group_key,
    lanes_of,
    subset,
)
from meshplane.model.resources import GATEWAYS
from meshplane.model.spec import ConfigObject, DecodeError, decode_resource, object_meta
from meshplane.store.errors import AlreadyExists, Conflict, Expired, NotFound
from meshplane.store.interface import Store
from meshplane.store.types import GroupResource, JSONObject

log = logging.getLogger("meshplane.lanes")

ACTOR = "system:controller:lanes"
_WATCHED = frozenset({LANE_GROUPS, LANES, GATEWAYS, *GENERATED_KINDS})
RECONCILED = "Reconciled"
INGRESS_ROUTED = "IngressRouted"
FALLBACK_FOUND = "FallbackTargetFound"
_OWN_CONDITIONS = (RECONCILED, INGRESS_ROUTED, FALLBACK_FOUND)
INVALID_GENERATED = "InvalidGenerated"
UNDECODABLE = "Undecodable"
_MESSAGE_MAX = 1024
_LANE_KINDS = {LANE_GROUPS: "ASMSwimLaneGroup", LANES: "ASMSwimLane"}

Key = tuple[GroupResource, str, str]


def _labels(obj: JSONObject) -> Mapping[str, str]:
    return object_meta(obj["metadata"]).labels


def _is_generated(obj: JSONObject) -> bool:
    return _labels(obj).get(GENERATED_BY) == "lanes"


def _key(gr: GroupResource, obj: JSONObject) -> Key:
    meta = object_meta(obj["metadata"])
    return gr, meta.namespace, meta.name


def _union_subsets(old: JSONObject, want: JSONObject) -> JSONObject:
    """``want`` keeping the subsets of ``old`` it drops (phase 1 of a reconcile)."""
    subsets = want["spec"]["subsets"]
    names = {s["name"] for s in subsets}
    try:
        stored = decode_resource(DESTINATION_RULES, old).spec.subsets
    except DecodeError:
        stored = ()
    kept = [subset(s.name or "", s.labels) for s in stored if s.name not in names]
    if not kept:
        return want
    return {**want, "spec": {**want["spec"], "subsets": [*subsets, *kept]}}


def _is_entry(gr: GroupResource, obj: JSONObject) -> bool:
    """A gateway VirtualService: it decides which lane a request enters."""
    return gr == VIRTUAL_SERVICES and bool((obj.get("spec") or {}).get("gateways"))


def _union_routes(old: JSONObject, want: JSONObject) -> JSONObject:
    """``want`` keeping the lane routes of ``old`` it drops (before the entry stops sending requests there): they go
    before ``want``'s catch-all route (the base lane's), so they still match first."""
    http = list(want["spec"].get("http") or [])
    names = {r.get("name") for r in http}
    kept = [r for r in (old.get("spec") or {}).get("http") or []
            if isinstance(r, Mapping) and r.get("match") and r.get("name") not in names]
    if not kept:
        return want
    http = [*http[:-1], *kept, http[-1]] if http and not http[-1].get("match") else [*http, *kept]
    return {**want, "spec": {**want["spec"], "http": http}}


def _updated(existing: JSONObject, want: JSONObject) -> JSONObject:
    """``existing`` with the spec, labels and owners of ``want`` (the rest of its metadata and its status stay)."""
    md = {**existing["metadata"], "labels": want["metadata"]["labels"],
          "ownerReferences": want["metadata"]["ownerReferences"]}
    return {**existing, "spec": want["spec"], "metadata": md}


@functools.cache
def _kinds() -> KindRegistry:
    return default_registry()


def refusal(g: Generated) -> str:
    """Why the API's admission would refuse ``g`` (every bad field), or "" when it accepts it."""
    info = _kinds().by_gr(g.gr)
    if info is None:  # pragma: no cover - the compiler only generates served kinds
        return f"generated {g.obj['kind']}: not a served kind"
    name = f"{g.key[1]}/{g.key[2]}"
    try:
        validate(info, copy.deepcopy(g.obj), field_validation="Strict")
    except InvalidObject as e:
        return f"generated {info.kind} {name} is invalid: " + "; ".join(f"{c.field}: {c.message}" for c in e.causes)
    except StrictDecodingError as e:
        return f"generated {info.kind} {name} is invalid: {e}"
    return ""


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a lane group's objects were taken: ``reason`` is "" when they were, else why not (``message``);
    ``generated`` names them, ``conditions`` say why part of them routes nothing."""

    reason: str = ""
    message: str = ""
    generated: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Desired:
    """What one reconcile aims at."""

    want: dict[Key, Generated]  # the objects to store
    held: frozenset[str]  # lane-group label values whose stored objects stay as they are
    verdicts: tuple[tuple[Group, Verdict], ...]  # each decoded group's


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _render(previous: Sequence[Any], c: Condition) -> dict[str, Any]:
    before = next((p for p in previous if isinstance(p, Mapping) and p.get("type") == c.type), None)
    status = "True" if c.status else "False"
    return {"type": c.type, "status": status, "reason": c.reason, "message": c.message[:_MESSAGE_MAX],
            "lastTransitionTime": str(before.get("lastTransitionTime"))
            if before is not None and before.get("status") == status else _now()}


def render_status(old: Any, group: Group, verdict: Verdict) -> dict[str, Any]:
    """The group's ``status`` with the lanes controller's conditions for ``verdict`` (``Reconciled``, then the
    verdict's own) and ``generated``; other conditions and fields stay. A condition's lastTransitionTime moves
    only when its status changes."""
    previous = old if isinstance(old, Mapping) else {}
    conditions = [c for c in previous.get("conditions") or [] if isinstance(c, Mapping)]
    others = [c for c in conditions if c.get("type") not in _OWN_CONDITIONS]
    reconciled = Condition(RECONCILED, not verdict.reason, verdict.reason or RECONCILED,
                           verdict.message or "every generated object passed validation and is stored")
    own = [_render(conditions, c) for c in (reconciled, *verdict.conditions)]
    return {**previous, "conditions": [*others, *own], "generated": list(verdict.generated),
            "observedGeneration": group.meta.generation}


class LanesController:
    """Run with ``await start()`` next to the API server on the same store; ``await stop()`` ends it."""

    def __init__(self, store: Store, *, settle_s: float = 0.05, phase_delay_s: float = 1.5,
                 settled: Callable[[], Awaitable[None]] | None = None, settled_timeout_s: float = 10.0) -> None:
        self._store = store
        self._settle = settle_s
        self._phase_delay = phase_delay_s
        # After a phase's pause, also wait (at most ``settled_timeout_s``) until the xDS server has pushed what it
        # saw (its ``wait_idle``): a mesh with many proxies may take longer than the pause to reach them all.
        self.settled = settled
        self._settled_timeout = settled_timeout_s
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

    def _decoded(self, gr: GroupResource, held: dict[str, Verdict]) -> list[ConfigObject[Any]]:
        """The collection's objects, decoded; an undecodable one holds its lane group (added to ``held``)."""
        items, _ = self._store.list(gr)
        out: list[ConfigObject[Any]] = []
        for raw in items:
            try:
                out.append(decode_resource(gr, raw))
            except DecodeError as e:
                meta = object_meta(raw["metadata"])
                group = meta.name if gr == LANE_GROUPS else meta.labels.get(GROUP_LINK_LABEL, "")
                what = f"{_LANE_KINDS[gr]} {meta.key}"
                held[f"{meta.namespace}.{group}"] = Verdict(UNDECODABLE, f"{what} does not decode: {e}")
                log.warning("lanes: %s does not decode (%s); its lane group's objects are left as stored", what, e)
        return out

    def desired(self) -> Desired:
        """Compile every lane group; a group any of whose objects admission refuses contributes none."""
        held: dict[str, Verdict] = {}
        groups = self._decoded(LANE_GROUPS, held)
        lanes = self._decoded(LANES, held)
        want: dict[Key, Generated] = {}
        verdicts: list[tuple[Group, Verdict]] = []
        for group, out in compile_groups(groups, lanes):
            key = group_key(group)
            verdict = held.get(key) or Verdict()
            if not verdict.reason:
                refused = "; ".join(r for r in map(refusal, out) if r)
                verdict = Verdict(INVALID_GENERATED, refused) if refused else verdict
            if verdict.reason:
                held[key] = verdict
            else:
                want.update((g.key, g) for g in out)
                verdict = Verdict(generated=tuple(f"{g.obj['kind']} {g.key[1]}/{g.key[2]}" for g in out),
                                  conditions=self._conditions(group, lanes, out))
            verdicts.append((group, verdict))
        return Desired(want, frozenset(held), tuple(verdicts))

    def _conditions(self, group: Group, lanes: Sequence[ConfigObject[Any]], out: Sequence[Generated]
                    ) -> tuple[Condition, ...]:
        """Why part of what ``group`` generated routes nothing (or that it all routes)."""
        spec = group.spec
        names = [lane.meta.name for lane in lanes_of(group, lanes)]
        out_conditions = []
        gateway = spec.ingress.gateway if spec.ingress is not None else None
        if gateway is not None and gateway.name:
            gw_ns = gateway.namespace or group.meta.namespace
            entry = [g for g in out if _is_entry(g.gr, g.obj)]
            if self._store.get(GATEWAYS, gw_ns, gateway.name) is None:
                out_conditions.append(Condition(
                    INGRESS_ROUTED, False, "GatewayNotFound",
                    f"spec.ingress.gateway: Gateway {gw_ns}/{gateway.name} does not exist: the lanes' ingress rules "
                    "route nothing until it does"))
            elif not entry:
                out_conditions.append(Condition(
                    INGRESS_ROUTED, False, "NoIngressRule",
                    "no lane has an online ingress rule whose destination is one of spec.services: the gateway "
                    "routes nothing into the lanes"))
            else:
                unused = ([lane.meta.name for lane in lanes_of(group, lanes) if lane.spec.ingress_rules]
                          if spec.ingress_routing_strategy == "weighted" else [])
                out_conditions.append(Condition(
                    INGRESS_ROUTED, True, "GatewayFound",
                    f"Gateway {gw_ns}/{gateway.name} routes into the lanes through "
                    + ", ".join(f"VirtualService {g.key[1]}/{g.key[2]}" for g in entry)
                    + (f"; under ingressRoutingStrategy weighted, spec.weightedIngressRule is used and the "
                       f"ingressRules of lanes {', '.join(unused)} are not" if unused else "")))
        pmc = spec.permissive_mode_configuration
        target = (pmc.fallback_target if pmc is not None else None) or ""
        if spec.is_permissive and target:
            if target in names:
                out_conditions.append(Condition(FALLBACK_FOUND, True, "LaneFound",
                                                f"fallbackTarget {target} is a lane of the group"))
            else:
                out_conditions.append(Condition(
                    FALLBACK_FOUND, False, "FallbackTargetNotALane",
                    f"spec.permissiveModeConfiguration.fallbackTarget: {target!r} is not a lane of the group (lanes: "
                    f"{', '.join(names) or 'none'}): requests without a lane header, and requests of a lane that "
                    "lacks a service, have no route to that service"))
        return tuple(out_conditions)

    async def reconcile(self) -> int:
        """One pass; returns the number of writes made.

        Make before break, in five phases: DestinationRules first gain the subsets the new routes need (keeping
        the ones old routes still use); the objects behind the entry change, service routes keeping the lane
        routes they drop; the entry (gateway routes) changes; service routes lose those lane routes and stale
        objects go; DestinationRules lose what nothing routes to any more. A phase that wrote something is
        followed by ``phase_delay_s`` so proxies receive it (the xDS push is
        debounced) before the next phase depends on it: no request meets a route to a subset cluster its proxy
        does not have yet, or that was just removed. Last, each lane group's status says whether its objects
        were accepted."""
        self.reconciles += 1
        desired = self.desired()
        want = dict(desired.want)
        have: dict[Key, JSONObject] = {}
        for gr in GENERATED_KINDS:
            items, _ = self._store.list(gr)
            have.update((_key(gr, obj), obj) for obj in items)
        for key, obj in have.items():
            if key in want and not _is_generated(obj):
                log.warning("lanes: %s %s/%s exists and is not generated; left alone", *[str(k) for k in key])
                del want[key]

        def stale(key: Key, obj: JSONObject) -> bool:  # generated, wanted by no group, and its group not held
            return key not in want and _is_generated(obj) and _labels(obj).get(LANE_GROUP_LABEL) not in desired.held

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
            phase += await self._update(g.gr, old, _union_subsets(old, g.obj))
        writes += await self._pause_after(phase)
        # Phase 2: what lies behind the entry (service routes keep the lane routes they drop, for now).
        phase = 0
        for key, g in want.items():
            if key[0] == DESTINATION_RULES or _is_entry(key[0], g.obj):
                continue
            old = have.get(key)
            if old is None:
                phase += await self._create(g.gr, g.obj)
            else:
                phase += await self._update(g.gr, old, _union_routes(old, g.obj) if g.gr == VIRTUAL_SERVICES
                                            else g.obj)
        writes += await self._pause_after(phase)
        # Phase 3: the entry (gateway VirtualServices).
        phase = 0
        for key, g in want.items():
            if not _is_entry(key[0], g.obj):
                continue
            old = have.get(key)
            phase += await (self._create(g.gr, g.obj) if old is None else self._update(g.gr, old, g.obj))
        for key, obj in have.items():
            if _is_entry(key[0], obj) and stale(key, obj):
                phase += await self._delete(*key)
        writes += await self._pause_after(phase)
        # Phase 4: routes lose what the entry no longer sends; what nothing produces goes.
        phase = 0
        for key, g in want.items():
            if key[0] == DESTINATION_RULES or _is_entry(key[0], g.obj):
                continue
            current = self._store.get(*key)
            if current is not None:
                phase += await self._update(g.gr, current, g.obj)
        for key, obj in have.items():
            if key[0] != DESTINATION_RULES and not _is_entry(key[0], obj) and stale(key, obj):
                phase += await self._delete(*key)
        writes += await self._pause_after(phase)
        # Phase 5: DestinationRules lose what nothing routes to.
        for key, obj in have.items():
            if key[0] != DESTINATION_RULES:
                continue
            final = want.get(key)
            if final is None:
                if stale(key, obj):
                    writes += await self._delete(*key)
                continue
            current = self._store.get(*key)
            if current is not None:
                writes += await self._update(final.gr, current, final.obj)
        for group, verdict in desired.verdicts:
            writes += await self._write_status(group, verdict)
        return writes

    async def _pause_after(self, writes: int) -> int:
        if writes and self._phase_delay > 0:
            await asyncio.sleep(self._phase_delay)
            if self.settled is not None:
                try:
                    async with asyncio.timeout(self._settled_timeout):
                        await self.settled()
                except TimeoutError:
                    log.warning("lanes: proxies still being pushed after %.0f s; next phase anyway",
                                self._settled_timeout)
        return writes

    async def _create(self, gr: GroupResource, obj: JSONObject) -> int:
        try:
            await self._store.create(gr, obj, actor=ACTOR)
        except AlreadyExists:
            self._dirty.set()
            return 0
        return 1

    async def _update(self, gr: GroupResource, existing: JSONObject, want: JSONObject) -> int:
        """Give ``existing`` the spec, labels and owners of ``want``; no write when it has them already."""
        obj = _updated(existing, want)
        if obj == existing:
            return 0
        return await self._replace(gr, existing, obj)

    async def _replace(self, gr: GroupResource, existing: JSONObject, obj: JSONObject) -> int:
        rv = object_meta(existing["metadata"]).resource_version
        try:
            await self._store.update(gr, obj, actor=ACTOR, expected_rv=int(rv) if rv else None)
        except (Conflict, NotFound):
            self._dirty.set()
            return 0
        return 1

    async def _write_status(self, group: Group, verdict: Verdict) -> int:
        """Write the group's ``Reconciled`` condition when it changed (a refusal is logged once, then)."""
        stored = self._store.get(LANE_GROUPS, group.meta.namespace, group.meta.name)
        if stored is None:
            return 0
        if object_meta(stored["metadata"]).resource_version != group.meta.resource_version:
            self._dirty.set()  # changed since it was compiled: the next pass speaks for the new version
            return 0
        old = stored.get("status")
        status = render_status(old, group, verdict)
        if status == old:
            return 0
        if verdict.reason == INVALID_GENERATED:
            log.warning("lanes: lane group %s not applied (its stored objects stay): %s", group.meta.key,
                        verdict.message)
        return await self._replace(LANE_GROUPS, stored, {**stored, "status": status})

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
