"""The ServiceEntry source: services and endpoints declared by ServiceEntry and WorkloadEntry objects.

This is how non-Kubernetes workloads (VMs, the local runtime's instances, external services) join the mesh:
a ServiceEntry names hosts, ports and resolution; its endpoints are inline (``spec.endpoints``) or the
WorkloadEntries its ``workloadSelector`` selects by label in the ServiceEntry's own namespace (Istio's rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshplane.model.config import ConfigSnapshot, JSONObject
from meshplane.model.proxy import Locality
from meshplane.model.resources import GroupResource
from meshplane.model.service import (
    Endpoint,
    Location,
    RegistrySnapshot,
    Resolution,
    Service,
    ServicePort,
    ShardKey,
    parse_protocol,
)

SERVICE_ENTRIES = GroupResource("networking.istio.io", "serviceentries")
WORKLOAD_ENTRIES = GroupResource("networking.istio.io", "workloadentries")
SOURCE = "ServiceEntry"
CLUSTER_LABEL = "topology.istio.io/cluster"


def parse_locality(text: str) -> Locality:
    parts = [p for p in (text or "").split("/")]
    parts += [""] * (3 - len(parts))
    return Locality(parts[0], parts[1], parts[2])


def _meta(obj: JSONObject) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return str(md.get("namespace") or "default"), str(md.get("name") or "")


def _order(obj: JSONObject) -> tuple[str, str, str]:
    md = obj.get("metadata") or {}
    ns, name = _meta(obj)
    return (str(md.get("creationTimestamp") or ""), ns, name)


def _str_map(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): str(v) for k, v in raw.items()}


def _int_map(raw: Any) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, int] = {}
    for k, v in raw.items():
        try:
            out[str(k)] = int(v)
        except (TypeError, ValueError):
            continue
    return out


def _healthy(obj: JSONObject) -> bool:
    """A WorkloadEntry is unhealthy when its status carries condition Healthy=False (set by health checks)."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == "Healthy":
            return str(cond.get("status")) != "False"
    return True


def _endpoint(spec: Mapping[str, Any], *, cluster_id: str, namespace: str, healthy: bool = True,
              workload: str = "") -> Endpoint | None:
    address = str(spec.get("address") or "")
    if not address:
        return None
    try:
        weight = int(spec.get("weight") or 1)
    except (TypeError, ValueError):
        weight = 1
    return Endpoint(
        address=address,
        ports=_int_map(spec.get("ports")),
        labels=_str_map(spec.get("labels")),
        service_account=str(spec.get("serviceAccount") or ""),
        cluster_id=cluster_id,
        network=str(spec.get("network") or ""),
        locality=parse_locality(str(spec.get("locality") or "")),
        healthy=healthy,
        weight=max(weight, 1),
        workload_name=workload,
        namespace=namespace,
    )


def _export_to(raw: Any, namespace: str) -> frozenset[str]:
    if not raw:
        return frozenset({"*"})
    return frozenset(namespace if str(x) == "." else str(x) for x in raw)


class ServiceEntrySource:
    """Implements :class:`~meshplane.registry.ServiceRegistry` over one ConfigSnapshot."""

    def __init__(self, config: ConfigSnapshot, cluster_id: str = "") -> None:
        self._cluster_id = cluster_id
        self._services: list[Service] = []
        self._endpoints: dict[str, list[Endpoint]] = {}
        self._compute(config)

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def source(self) -> str:
        return SOURCE

    def services(self) -> Sequence[Service]:
        return tuple(self._services)

    def endpoints(self) -> Mapping[str, Sequence[Endpoint]]:
        return {h: tuple(e) for h, e in self._endpoints.items()}

    def _compute(self, config: ConfigSnapshot) -> None:
        workload_entries: dict[str, list[tuple[JSONObject, dict[str, str]]]] = {}
        for we in sorted(config.of(WORKLOAD_ENTRIES), key=_order):
            labels = _str_map((we.get("spec") or {}).get("labels"))
            workload_entries.setdefault(_meta(we)[0], []).append((we, labels))
        seen: set[str] = set()
        for se in sorted(config.of(SERVICE_ENTRIES), key=_order):
            namespace, name = _meta(se)
            spec = se.get("spec") or {}
            ports = tuple(
                ServicePort(
                    name=str(p.get("name") or f"port-{p.get('number')}"),
                    number=int(p.get("number") or 0),
                    protocol=parse_protocol(str(p.get("protocol") or ""), str(p.get("name") or "")),
                    target_port=int(p.get("targetPort") or 0),
                )
                for p in spec.get("ports") or []
                if isinstance(p, Mapping) and p.get("number")
            )
            try:
                resolution = Resolution(str(spec.get("resolution") or "NONE").upper())
            except ValueError:
                resolution = Resolution.NONE
            try:
                location = Location(str(spec.get("location") or "MESH_EXTERNAL").upper())
            except ValueError:
                location = Location.MESH_EXTERNAL
            endpoints: list[Endpoint] = []
            for raw in spec.get("endpoints") or []:
                if isinstance(raw, Mapping):
                    ep = _endpoint(raw, cluster_id=self._cluster_id, namespace=namespace)
                    if ep is not None:
                        endpoints.append(ep)
            selector = spec.get("workloadSelector")
            if isinstance(selector, Mapping):
                want = _str_map(selector.get("labels"))
                for we, labels in workload_entries.get(namespace, ()):
                    we_spec = we.get("spec") or {}
                    if all(labels.get(k) == v for k, v in want.items()):
                        # A WorkloadEntry labelled with Istio's topology.istio.io/cluster belongs to that
                        # member cluster (the local runtime's instances, auto-registered VMs).
                        ep = _endpoint(we_spec, cluster_id=labels.get(CLUSTER_LABEL) or self._cluster_id,
                                       namespace=namespace,
                                       healthy=_healthy(we), workload=_meta(we)[1])
                        if ep is not None:
                            endpoints.append(ep)
            export_to = _export_to(spec.get("exportTo"), namespace)
            for host in spec.get("hosts") or []:
                host = str(host)
                if host not in seen:
                    seen.add(host)
                    self._services.append(Service(
                        hostname=host,
                        namespace=namespace,
                        ports=ports,
                        addresses=tuple(str(a) for a in spec.get("addresses") or []),
                        resolution=resolution,
                        location=location,
                        labels=_str_map((se.get("metadata") or {}).get("labels")),
                        export_to=export_to,
                        source=f"ServiceEntry/{namespace}/{name}",
                    ))
                if endpoints:
                    self._endpoints.setdefault(host, []).extend(endpoints)


def registry_from_config(config: ConfigSnapshot, cluster_id: str = "") -> RegistrySnapshot:
    """The snapshot of the ServiceEntry source alone (tests, and meshes without other sources)."""
    src = ServiceEntrySource(config, cluster_id)
    shard = ShardKey(cluster_id, SOURCE)
    return RegistrySnapshot.build(src.services(), ((shard, h, e) for h, e in src.endpoints().items()))
