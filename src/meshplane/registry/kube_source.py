"""One Kubernetes member cluster as a registry source, fed with list results and watch events: no I/O.

Why apart from the client (:mod:`meshplane.kube`): what the mesh sees of a cluster (services, endpoints), when
that view may be shown (sync), how healthy the connection is (status) and what changed since the push pipeline
last asked (``take_changes``) are decisions, not I/O, and are unit-tested here by feeding objects in. The adapter
lists and watches and hands every result to :class:`KubeRegistry`: a complete list of one kind
(:meth:`~KubeRegistry.listed`), one watch event (:meth:`~KubeRegistry.event`), a request that reached the API
server (:meth:`~KubeRegistry.reached`) or one that failed (:meth:`~KubeRegistry.failed`).

Until every kind has been listed once the source reports no services and no endpoints (a half-listed cluster,
e.g. slices without their pods, would program wrong labels); after that, a lost connection keeps the last known
endpoints, as Istio does. The conversion itself is :mod:`meshplane.registry.kube_convert`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from meshplane.model.names import Hostname
from meshplane.model.service import Endpoint, Service
from meshplane.registry.kube_convert import KINDS, Change, ClusterDefaults, ClusterIndex, DiscoverySelector, KubeObject

log = logging.getLogger(__name__)

SOURCE = "Kubernetes"


@dataclass(frozen=True, slots=True)
class SourceStatus:
    connected: bool = False
    synced: bool = False
    error: str = ""


class KubeRegistry:
    """Implements :class:`~meshplane.registry.aggregate.IncrementalRegistry` for one Kubernetes member cluster.

    ``on_change(reason)`` is called after each change that alters services or endpoints (once synced),
    ``on_status(status)`` whenever connectivity or sync changes.
    """

    def __init__(
        self,
        defaults: ClusterDefaults,
        discovery_selectors: Sequence[DiscoverySelector] = (),
        *,
        on_change: Callable[[str], None] | None = None,
        on_status: Callable[[SourceStatus], None] | None = None,
    ) -> None:
        self._defaults = defaults
        self._index = ClusterIndex(defaults, discovery_selectors)
        self._on_change = on_change
        self._on_status = on_status
        self._listed: set[str] = set()
        self._errors: dict[str, str] = {}
        self._contacted = False
        self._status = SourceStatus()
        # What changed since ``take_changes`` was last called: hosts whose endpoints moved, or "services may
        # differ" (first sync, a Service or Namespace change), which calls for a full re-merge.
        self._changed_hosts: set[Hostname] = set()
        self._services_changed = True

    # --- ServiceRegistry -----------------------------------------------------------------------------------

    @property
    def cluster_id(self) -> str:
        return self._defaults.cluster_id

    @property
    def source(self) -> str:
        return SOURCE

    def services(self) -> Sequence[Service]:
        return self._index.services() if self._status.synced else ()

    def endpoints(self) -> Mapping[Hostname, Sequence[Endpoint]]:
        return self._index.endpoints() if self._status.synced else {}

    def take_changes(self) -> frozenset[Hostname] | None:
        """:class:`~meshplane.registry.aggregate.IncrementalRegistry`: hosts whose endpoints changed since the
        last call, or None when services may have changed (the pipeline then re-merges everything)."""
        services, hosts = self._services_changed, frozenset(self._changed_hosts)
        self._services_changed = False
        self._changed_hosts.clear()
        return None if services else hosts

    # --- state ---------------------------------------------------------------------------------------------

    @property
    def status(self) -> SourceStatus:
        return self._status

    @property
    def index(self) -> ClusterIndex:
        return self._index

    # --- what the adapter feeds in -------------------------------------------------------------------------

    def listed(self, kind: str, objects: Iterable[KubeObject]) -> None:
        """A complete list of ``kind`` (the first, or a relist after the resume point was compacted)."""
        self._listed.add(kind)
        change = self._index.replace(kind, objects)
        self.reached(kind)
        self._applied(kind, change)

    def event(self, kind: str, event_type: str, obj: KubeObject) -> None:
        """One watch event (ADDED, MODIFIED or DELETED) of ``kind``."""
        self._applied(kind, self._index.apply(kind, event_type, obj))

    def reached(self, kind: str) -> None:
        """A request for ``kind`` was answered: the API server is reachable for it again."""
        self._contacted = True
        if kind in self._errors:
            del self._errors[kind]
        self._set_status()

    def failed(self, kind: str, message: str) -> None:
        """A request for ``kind`` failed; ``message`` must already be free of credentials."""
        if self._errors.get(kind) != message:
            log.warning("cluster %s: %s: %s", self.cluster_id, kind, message)
        self._errors[kind] = message
        self._set_status()

    # --- internals -----------------------------------------------------------------------------------------

    def _set_status(self) -> None:
        error = next(iter(self._errors.values()), "")
        new = SourceStatus(connected=self._contacted and not self._errors, synced=self._status.synced or
                           self._listed >= set(KINDS), error=error)
        if new == self._status:
            return
        became_synced = new.synced and not self._status.synced
        self._status = new
        if became_synced:
            self._services_changed = True
        if self._on_status is not None:
            self._on_status(new)
        if became_synced:
            self._notify(f"cluster {self.cluster_id} synced")

    def _notify(self, reason: str) -> None:
        if self._status.synced and self._on_change is not None:
            self._on_change(reason)

    def _applied(self, kind: str, change: Change) -> None:
        if change:
            if change.services:
                self._services_changed = True
            self._changed_hosts.update(change.hosts)
            self._notify(f"{self.cluster_id}/{kind}")
