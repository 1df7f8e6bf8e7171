"""The ServiceEntry source: services and endpoints declared by ServiceEntry and WorkloadEntry objects.

This is how non-Kubernetes workloads (VMs, the local runtime's instances, external services) join the mesh:
a ServiceEntry names hosts, ports and resolution; its endpoints are inline (``spec.endpoints``) or the
WorkloadEntries its ``workloadSelector`` selects by label in the ServiceEntry's own namespace (Istio's rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter, is_not

from meshplane.model import spec as ms
from meshplane.model.config import ConfigSnapshot
from meshplane.model.names import Hostname, Namespace
from meshplane.model.proxy import Locality
from meshplane.model.resources import SERVICE_ENTRIES as SERVICE_ENTRIES
from meshplane.model.resources import WORKLOAD_ENTRIES as WORKLOAD_ENTRIES
from meshplane.model.service import (
    Endpoint,
    Location,
    RegistrySnapshot,
    Resolution,
    Service,
    ServicePort,
    ShardKey,
    export_namespaces,
    parse_protocol,
)
from meshplane.model.spec import ConfigObject, ServiceEntry, WorkloadEntry, condition_status

SOURCE = "ServiceEntry"
CLUSTER_LABEL = "topology.istio.io/cluster"

# The registry's enums of the spec's (the same values; a value missing here fails at import, not at run time).
_RESOLUTIONS = {r: Resolution(r.value) for r in ms.Resolution}
_LOCATIONS = {loc: Location(loc.value) for loc in ms.Location}
_order = attrgetter("order")


def parse_locality(text: str) -> Locality:
    parts = [p for p in (text or "").split("/")]
    parts += [""] * (3 - len(parts))
    return Locality(parts[0], parts[1], parts[2])


def _endpoint(we: WorkloadEntry, *, cluster_id: str, namespace: str, healthy: bool = True,
              workload: str = "") -> Endpoint | None:
    """The endpoint a WorkloadEntry (an object's spec, or a ServiceEntry's inline entry) declares."""
    if not we.address:
        return None
    return Endpoint(
        address=we.address,
        ports=we.ports,
        labels=we.labels,
        service_account=we.service_account or "",
        cluster_id=cluster_id,
        network=we.network or "",
        locality=parse_locality(we.locality or ""),
        healthy=healthy,
        weight=max(we.weight or 1, 1),
        workload_name=workload,
        namespace=namespace,
    )


def _port(p: ms.ServicePort) -> ServicePort:
    name = p.name or ""
    return ServicePort(name=name or f"port-{p.number}", number=p.number or 0,
                       protocol=parse_protocol(p.protocol or "", name), target_port=p.target_port or 0)


@dataclass(frozen=True, slots=True, eq=False)
class _SERec:
    """One ServiceEntry, parsed once: its services, selector and inline endpoints."""

    key: tuple[str, str]
    order: tuple[str, str, str]
    namespace: str
    hosts: tuple[Hostname, ...]
    services: tuple[Service, ...]  # one per host, in ``hosts`` order
    selector: Mapping[str, str] | None  # None: no workloadSelector
    inline: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True, eq=False)
class _WERec:
    """One WorkloadEntry, read once: its endpoint is built when the entry arrives, not per selection."""

    key: tuple[str, str]
    order: tuple[str, str, str]
    labels: Mapping[str, str]
    endpoint: Endpoint | None  # None: the entry has no address
    ident: int  # id() of the snapshot's object, whose identity tells an unchanged entry


class ServiceEntrySource:
    """Implements :class:`~meshplane.registry.ServiceRegistry` over one ConfigSnapshot.

    Selection is indexed: WorkloadEntries by (namespace, label key, label value) and ServiceEntries by each of
    their selector's pairs, so selecting costs what matches, not ServiceEntries x WorkloadEntries. ``update``
    takes the next ConfigSnapshot: when only WorkloadEntries changed it recomputes only the ServiceEntries whose
    selectors match a changed entry (its old or new labels) and reports the hosts whose endpoints changed
    (Istio's EndpointShards idea); ``recomputed`` counts the ServiceEntries whose endpoints the last build or
    update computed. The source is the server's mutable working state; the snapshots built from it are not.
    """

    def __init__(self, config: ConfigSnapshot, cluster_id: str = "") -> None:
        self._cluster_id = cluster_id
        self.recomputed = 0
        self._compute(config)

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def source(self) -> str:
        return SOURCE

    def services(self) -> Sequence[Service]:
        return tuple(self._services)

    def endpoints(self) -> Mapping[Hostname, Sequence[Endpoint]]:
        return {h: e for h, e in self._endpoints.items() if e}

    def endpoints_of(self, host: Hostname) -> tuple[Endpoint, ...]:
        return self._endpoints.get(host, ())

    # --- building ---------------------------------------------------------------------------------------------

    def _compute(self, config: ConfigSnapshot) -> None:
        self._se_objs = config.of(SERVICE_ENTRIES)
        self._we_objs = config.of(WORKLOAD_ENTRIES)
        self._we: dict[tuple[str, str], _WERec] = {}
        self._we_ids: dict[int, tuple[str, str]] = {}
        self._we_index: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        self._we_by_ns: dict[str, set[tuple[str, str]]] = {}
        for we in self._we_objs:
            self._add_we(we)
        self._se: dict[tuple[str, str], _SERec] = {}
        self._se_index: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        self._se_select_all: dict[str, set[tuple[str, str]]] = {}
        self._host_ses: dict[Hostname, list[tuple[str, str]]] = {}
        self._services: list[Service] = []
        seen: set[str] = set()
        for se in sorted(self._se_objs, key=_order):
            rec = self._parse_se(se)
            if rec.key in self._se:
                continue
            self._se[rec.key] = rec
            if rec.selector is not None:
                if rec.selector:
                    for k, v in rec.selector.items():
                        self._se_index.setdefault((rec.namespace, k, v), set()).add(rec.key)
                else:
                    self._se_select_all.setdefault(rec.namespace, set()).add(rec.key)
            for host, svc in zip(rec.hosts, rec.services, strict=True):
                if host not in seen:
                    seen.add(host)
                    self._services.append(svc)
                self._host_ses.setdefault(host, []).append(rec.key)
        self._se_eps: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
        for key in self._se:
            self._se_eps[key] = self._select(self._se[key])
        self.recomputed = len(self._se)
        self._endpoints: dict[Hostname, tuple[Endpoint, ...]] = {}
        for host in self._host_ses:
            self._endpoints[host] = self._merge_host(host)

    def update(self, config: ConfigSnapshot) -> frozenset[Hostname] | None:
        """Move to ``config``. Returns the hosts whose endpoints changed when only WorkloadEntries changed
        (the services are then unchanged), or None after a full recompute (ServiceEntries changed)."""
        if config.of(SERVICE_ENTRIES) is not self._se_objs:
            self._compute(config)
            return None
        new_objs = config.of(WORKLOAD_ENTRIES)
        if new_objs is self._we_objs:
            self.recomputed = 0
            return frozenset()
        old_objs, self._we_objs = self._we_objs, new_objs
        if len(old_objs) == len(new_objs):
            # The usual churn: entries updated in place (the snapshot keeps them sorted by name, so an update
            # keeps its position). Compared by identity position by position, in C; an entry that moved
            # anyway is removed and added back, which is still exact.
            at = list(compress(range(len(new_objs)), map(is_not, old_objs, new_objs)))
            ids = self._we_ids  # (an entry shadowed by a later one of the same name has no id here)
            gone = [k for k in (ids.get(id(old_objs[i])) for i in at) if k is not None]
            added = [new_objs[i] for i in at]
        else:
            new_ids = {id(o): o for o in new_objs}
            gone = [self._we_ids[i] for i in self._we_ids.keys() - new_ids.keys()]
            added = [new_ids[i] for i in new_ids.keys() - self._we_ids.keys()]
        touched: list[tuple[str, Mapping[str, str]]] = []  # (namespace, labels) before and after
        for key in gone:
            rec = self._remove_we(key)
            if rec is not None:
                touched.append((key[0], rec.labels))
        for obj in added:
            rec = self._add_we(obj)
            touched.append((rec.key[0], rec.labels))
        affected: set[tuple[str, str]] = set()
        for ns, labels in touched:
            affected |= self._selecting(ns, labels)
        hosts: set[Hostname] = set()
        for key in affected:
            eps = self._select(self._se[key])
            if eps != self._se_eps.get(key):
                self._se_eps[key] = eps
                hosts.update(self._se[key].hosts)
        self.recomputed = len(affected)
        changed: set[Hostname] = set()
        for host in hosts:
            merged = self._merge_host(host)
            if merged != self._endpoints.get(host, ()):
                self._endpoints[host] = merged
                changed.add(host)
        return frozenset(changed)

    # --- indexes ---------------------------------------------------------------------------------------------

    def _add_we(self, obj: ConfigObject[WorkloadEntry]) -> _WERec:
        key = (obj.meta.namespace, obj.meta.name)
        old = self._we.get(key)
        if old is not None:  # same name listed twice: the later one wins, as it did before
            self._remove_we(key)
        labels = obj.spec.labels
        # A WorkloadEntry labelled with Istio's topology.istio.io/cluster belongs to that member cluster (the
        # local runtime's instances, auto-registered VMs); others belong to this source's cluster.
        endpoint = _endpoint(obj.spec, cluster_id=labels.get(CLUSTER_LABEL) or self._cluster_id, namespace=key[0],
                             healthy=condition_status(obj, "Healthy") != "False", workload=key[1])
        rec = _WERec(key, obj.order, labels, endpoint, id(obj))
        self._we[key] = rec
        self._we_ids[rec.ident] = key
        self._we_by_ns.setdefault(key[0], set()).add(key)
        for k, v in rec.labels.items():
            self._we_index.setdefault((key[0], k, v), set()).add(key)
        return rec

    def _remove_we(self, key: tuple[str, str]) -> _WERec | None:
        rec = self._we.pop(key, None)
        if rec is None:
            return None
        self._we_ids.pop(rec.ident, None)
        self._we_by_ns.get(key[0], set()).discard(key)
        for k, v in rec.labels.items():
            members = self._we_index.get((key[0], k, v))
            if members is not None:
                members.discard(key)
                if not members:
                    del self._we_index[(key[0], k, v)]
        return rec

    def _selecting(self, namespace: str, labels: Mapping[str, str]) -> set[tuple[str, str]]:
        """The ServiceEntries of ``namespace`` whose workloadSelector selects ``labels``."""
        out = set(self._se_select_all.get(namespace, ()))
        for k, v in labels.items():
            for key in self._se_index.get((namespace, k, v), ()):
                sel = self._se[key].selector
                if key not in out and sel is not None and all(labels.get(a) == b for a, b in sel.items()):
                    out.add(key)
        return out

    def _select(self, rec: _SERec) -> tuple[Endpoint, ...]:
        """The ServiceEntry's endpoints: inline ones, then the WorkloadEntries it selects, oldest first."""
        if rec.selector is None:
            return rec.inline
        ns = rec.namespace
        if rec.selector:
            pools = [self._we_index.get((ns, k, v), set()) for k, v in rec.selector.items()]
            smallest = min(pools, key=len)
            keys = [k for k in smallest if all(k in p for p in pools if p is not smallest)]
        else:
            keys = list(self._we_by_ns.get(ns, ()))
        chosen = sorted((self._we[k] for k in keys), key=_order)
        out = list(rec.inline)
        out.extend(we.endpoint for we in chosen if we.endpoint is not None)
        return tuple(out)

    def _merge_host(self, host: Hostname) -> tuple[Endpoint, ...]:
        out: list[Endpoint] = []
        for key in self._host_ses.get(host, ()):
            out.extend(self._se_eps.get(key, ()))
        return tuple(out)

    def _parse_se(self, obj: ConfigObject[ServiceEntry]) -> _SERec:
        namespace, spec = obj.meta.namespace, obj.spec
        ports = tuple(_port(p) for p in spec.ports if p.number)
        resolution = _RESOLUTIONS[spec.resolution] if spec.resolution is not None else Resolution.NONE
        location = _LOCATIONS[spec.location] if spec.location is not None else Location.MESH_EXTERNAL
        inline = (_endpoint(we, cluster_id=self._cluster_id, namespace=namespace) for we in spec.endpoints)
        export_to = export_namespaces(spec.export_to, namespace)
        hosts = tuple(Hostname(h) for h in dict.fromkeys(spec.hosts))
        services = tuple(Service(
            hostname=host,
            namespace=Namespace(namespace),
            ports=ports,
            addresses=spec.addresses,
            resolution=resolution,
            location=location,
            labels=obj.meta.labels,
            export_to=export_to,
            source=f"ServiceEntry/{namespace}/{obj.meta.name}",
        ) for host in hosts)
        selector = spec.workload_selector
        return _SERec(
            key=(namespace, obj.meta.name), order=obj.order, namespace=namespace, hosts=hosts, services=services,
            selector=selector.labels if selector is not None else None,
            inline=tuple(ep for ep in inline if ep is not None))


def registry_from_config(config: ConfigSnapshot, cluster_id: str = "") -> RegistrySnapshot:
    """The snapshot of the ServiceEntry source alone (tests, and meshes without other sources)."""
    src = ServiceEntrySource(config, cluster_id)
    shard = ShardKey(cluster_id, SOURCE)
    return RegistrySnapshot.build(src.services(), ((shard, h, e) for h, e in src.endpoints().items()))
