"""EnvoyFilter status: a patch that makes proxies reject their config is shown on the EnvoyFilter itself.

Why: an EnvoyFilter is raw Envoy config; admission checks that it reads as its typed proto, but only Envoy knows
whether the patched result is valid. A rejected push is isolated by xDS itself (the proxy keeps its last good
config, see ``protocol.should_respond``), and this module makes it visible: every ``interval`` it asks the server
which proxies reject what (``XdsServer.rejections``, which names the EnvoyFilters carried by the rejected type) and
writes each EnvoyFilter's condition ``Applied``:

* ``False`` / ``Rejected``: "proxy <node> (<namespace>/<workload>) rejected <LDS|RDS|CDS>: <Envoy's error>" (the
  first few proxies, and how many in all);
* ``True`` / ``Accepted``: no proxy rejects config it carries.

A condition is written only when it changes (its ``lastTransitionTime`` moves when its status does); every other
part of the status is kept as it is, so the status writer's ``Reconciled`` and ``validationMessages``
(``meshplane.statuswriter``, which keeps conditions of other types in turn) stand next to ``Applied``. Only the
leading replica runs it: with ``--replicas`` it names the rejections of the proxies connected to the leader. The
same data is in ``meshplane analyze``: :func:`rejection_messages` (``MPL0101 EnvoyFilterRejected``), which
``cli.serverproc`` adds to the analysis endpoint's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
from collections.abc import Iterable
from typing import Any

from meshplane.analysis import Level, Message
from meshplane.analysis.messages import MessageType, Resource
from meshplane.model.resources import ENVOY_FILTERS
from meshplane.store.errors import Conflict, NotFound, StoreError
from meshplane.store.interface import Store
from meshplane.xds.server import XdsServer
from meshplane.xds.status import Rejection

log = logging.getLogger(__name__)

CONDITION = "Applied"
ACTOR = "system:controller:envoyfilter-status"
_SHOWN = 3  # proxies named in one message


def rejections_by_filter(rejections: Iterable[Rejection]) -> dict[str, list[Rejection]]:
    """``namespace/name`` of an EnvoyFilter -> the rejections of config that carries its patches."""
    out: dict[str, list[Rejection]] = {}
    for r in rejections:
        for s in r.sources:
            out.setdefault(s, []).append(r)
    return out


# What ``meshplane analyze`` says about a patch a proxy rejects (meshplane's own code, as for ASM kinds).
ENVOY_FILTER_REJECTED = MessageType(
    "MPL0101", "EnvoyFilterRejected", Level.ERROR,
    "proxy %s (%s) rejected the %s configuration this patches: %s; it keeps its last accepted configuration")


def rejection_messages(rejections: Iterable[Rejection]) -> list[Message]:
    """An analysis message per rejecting proxy (the first few) of each source: an EnvoyFilter, or the ASM object
    whose patches the config carries (``ASMLocalRateLimiter ns/name``, ``EnvoyFilterTemplateBinding ns/name``,
    ``WasmPlugin ns/name``)."""
    out = []
    for source, rs in rejections_by_filter(rejections).items():
        kind, _, key = source.rpartition(" ")
        namespace, _, name = key.partition("/")
        for r in rs[:_SHOWN]:
            out.append(Message(ENVOY_FILTER_REJECTED, Resource(kind or "EnvoyFilter", namespace, name),
                               (r.node_id, f"{r.namespace}/{r.workload}", r.short_name, r.error)))
    return out


def condition_for(rejections: list[Rejection]) -> tuple[str, str, str]:
    """(status, reason, message) of ``Applied`` for one EnvoyFilter."""
    if not rejections:
        return "True", "Accepted", "no proxy rejects the configuration this EnvoyFilter patches"
    parts = [f"proxy {r.node_id} ({r.namespace}/{r.workload}) rejected {r.short_name}: {r.error}"
             for r in rejections[:_SHOWN]]
    more = f" (and {len(rejections) - _SHOWN} more)" if len(rejections) > _SHOWN else ""
    return "False", "Rejected", "; ".join(parts) + more + "; these proxies keep their last accepted configuration"


class EnvoyFilterStatus:
    def __init__(self, store: Store, server: XdsServer, interval: float = 1.0) -> None:
        self._store, self._server, self._interval = store, server, interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start (again, after ``stop``: a replica that leads anew); a running writer is left as it is."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._loop(), name="envoyfilter-status")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:  # a failed round is logged and retried, never a dead task
                log.exception("envoyfilter status: reconcile failed")
            await asyncio.sleep(self._interval)

    async def reconcile(self) -> None:
        """Write every EnvoyFilter's condition that changed."""
        objs, _ = self._store.list(ENVOY_FILTERS)
        if not objs:
            return
        by_filter = rejections_by_filter(self._server.rejections())
        for obj in objs:
            md = obj["metadata"]
            key = f"{md.get('namespace', '')}/{md['name']}"
            await self._write(md.get("namespace", ""), md["name"], condition_for(by_filter.get(key, [])))

    async def _write(self, namespace: str, name: str, cond: tuple[str, str, str]) -> None:
        for _ in range(5):
            obj = self._store.get(ENVOY_FILTERS, namespace, name)
            if obj is None:
                return
            new = _with_condition(obj, cond)
            if new is None:
                return
            try:
                await self._store.update(ENVOY_FILTERS, new, actor=ACTOR,
                                         expected_rv=int(obj["metadata"]["resourceVersion"]))
                return
            except Conflict:
                continue
            except NotFound:
                return
            except StoreError as e:
                log.warning("envoyfilter status: cannot write %s/%s: %s", namespace, name, e)
                return


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_condition(obj: dict[str, Any], cond: tuple[str, str, str]) -> dict[str, Any] | None:
    status = dict(obj.get("status") or {})
    conditions = [dict(c) for c in status.get("conditions") or [] if isinstance(c, dict)]
    before = next((c for c in conditions if c.get("type") == CONDITION), None)
    if before is not None and (before.get("status"), before.get("reason"), before.get("message")) == cond:
        return None
    st, reason, message = cond
    when = str(before.get("lastTransitionTime")) if before and before.get("status") == st else _now()
    mine = {"type": CONDITION, "status": st, "reason": reason, "message": message, "lastTransitionTime": when,
            "observedGeneration": int(obj["metadata"].get("generation") or 0)}
    # In place: the status writer's Reconciled keeps its position too, so neither write looks like a change to
    # the other.
    after = [mine if c.get("type") == CONDITION else c for c in conditions]
    if before is None:
        after.append(mine)
    new = copy.deepcopy(obj)
    status["conditions"] = after
    new["status"] = status
    return new


__all__ = ["CONDITION", "ENVOY_FILTER_REJECTED", "EnvoyFilterStatus", "condition_for", "rejection_messages",
           "rejections_by_filter"]
