"""Small helpers every builder uses: durations in Istio's text form, percentages, packing typed configs."""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from meshplane.model.labels import labels_match
from meshplane.model.proxy import Proxy
from meshplane.model.spec import Duration, ObjectMeta, ServiceEntryWorkloadSelector
from meshplane.translate.mesh import MeshSettings


class TranslationError(ValueError):
    """A config value cannot be translated; the message names the object and field."""


def proto_duration(ns: Duration | int) -> duration_pb2.Duration:
    """A typed duration (nanoseconds) as Envoy's Duration, exactly."""
    sign, n = (-1, -int(ns)) if ns < 0 else (1, int(ns))
    whole, frac = divmod(n, 1_000_000_000)
    return duration_pb2.Duration(seconds=sign * whole, nanos=sign * frac)  # protobuf: both of one sign


def duration(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    whole = int(value)
    d.seconds = whole
    d.nanos = round((value - whole) * 1e9)
    return d


def fraction(value: float) -> percent_pb2.FractionalPercent:
    """A 0-100 percentage as a fraction per million (Istio's precision)."""
    v = max(0.0, min(100.0, value))
    return percent_pb2.FractionalPercent(numerator=round(v * 10000),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def pack(msg: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def sds_secret(name: str, mesh: MeshSettings) -> secret_pb2.SdsSecretConfig:
    """A secret fetched from the agent's SDS server (bootstrap cluster ``mesh.sds_cluster``)."""
    return secret_pb2.SdsSecretConfig(
        name=name,
        sds_config=config_source_pb2.ConfigSource(
            api_config_source=config_source_pb2.ApiConfigSource(
                api_type=config_source_pb2.ApiConfigSource.GRPC,
                transport_api_version=config_source_pb2.V3,
                grpc_services=[grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=mesh.sds_cluster))],
                set_node_on_first_message_only=True,
            ),
            resource_api_version=config_source_pb2.V3,
        ),
    )


def parse_cluster_name(name: str) -> tuple[str, int, str, str] | None:
    """``outbound|9080|v1|reviews.default.svc.cluster.local`` -> (direction, port, subset, host)."""
    parts = name.split("|")
    if len(parts) != 4:
        return None
    try:
        port = int(parts[1])
    except ValueError:
        return None
    return parts[0], port, parts[2], parts[3]


def cluster_name(direction: str, port: int, subset: str = "", host: str = "") -> str:
    return f"{direction}|{port}|{subset}|{host}"


BLACKHOLE = "BlackHoleCluster"
PASSTHROUGH = "PassthroughCluster"
INBOUND_PASSTHROUGH = "InboundPassthroughCluster"


def selects_workload(meta: ObjectMeta, selector: ServiceEntryWorkloadSelector | None, proxy: Proxy) -> bool:
    """ASM's workload selection (TrafficLabel, ASMHeaderPropagation, ASMOPAPolicy): an object applies to the proxies
    of its own namespace whose labels match its ``workloadSelector.labels``; without a selector, to all of them."""
    return meta.namespace == proxy.namespace and labels_match(selector.labels if selector else {}, proxy.labels)


def is_ip_address(host: str) -> bool:
    """Whether an extension provider's ``service`` is an address (``[::1]`` too) rather than a mesh host name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def static_cluster(name: str, host: str, port: int, *, http2: bool = False) -> cluster_pb2.Cluster:
    """A one-endpoint static cluster to an address (an ext_authz or tracing provider next to the workload);
    ``http2`` for a gRPC service."""
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC, connect_timeout=duration(1))
    c.load_assignment.cluster_name = name
    sa = c.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    sa.address, sa.port_value = host.strip("[]"), port
    if http2:
        opts = http_protocol_options_pb2.HttpProtocolOptions()
        opts.explicit_http_config.http2_protocol_options.SetInParent()
        c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].CopyFrom(
            pack(opts))
    return c
