"""The registry contract every source implements, and the merge of sources into one snapshot.

Sources are merged by host name: the first source (in the order given) that declares a host owns the Service
definition; every source contributes its endpoints for that host in its own (cluster, source) shard.
:func:`aggregate` merges everything (O(mesh)); :func:`update_shard` replaces one source's endpoints of a few hosts
in an existing snapshot (O(changed)), which is what an endpoint-only change needs. A source that knows what changed
since it was last asked implements :class:`IncrementalRegistry` (Istio's EDS updates keyed by shard): the push
pipeline then applies only those hosts with :func:`update_shard` instead of re-merging and diffing the whole mesh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from meshplane.model.names import Hostname
from meshplane.model.service import Endpoint, RegistrySnapshot, Service, ShardKey


@runtime_checkable
class ServiceRegistry(Protocol):
    """One source of services and endpoints, e.g. the ServiceEntries of the config or one member cluster."""

    @property
    def cluster_id(self) -> str: ...

    @property
    def source(self) -> str:
        """A short name of the provider, e.g. "ServiceEntry" or "Kubernetes"; part of the shard key."""
        ...

    def services(self) -> Sequence[Service]: ...

    def endpoints(self) -> Mapping[Hostname, Sequence[Endpoint]]:
        """Endpoints by service host name."""
        ...


@runtime_checkable
class IncrementalRegistry(ServiceRegistry, Protocol):
    """A source that reports what changed since the last call, so a change costs O(changed), not O(mesh)."""

    def take_changes(self) -> frozenset[Hostname] | None:
        """Hosts whose endpoints changed since the previous call (and forget them); None when services may have
        changed too (or the source cannot tell), which calls for a full :func:`aggregate`."""
        ...


def take_changes(registry: ServiceRegistry) -> frozenset[Hostname] | None:
    """``registry.take_changes()`` for an incremental source; None (re-aggregate) for any other."""
    if isinstance(registry, IncrementalRegistry):
        return registry.take_changes()
    return None


def aggregate(registries: Iterable[ServiceRegistry]) -> RegistrySnapshot:
    services: list[Service] = []
    triples: list[tuple[ShardKey, Hostname, Iterable[Endpoint]]] = []
    for reg in registries:
        services.extend(reg.services())
        shard = ShardKey(reg.cluster_id, reg.source)
        for host, eps in reg.endpoints().items():
            triples.append((shard, host, eps))
    snap = RegistrySnapshot.build(services, triples)
    return RegistrySnapshot(snap.services, snap.shards, _version(snap))


def update_shard(previous: RegistrySnapshot, shard: ShardKey,
                 endpoints: Mapping[Hostname, Sequence[Endpoint]]) -> RegistrySnapshot:
    """``previous`` with one source's endpoints of some hosts replaced; services unchanged. O(hosts given).

    The version chains the previous one with the change (not a digest of the whole mesh, which would cost
    O(mesh) again): equal versions still mean equal content, which is all a version promises here."""
    h = hashlib.blake2b(previous.version.encode(), digest_size=8)
    h.update(repr(tuple(shard)).encode())
    for host in sorted(endpoints):
        h.update(host.encode())
        h.update(repr(sorted(map(repr, (e.key() for e in endpoints[host])))).encode())
    return previous.with_shard(shard, endpoints, h.hexdigest())


def _endpoint_set(snap: RegistrySnapshot, host: Hostname) -> frozenset[tuple[object, ...]]:
    return frozenset(e.key() for e in snap.endpoints_of(host))


def _version(snap: RegistrySnapshot) -> str:
    h = hashlib.blake2b(digest_size=8)
    for host in sorted(snap.services):
        h.update(repr(snap.services[host]).encode())
    for host in sorted(snap.endpoints):
        h.update(host.encode())
        h.update(repr(sorted(map(repr, _endpoint_set(snap, host)))).encode())
    return h.hexdigest()


def diff_endpoints(old: RegistrySnapshot, new: RegistrySnapshot) -> frozenset[Hostname]:
    """Hosts whose endpoints differ between two snapshots (order of endpoints does not matter)."""
    changed: set[Hostname] = set()
    for host in set(old.endpoints) | set(new.endpoints):
        if old.endpoints.get(host) is new.endpoints.get(host):
            continue
        if _endpoint_set(old, host) != _endpoint_set(new, host):
            changed.add(host)
    return frozenset(changed)
