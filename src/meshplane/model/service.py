"""Services and endpoints as the mesh sees them, whichever source (ServiceEntry, Kubernetes, auto-registration)
they came from, and the immutable registry snapshot that translation reads.

A Service is cluster-agnostic: the same host name in several member clusters is one Service. Its endpoints are
kept in shards keyed by (cluster id, source), like Istio's EndpointShards, so one source can replace its part
without touching the others, and the push pipeline can tell which hosts' endpoints changed (EDS-only pushes).
The snapshot lives in ``model`` (not ``registry``) because both ``registry`` and ``translate`` read it and the
layer contract keeps those two independent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from meshplane.model.names import Hostname, Namespace
from meshplane.model.proxy import Locality


class Resolution(StrEnum):
    STATIC = "STATIC"  # endpoints are known addresses (EDS)
    DNS = "DNS"  # each endpoint is resolved by DNS (STRICT_DNS)
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"  # one name, connect to whichever address DNS gives (LOGICAL_DNS)
    NONE = "NONE"  # pass through to the original destination (ORIGINAL_DST)


class Location(StrEnum):
    MESH_INTERNAL = "MESH_INTERNAL"
    MESH_EXTERNAL = "MESH_EXTERNAL"


class Protocol(StrEnum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-WEB"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "MONGO"
    REDIS = "REDIS"
    MYSQL = "MYSQL"
    UNSUPPORTED = "UNSUPPORTED"

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)

    @property
    def is_http2(self) -> bool:
        return self in (Protocol.HTTP2, Protocol.GRPC)

    @property
    def is_tls(self) -> bool:
        return self in (Protocol.HTTPS, Protocol.TLS)


def parse_protocol(text: str, port_name: str = "") -> Protocol:
    """A port's protocol from its declared protocol, else from the port name's prefix (``http-web``), like
    Istio's protocol selection; unknown means TCP."""
    for candidate in (text, port_name.partition("-")[0]):
        if not candidate:
            continue
        upper = candidate.upper()
        if upper == "GRPC-WEB" or candidate.lower() == "grpc-web":
            return Protocol.GRPC_WEB
        try:
            return Protocol(upper)
        except ValueError:
            continue
    return Protocol.TCP


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    number: int
    protocol: Protocol = Protocol.TCP
    target_port: int = 0  # 0: same as number


@dataclass(frozen=True, slots=True)
class Service:
    hostname: Hostname
    namespace: Namespace
    ports: tuple[ServicePort, ...] = ()
    addresses: tuple[str, ...] = ()  # virtual IPs, if any
    resolution: Resolution = Resolution.STATIC
    location: Location = Location.MESH_INTERNAL
    labels: Mapping[str, str] = field(default_factory=dict)
    # Namespaces the service is visible in: ("*",) everywhere, (".",) resolved to its own namespace by sources.
    export_to: frozenset[str] = frozenset({"*"})
    # Where the service came from, e.g. "ServiceEntry/default/ext-svc"; informational.
    source: str = ""

    def port(self, number: int) -> ServicePort | None:
        for p in self.ports:
            if p.number == number:
                return p
        return None

    def port_by_name(self, name: str) -> ServicePort | None:
        for p in self.ports:
            if p.name == name:
                return p
        return None

    def visible_in(self, namespace: str) -> bool:
        return "*" in self.export_to or namespace in self.export_to


