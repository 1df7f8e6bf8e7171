"""What the analyzers read: one ConfigSnapshot, the registry's services and the mesh's workload instances.

Why one input object: every analyzer answers "does what this object names exist?" against the same view, so the
indexes (service hosts, workloads, gateways, subsets) are built once per analysis, here, and each analyzer stays
a small function over them. Nothing here does I/O: the server passes its current snapshots, ``meshplane analyze
-f`` the live ones with the files' objects merged over them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshplane.analysis.messages import Message, MessageType, Resource
from meshplane.model.config import ConfigSnapshot
from meshplane.model.labels import labels_match
from meshplane.model.resources import (
    DESTINATION_RULES,
    GATEWAYS,
    SERVICE_ENTRIES,
    WORKLOAD_ENTRIES,
    GroupResource,
)
from meshplane.model.service import RegistrySnapshot
from meshplane.model.spec import ConfigObject
from meshplane.translate.hosts import host_matches, resolve_host

DOMAIN_SUFFIX = "cluster.local"


@dataclass(frozen=True, slots=True)
class SchemaError:
    """An object that admission refuses (a ``-f`` file) or that no longer decodes: IST0106."""

    kind: str
    namespace: str
    name: str
    error: str
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload instance: a WorkloadEntry, or an endpoint a member cluster reports."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ports: frozenset[int]


@dataclass(frozen=True, slots=True)
class AnalysisInput:
    config: ConfigSnapshot
    registry: RegistrySnapshot = field(default_factory=RegistrySnapshot)
    schema_errors: tuple[SchemaError, ...] = ()
    # Where an object came from (``file.yaml``), by (kind, namespace, name): shown after its name in messages.
    origins: Mapping[tuple[str, str, str], str] = field(default_factory=dict)


class Context:
    """The indexes of one analysis and the messages it reports."""

    def __init__(self, inp: AnalysisInput) -> None:
        self.input = inp
        self.config = inp.config
        self.registry = inp.registry
        self.messages: list[Message] = []

    def of(self, gr: GroupResource) -> tuple[ConfigObject[Any], ...]:
        return self.config.of(gr)

    def resource(self, obj: ConfigObject[Any]) -> Resource:
        origin = self.input.origins.get((obj.kind, obj.meta.namespace, obj.meta.name), "")
        return Resource(obj.kind, obj.meta.namespace, obj.meta.name, origin)

    def report(self, obj: ConfigObject[Any], mtype: MessageType, *args: Any) -> None:
        self.messages.append(Message(mtype, self.resource(obj), tuple(args)))

    # --- hosts --------------------------------------------------------------------------------------------

    @functools.cached_property
    def _service_hosts(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """Concrete hosts and wildcard host patterns of every service: the registry's and every ServiceEntry's
        (so files analyzed before they are applied see the ServiceEntries they declare)."""
        concrete: set[str] = set(self.registry.services)
        for se in self.of(SERVICE_ENTRIES):
            concrete.update(se.spec.hosts)
        wild = tuple(sorted(h for h in concrete if h.startswith("*")))
        return frozenset(h for h in concrete if not h.startswith("*")), wild

    def resolve(self, host: str, namespace: str) -> str:
        return str(resolve_host(host, namespace, DOMAIN_SUFFIX))

    def service_exists(self, host: str, namespace: str) -> bool:
        """Whether ``host`` (as written in an object of ``namespace``) names a service of the mesh."""
        fqdn = self.resolve(host, namespace)
        concrete, wild = self._service_hosts
        if fqdn in concrete:
            return True
        if fqdn.startswith("*"):  # a wildcard destination: some service under it
            return any(host_matches(fqdn, h) for h in concrete)
        return any(host_matches(w, fqdn) for w in wild)

    def service_ports(self, host: str, namespace: str) -> tuple[int, ...] | None:
        """The ports of the service ``host`` names (None: unknown service or no ports known)."""
        fqdn = resolve_host(host, namespace, DOMAIN_SUFFIX)
        svc = self.registry.services.get(fqdn)
        if svc is not None and svc.ports:
            return tuple(sorted(p.number for p in svc.ports))
        for se in self.of(SERVICE_ENTRIES):
            if fqdn in se.spec.hosts and se.spec.ports:
                return tuple(sorted(p.number for p in se.spec.ports if p.number is not None))
        return None

    # --- workloads ----------------------------------------------------------------------------------------

    @functools.cached_property
    def workloads(self) -> tuple[Workload, ...]:
        out: dict[tuple[str, str, tuple[tuple[str, str], ...]], Workload] = {}
        for we in self.of(WORKLOAD_ENTRIES):
            labels = {**we.meta.labels, **we.spec.labels}
            key = (we.meta.namespace, we.meta.name, tuple(sorted(labels.items())))
            out[key] = Workload(we.meta.namespace, we.meta.name, labels, frozenset(we.spec.ports.values()))
        for host, eps in self.registry.endpoints.items():
            # A member cluster's endpoint: the ports it listens on and the ports of the service in front of it
            # (a Kubernetes gateway's Service port 80 reaches its pod's 8080; a Gateway may name either).
            svc = self.registry.services.get(host)
            front = {n for p in (svc.ports if svc is not None else ()) for n in (p.number, p.target_port) if n}
            for ep in eps:
                key = (ep.namespace, ep.workload_name or ep.address, tuple(sorted(ep.labels.items())))
                ports = frozenset({*ep.ports.values(), *front})
                have = out.get(key)
                out[key] = Workload(ep.namespace, ep.workload_name or ep.address, ep.labels,
                                    ports | (have.ports if have is not None else frozenset()))
        return tuple(out.values())

    def selected(self, selector: Mapping[str, str], namespace: str | None = None) -> list[Workload]:
        return [w for w in self.workloads
                if (namespace is None or w.namespace == namespace) and labels_match(selector, w.labels)]

    def services_selecting(self, workloads: Iterable[Workload]) -> list[tuple[str, tuple[int, ...]]]:
        """(host, ports) of every ServiceEntry whose workloadSelector selects one of ``workloads``; the ports are
        the target ports (where the workload listens) or the ports."""
        ws = list(workloads)
        out = []
        for se in self.of(SERVICE_ENTRIES):
            sel = se.spec.workload_selector
            if sel is None or not sel.labels:
                continue
            if any(w.namespace == se.meta.namespace and labels_match(sel.labels, w.labels) for w in ws):
                ports = tuple(p.target_port or p.number or 0 for p in se.spec.ports)
                out.append((",".join(se.spec.hosts), ports))
        return out

    # --- indexes by name ----------------------------------------------------------------------------------

    @functools.cached_property
    def gateways(self) -> Mapping[str, ConfigObject[Any]]:
        """Gateways by ``namespace/name``."""
        return {g.meta.key: g for g in self.of(GATEWAYS)}

    @functools.cached_property
    def subsets(self) -> Mapping[str, frozenset[str]]:
        """Subset names of every DestinationRule host (resolved), over all DestinationRules of that host."""
        out: dict[str, set[str]] = {}
        for dr in self.of(DESTINATION_RULES):
            host = self.resolve(dr.spec.host or "", dr.meta.namespace)
            out.setdefault(host, set()).update(s.name for s in dr.spec.subsets if s.name)
        return {h: frozenset(s) for h, s in out.items()}


def selector_string(selector: Mapping[str, str]) -> str:
    """A label selector as Kubernetes prints it (``app=x,istio=ingressgateway``, keys sorted)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


__all__ = ["AnalysisInput", "Context", "SchemaError", "Workload", "selector_string"]
