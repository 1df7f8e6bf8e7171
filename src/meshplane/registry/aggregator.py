"""The mesh's registry across pushes: every source merged into one snapshot per flush, at the cost of what changed.

Why a stateful object here and not in the xDS server: which sources there are, what each one changed since the
last flush and whether that is an endpoint-only change are registry questions; the push pipeline should only ask
"what is the registry now, and which hosts' endpoints changed?" and push that. :meth:`RegistryAggregator.update`
answers exactly that (a :class:`RegistryUpdate`), with no I/O.

How it stays O(changed) (Istio's EndpointShards): the ServiceEntry source is kept between flushes and recomputes
only the services whose selectors match the changed WorkloadEntries (``ServiceEntrySource.update``); an
:class:`~meshplane.registry.aggregate.IncrementalRegistry` (a member cluster) reports the hosts it changed. When
every source can tell, those hosts are replaced in the previous snapshot (:func:`update_shard`); otherwise, or
when a source was added or removed, everything is merged anew (:func:`aggregate`) and, unless a full update was
asked for anyway, diffed (:func:`diff_endpoints`).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshplane.model.config import ConfigSnapshot
from meshplane.model.names import Hostname
from meshplane.model.service import EASTWEST_LABEL, RegistrySnapshot, ShardKey
from meshplane.registry.aggregate import ServiceRegistry, aggregate, diff_endpoints, take_changes, update_shard
from meshplane.registry.serviceentry import ServiceEntrySource


@dataclass(frozen=True, slots=True)
class RegistryUpdate:
    """The registry for one flush and how it differs from the previous one.

    ``hosts``: the hosts whose endpoints changed when nothing else did, i.e. an endpoint-only push of them (empty:
    nothing to push). None when the services changed, an east-west gateway's endpoints moved (every service sent
    through it changes, not only the gateway's host) or a full update was asked for: a new push context."""

    snapshot: RegistrySnapshot
    hosts: frozenset[Hostname] | None


class RegistryAggregator:
    """The ServiceEntry source of ``cluster_id`` (this control plane's config) plus every added source."""

    def __init__(self, cluster_id: str = "") -> None:
        self.cluster_id = cluster_id
        self._sources: list[ServiceRegistry] = []
        self._service_entries: ServiceEntrySource | None = None
        self._dirty = True  # a source was added or removed since the last merge
        self._snapshot = RegistrySnapshot()
        self.incremental_updates = 0  # updates applied to the previous snapshot (no merge of the mesh)

    @property
    def snapshot(self) -> RegistrySnapshot:
        """The registry as of the last :meth:`update`."""
        return self._snapshot

    def add(self, source: ServiceRegistry) -> None:
        self._sources.append(source)
        self._dirty = True

    def remove(self, source: ServiceRegistry) -> None:
        self._sources = [s for s in self._sources if s is not source]
        self._dirty = True

    def update(self, config: ConfigSnapshot, *, full: bool = False) -> RegistryUpdate:
        """The registry for ``config``. With ``full`` the caller builds anew whatever changed, so ``hosts`` is None
        and nothing is compared; otherwise ``hosts`` says what an endpoint-only push must send."""
        old = self._snapshot
        snapshot, hosts = self._merge(config)
        self._snapshot = snapshot
        if full or not (snapshot.services is old.services or snapshot.services == old.services):
            return RegistryUpdate(snapshot, None)
        if hosts is None:
            hosts = diff_endpoints(old, snapshot)
        if hosts and _moves_a_gateway(old, snapshot, hosts):
            return RegistryUpdate(snapshot, None)
        return RegistryUpdate(snapshot, hosts)

    def _merge(self, config: ConfigSnapshot) -> tuple[RegistrySnapshot, frozenset[Hostname] | None]:
        """The snapshot for ``config`` and the hosts whose endpoints changed, computed from what changed: None
        when services may have changed (a full aggregate was needed)."""
        hosts: frozenset[Hostname] | None = None  # None: the ServiceEntry source is new, or cannot tell
        if self._service_entries is None:
            self._service_entries = ServiceEntrySource(config, self.cluster_id)
        else:
            hosts = self._service_entries.update(config)
        entries = self._service_entries
        # Every source is asked on every update, so what it reports is never applied twice.
        changes = [take_changes(s) for s in self._sources]
        if hosts is not None and not self._dirty and all(c is not None for c in changes):
            snapshot, changed = self._snapshot, set(hosts)
            if hosts:
                snapshot = update_shard(snapshot, ShardKey(self.cluster_id, entries.source),
                                        {h: entries.endpoints_of(h) for h in hosts})
            for source, source_hosts in zip(self._sources, changes, strict=True):
                if source_hosts:
                    eps = source.endpoints()
                    snapshot = update_shard(snapshot, ShardKey(source.cluster_id, source.source),
                                            {h: eps.get(h, ()) for h in source_hosts})
                    changed |= source_hosts
            if changed:
                self.incremental_updates += 1
            return snapshot, frozenset(changed)
        self._dirty = False
        return aggregate([entries, *self._sources]), None


def _moves_a_gateway(old: RegistrySnapshot, new: RegistrySnapshot, hosts: frozenset[Hostname]) -> bool:
    """Whether any of ``hosts`` has (or had) an east-west gateway among its endpoints."""
    key, value = EASTWEST_LABEL
    return any(
        e.labels.get(key) == value
        for host in hosts
        for snapshot in (old, new)
        for e in snapshot.endpoints_of(host)
    )