# An endpoint with this label is its network's east-west gateway (Istio's ``istio: eastwestgateway``). Here, like
# the snapshot, because both ``registry`` (a gateway moving is a full push) and ``translate`` (multi-network EDS)
# read it.
EASTWEST_LABEL = ("istio", "eastwestgateway")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service: where it is and what it is. ``ports`` maps service port names to the
    instance's port (absent: the service port's target port or number)."""

    address: str
    ports: Mapping[str, int] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = ""
    cluster_id: str = ""
    network: str = ""
    locality: Locality = field(default_factory=Locality)
    healthy: bool = True
    weight: int = 1
    workload_name: str = ""
    namespace: str = ""

    def port_for(self, sp: ServicePort) -> int:
        return self.ports.get(sp.name) or sp.target_port or sp.number

    def key(self) -> tuple[object, ...]:
        """A hashable value that changes whenever anything EDS sends about the endpoint changes."""
        return (
            self.address,
            tuple(sorted(self.ports.items())),
            tuple(sorted(self.labels.items())),
            self.service_account,
            self.cluster_id,
            self.network,
            self.locality,
            self.healthy,
            self.weight,
        )


class ShardKey(tuple[str, str]):
    """(cluster id, source), e.g. ("cluster-1", "ServiceEntry"). One source replaces its shard at a time."""

    __slots__ = ()

    def __new__(cls, cluster_id: str, source: str) -> ShardKey:
        return super().__new__(cls, (cluster_id, source))

    @property
    def cluster_id(self) -> str:
        return self[0]

    @property
    def source(self) -> str:
        return self[1]


EndpointShards = Mapping[ShardKey, tuple[Endpoint, ...]]


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """Services merged by host across clusters and sources; endpoints by host and by shard. Immutable."""

    services: Mapping[Hostname, Service] = field(default_factory=dict)
    shards: Mapping[Hostname, EndpointShards] = field(default_factory=dict)
    version: str = ""
    endpoints: Mapping[Hostname, tuple[Endpoint, ...]] = field(default_factory=dict, init=False, compare=False)

    def __post_init__(self) -> None:
        merged: dict[Hostname, tuple[Endpoint, ...]] = {}
        for host, by_shard in self.shards.items():
            eps: list[Endpoint] = []
            for key in sorted(by_shard):
                eps.extend(by_shard[key])
            merged[host] = tuple(eps)
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))
        object.__setattr__(self, "shards", MappingProxyType({h: MappingProxyType(dict(s)) for h, s in
                                                             self.shards.items()}))
        object.__setattr__(self, "endpoints", MappingProxyType(merged))

    def service(self, host: Hostname) -> Service | None:
        return self.services.get(host)

    def endpoints_of(self, host: Hostname) -> tuple[Endpoint, ...]:
        return self.endpoints.get(host, ())

    def with_shard(self, shard: ShardKey, endpoints: Mapping[Hostname, Iterable[Endpoint]],
                   version: str = "") -> RegistrySnapshot:
        """A copy in which ``shard``'s endpoints of the hosts in ``endpoints`` are replaced (empty: removed).
        Services and every other host are shared with this snapshot, so the cost is proportional to the hosts
        given, not to the mesh: how an endpoint-only change of one source becomes the next snapshot."""
        shards = dict(self.shards)
        merged = dict(self.endpoints)
        for host, eps in endpoints.items():
            cur = dict(shards.get(host, {}))
            new = tuple(eps)
            if new:
                cur[shard] = new
            else:
                cur.pop(shard, None)
            if cur:
                shards[host] = MappingProxyType(cur)
                merged[host] = tuple(e for key in sorted(cur) for e in cur[key])
            else:
                shards.pop(host, None)
                merged.pop(host, None)
        snap: RegistrySnapshot = object.__new__(RegistrySnapshot)
        object.__setattr__(snap, "services", self.services)
        object.__setattr__(snap, "shards", MappingProxyType(shards))
        object.__setattr__(snap, "version", version)
        object.__setattr__(snap, "endpoints", MappingProxyType(merged))
        return snap

    @staticmethod
    def build(
        services: Iterable[Service], endpoints: Iterable[tuple[ShardKey, Hostname, Iterable[Endpoint]]],
        version: str = ""
    ) -> RegistrySnapshot:
        """Merge services (first wins per host) and (shard, host, endpoints) triples into a snapshot."""
        by_host: dict[Hostname, Service] = {}
        for svc in services:
            by_host.setdefault(svc.hostname, svc)
        shards: dict[Hostname, dict[ShardKey, tuple[Endpoint, ...]]] = {}
        for shard, host, eps in endpoints:
            cur = shards.setdefault(host, {})
            cur[shard] = cur.get(shard, ()) + tuple(eps)
        return RegistrySnapshot(by_host, shards, version)


def export_namespaces(names: Iterable[str], namespace: str) -> frozenset[str]:
    """The namespaces an object's ``exportTo`` makes it visible in (Istio's rule): empty means everywhere
    (``*``), ``.`` is the object's own ``namespace``."""
    out = frozenset(namespace if x == "." else x for x in names)
    return out or frozenset({"*"})
