"""A deliberately tiny Translator for protocol e2e tests: ServiceEntries become EDS clusters and one HTTP proxy
listener routing on the Host header.

Why not the real translation: the protocol tests (SotW/Delta, ACK/NACK, endpoint-only pushes) must not depend on
the builders, and one of them needs a config Envoy rejects on purpose, for one proxy only. A ServiceEntry
annotated ``e2e.meshplane.io/break-workload: NAME`` adds an invalid cluster (negative connect timeout) to that
workload's CDS. Behaviour tests use the real ``DefaultTranslator``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshplane.model import xdstypes
from meshplane.model.config import ConfigSnapshot
from meshplane.model.proxy import Locality, Proxy, proxy_from_node
from meshplane.model.push import PushRequest
from meshplane.model.service import RegistrySnapshot

BREAK = "e2e.meshplane.io/break-workload"
ROUTE_NAME = "http"
SE = ("networking.istio.io", "serviceentries")


class Res(NamedTuple):
    name: str
    version: str
    resource: any_pb2.Any


def pack(type_url: str, name: str, msg: Message) -> Res:
    data = msg.SerializeToString(deterministic=True)
    return Res(name, hashlib.blake2b(data, digest_size=8).hexdigest(), any_pb2.Any(type_url=type_url, value=data))


@dataclass(frozen=True)
class Ctx:
    config: ConfigSnapshot
    registry: RegistrySnapshot

    def with_registry(self, registry: RegistrySnapshot) -> Ctx:
        return Ctx(self.config, registry)


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


class MiniTranslator:
    def __init__(self) -> None:
        self.generated: list[tuple[str, str, tuple[str, ...] | None]] = []  # (node, type, names) per call

    def proxy_from_node(self, node_id: str, metadata: Mapping[str, Any], locality: Locality) -> Proxy:
        return proxy_from_node(node_id, metadata, locality)

    def build_context(self, config: ConfigSnapshot, registry: RegistrySnapshot) -> object:
        return Ctx(config, registry)

    def with_registry(self, ctx: object, registry: RegistrySnapshot, changed: frozenset[str]) -> object:
        assert isinstance(ctx, Ctx)
        return ctx.with_registry(registry)

    def proxy_affected(self, proxy: Proxy, ctx: object, request: PushRequest) -> bool:
        return True

    def _clusters(self, ctx: Ctx) -> list[tuple[str, str, int]]:
        out = []
        for host, svc in sorted(ctx.registry.services.items()):
            for p in svc.ports:
                out.append((f"outbound|{p.number}||{host}", host, p.number))
        return out

    def generate(self, type_url: str, proxy: Proxy, ctx: object, names: Collection[str] | None = None
                 ) -> Sequence[Res]:
        assert isinstance(ctx, Ctx)
        self.generated.append((proxy.id, type_url, tuple(sorted(names)) if names is not None else None))
        out: list[Res] = []
        if type_url == xdstypes.CLUSTER:
            for name, _, _ in self._clusters(ctx):
                c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
                c.connect_timeout.FromMilliseconds(1000)
                c.eds_cluster_config.eds_config.CopyFrom(_ads())
                c.eds_cluster_config.service_name = name
                out.append(pack(type_url, name, c))
            for se in ctx.config.of(SE):  # type: ignore[arg-type]
                if se.meta.annotations.get(BREAK) == proxy.workload_name:
                    bad = cluster_pb2.Cluster(name="broken", type=cluster_pb2.Cluster.STATIC)
                    bad.connect_timeout.seconds = -1
                    out.append(pack(type_url, "broken", bad))
        elif type_url == xdstypes.ENDPOINT:
            by_name = {n: (h, port) for n, h, port in self._clusters(ctx)}
            for name in sorted(names if names is not None else by_name):
                if name not in by_name:
                    continue
                host, number = by_name[name]
                svc = ctx.registry.services[host]
                sp = svc.port(number)
                assert sp is not None
                cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
                group = cla.endpoints.add()
                for ep in ctx.registry.endpoints_of(host):
                    lb = group.lb_endpoints.add()
                    lb.endpoint.address.socket_address.address = ep.address
                    lb.endpoint.address.socket_address.port_value = ep.port_for(sp)
                out.append(pack(type_url, name, cla))
        elif type_url == xdstypes.LISTENER:
            hcm = hcm_pb2.HttpConnectionManager(stat_prefix="outbound")
            hcm.rds.route_config_name = ROUTE_NAME
            hcm.rds.config_source.CopyFrom(_ads())
            hcm.http_filters.add(name="envoy.filters.http.router").typed_config.Pack(router_pb2.Router())
            lst = listener_pb2.Listener(name="http_proxy", address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=proxy.listen_address,
                                                         port_value=proxy.outbound_port)))
            chain = lst.filter_chains.add()
            chain.filters.add(name="envoy.filters.network.http_connection_manager").typed_config.Pack(hcm)
            out.append(pack(type_url, lst.name, lst))
        elif type_url == xdstypes.ROUTE:
            rc = route_pb2.RouteConfiguration(name=ROUTE_NAME)
            for name, host, number in self._clusters(ctx):
                vh = rc.virtual_hosts.add(name=f"{host}:{number}", domains=[host, f"{host}:{number}"])
                r = vh.routes.add()
                r.match.prefix = "/"
                r.route.cluster = name
            catch = rc.virtual_hosts.add(name="catch-all", domains=["*"])
            r = catch.routes.add()
            r.match.prefix = "/"
            r.direct_response.status = 404
            if names is None or ROUTE_NAME in names:
                out.append(pack(type_url, ROUTE_NAME, rc))
        return out
