"""Istio's standard metrics on upstream Envoy: ``istio_requests_total`` and friends with Istio's labels.

Why this shape: upstream Envoy has no Istio stats filter, but it has the *stats access logger*, which turns each
finished request (or TCP connection) into counter and histogram samples whose tags are access-log format strings.
So every sidecar HTTP connection manager (and TCP proxy) gets one such logger, reporting as Istio does:
``reporter="destination"`` on the inbound side, ``reporter="source"`` on the outbound side and at gateways.

Labels come from three places, none of which costs a round trip:
- the proxy's own identity from its environment (``%ENVIRONMENT(MESHPLANE_PEER_*)%``, set by the agent: see
  ``model.peer``), so the listeners stay shared by every proxy of a scope;
- the peer's identity from ``x-meshplane-peer-*`` headers: the client's sidecar adds its identity to each request,
  the server's sidecar moves it into dynamic metadata and removes the headers before the application sees them;
  on mTLS chains the server's sidecar answers with its own identity the same way (only there: a plaintext caller
  may be outside the mesh and is not told who answered). A label nobody sent is ``unknown``, as in Istio;
- the destination service from cluster metadata (outbound clusters carry ``meshplane.telemetry``) or, inbound,
  from the service that selects the workload on that port; principals from the TLS handshake's certificates.

Envoy exports these stats as ``envoy_istio_*``; the agent's metrics listener (port 15090, ``/stats/prometheus``)
serves them under Istio's names (see ``agent.bootstrap``). TCP bytes are counted when a connection closes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as accesslog_data_pb2
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshplane.model.peer import PEER_FIELDS, UNKNOWN, env_name, header_name
from meshplane.model.service import Service
from meshplane.translate.common import pack

STATS_LOGGER = "envoy.access_loggers.stats"
STAT_PREFIX = "istio"  # Envoy exports <prefix>.<name> as envoy_istio_<name>
PEER_METADATA = "meshplane.peer"  # dynamic metadata namespace of the peer's identity
CLUSTER_METADATA = "meshplane.telemetry"  # outbound clusters: the service they reach
HEADER_TO_METADATA = "envoy.filters.http.header_to_metadata"
HEADER_MUTATION = "envoy.filters.http.header_mutation"

MUTUAL_TLS = "mutual_tls"
NONE = "none"


def _own(field: str) -> str:
    return f"%ENVIRONMENT({env_name(field)})%"


def _peer(field: str) -> str:
    return f"%DYNAMIC_METADATA({PEER_METADATA}:{field})%"


@dataclass(frozen=True, slots=True)
class ServiceLabels:
    """``destination_service*`` label values."""

    host: str = UNKNOWN
    name: str = UNKNOWN
    namespace: str = UNKNOWN

    @classmethod
    def of(cls, svc: Service | None) -> ServiceLabels:
        if svc is None:
            return cls()
        # Istio: a Kubernetes service's short name; any other host (a ServiceEntry's) is its own name.
        first, _, rest = svc.hostname.partition(".")
        name = first if svc.namespace and rest.startswith(f"{svc.namespace}.svc.") else svc.hostname
        return cls(svc.hostname, name, svc.namespace or UNKNOWN)


# --- peer identity exchange -----------------------------------------------------------------------------------


def _metadata_rules() -> list[header_to_metadata_pb2.Config.Rule]:
    rules = []
    for f in PEER_FIELDS:
        rule = header_to_metadata_pb2.Config.Rule(header=header_name(f), remove=True)
        rule.on_header_present.CopyFrom(header_to_metadata_pb2.Config.KeyValuePair(
            metadata_namespace=PEER_METADATA, key=f, type=header_to_metadata_pb2.Config.STRING))
        rule.on_header_missing.CopyFrom(header_to_metadata_pb2.Config.KeyValuePair(
            metadata_namespace=PEER_METADATA, key=f, value=UNKNOWN, type=header_to_metadata_pb2.Config.STRING))
        rules.append(rule)
    return rules


def _identity_headers() -> list[base_pb2.HeaderValueOption]:
    return [base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=header_name(f), value=_own(f)),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD) for f in PEER_FIELDS]


def _mutation(*, request: bool) -> hcm_pb2.HttpFilter:
    cfg = header_mutation_pb2.HeaderMutation()
    target = cfg.mutations.request_mutations if request else cfg.mutations.response_mutations
    for header in _identity_headers():
        target.add().append.CopyFrom(header)
    return hcm_pb2.HttpFilter(name=HEADER_MUTATION, typed_config=pack(cfg))


def inbound_peer_filters(*, mtls: bool) -> list[hcm_pb2.HttpFilter]:
    """First filters of a sidecar's inbound HCM: take the caller's identity out of its headers (always: a
    plaintext caller must not reach the application with them either) and, on mTLS chains, answer with ours."""
    take = header_to_metadata_pb2.Config()
    take.request_rules.extend(_metadata_rules())
    filters = [hcm_pb2.HttpFilter(name=HEADER_TO_METADATA, typed_config=pack(take))]
    if mtls:
        filters.append(_mutation(request=False))
    return filters


def outbound_peer_filters() -> list[hcm_pb2.HttpFilter]:
    """First filters of an outbound HCM (sidecar or gateway): send our identity, take the answering sidecar's
    out of the response."""
    take = header_to_metadata_pb2.Config()
    take.response_rules.extend(_metadata_rules())
    return [hcm_pb2.HttpFilter(name=HEADER_TO_METADATA, typed_config=pack(take)), _mutation(request=True)]


def cluster_metadata(c: cluster_pb2.Cluster, svc: Service) -> None:
    """Label an outbound cluster with the service it reaches (``destination_service*`` at the source)."""
    labels = ServiceLabels.of(svc)
    c.metadata.filter_metadata[CLUSTER_METADATA].update(
        {"service": labels.host, "name": labels.name, "namespace": labels.namespace})


# --- the stats loggers ----------------------------------------------------------------------------------------


def _source_tags() -> dict[str, str]:
    """Labels of ``reporter="source"``: us as the source, the answering sidecar as the destination."""
    tags = {"reporter": "source"}
    for f, label in zip(PEER_FIELDS, _LABELS, strict=True):
        tags[f"source_{label}"] = _own(f)
        tags[f"destination_{label}"] = _peer(f)
    tags["source_principal"] = "%UPSTREAM_LOCAL_URI_SAN%"
    tags["destination_principal"] = "%UPSTREAM_PEER_URI_SAN%"
    tags["destination_service"] = f"%CLUSTER_METADATA({CLUSTER_METADATA}:service)%"
    tags["destination_service_name"] = f"%CLUSTER_METADATA({CLUSTER_METADATA}:name)%"
    tags["destination_service_namespace"] = f"%CLUSTER_METADATA({CLUSTER_METADATA}:namespace)%"
    # Istio's source reporter does not know the policy the server applied.
    tags["connection_security_policy"] = UNKNOWN
    return tags


def _destination_tags(service: ServiceLabels, *, mtls: bool, http: bool) -> dict[str, str]:
    """Labels of ``reporter="destination"``: the caller as the source (from its headers; none over TCP), us as
    the destination."""
    tags = {"reporter": "destination"}
    for f, label in zip(PEER_FIELDS, _LABELS, strict=True):
        tags[f"source_{label}"] = _peer(f) if http else UNKNOWN
        tags[f"destination_{label}"] = _own(f)
    tags["source_principal"] = "%DOWNSTREAM_PEER_URI_SAN%" if mtls else UNKNOWN
    tags["destination_principal"] = "%DOWNSTREAM_LOCAL_URI_SAN%" if mtls else UNKNOWN
    tags["destination_service"] = service.host
    tags["destination_service_name"] = service.name
    tags["destination_service_namespace"] = service.namespace
    tags["connection_security_policy"] = MUTUAL_TLS if mtls else NONE
    return tags


# model.peer's fields as Istio's label suffixes
_LABELS = ("workload", "workload_namespace", "app", "version", "cluster")


def _stat(name: str, tags: Mapping[str, str]) -> stats_pb2.Config.Stat:
    return stats_pb2.Config.Stat(
        name=name, tags=[stats_pb2.Config.Tag(name=k, value_format=v) for k, v in sorted(tags.items())])


def _log(cfg: stats_pb2.Config, log_filter: accesslog_pb2.AccessLogFilter | None = None) -> accesslog_pb2.AccessLog:
    cfg.stat_prefix = STAT_PREFIX
    log = accesslog_pb2.AccessLog(name=STATS_LOGGER, typed_config=pack(cfg))
    if log_filter is not None:
        log.filter.CopyFrom(log_filter)
    return log


def _http_log(tags: dict[str, str], protocol: str) -> accesslog_pb2.AccessLog:
    tags = {**tags, "request_protocol": protocol, "response_code": "%RESPONSE_CODE%",
            "response_flags": "%RESPONSE_FLAGS%"}
    cfg = stats_pb2.Config()
    cfg.counters.add(stat=_stat("requests_total", tags), value_fixed={"value": 1})
    ms = stats_pb2.Config.Histogram.Milliseconds
    size = stats_pb2.Config.Histogram.Bytes
    cfg.histograms.add(stat=_stat("request_duration_milliseconds", tags), unit=ms, value_format="%DURATION%")
    cfg.histograms.add(stat=_stat("request_bytes", tags), unit=size, value_format="%BYTES_RECEIVED%")
    cfg.histograms.add(stat=_stat("response_bytes", tags), unit=size, value_format="%BYTES_SENT%")
    return _log(cfg)


def inbound_http_log(service: ServiceLabels, *, mtls: bool, grpc: bool = False) -> accesslog_pb2.AccessLog:
    return _http_log(_destination_tags(service, mtls=mtls, http=True), "grpc" if grpc else "http")


def outbound_http_log() -> accesslog_pb2.AccessLog:
    return _http_log(_source_tags(), "http")


def _log_type(kind: str) -> accesslog_pb2.AccessLogFilter:
    f = accesslog_pb2.AccessLogFilter()
    f.log_type_filter.types.append(accesslog_data_pb2.AccessLogType.Value(kind))
    return f


def _tcp_logs(tags: dict[str, str]) -> list[accesslog_pb2.AccessLog]:
    """Opened on the upstream connect, closed and bytes at the end (the TCP proxy must flush on connect)."""
    tags = {**tags, "request_protocol": "tcp", "response_flags": "%RESPONSE_FLAGS%"}
    opened = stats_pb2.Config()
    opened.counters.add(stat=_stat("tcp_connections_opened_total", tags), value_fixed={"value": 1})
    ended = stats_pb2.Config()
    ended.counters.add(stat=_stat("tcp_connections_closed_total", tags), value_fixed={"value": 1})
    ended.counters.add(stat=_stat("tcp_sent_bytes_total", tags), value_format="%BYTES_SENT%")
    ended.counters.add(stat=_stat("tcp_received_bytes_total", tags), value_format="%BYTES_RECEIVED%")
    return [_log(opened, _log_type("TcpUpstreamConnected")), _log(ended, _log_type("TcpConnectionEnd"))]


def inbound_tcp_logs(service: ServiceLabels, *, mtls: bool) -> list[accesslog_pb2.AccessLog]:
    return _tcp_logs(_destination_tags(service, mtls=mtls, http=False))


def outbound_tcp_logs() -> list[accesslog_pb2.AccessLog]:
    return _tcp_logs(_source_tags())


def metric_names() -> Iterable[str]:
    """Every metric these loggers emit, under Istio's names."""
    return (f"istio_{n}" for n in ("requests_total", "request_duration_milliseconds", "request_bytes",
                                   "response_bytes", "tcp_connections_opened_total", "tcp_connections_closed_total",
                                   "tcp_sent_bytes_total", "tcp_received_bytes_total"))


__all__ = ["CLUSTER_METADATA", "PEER_METADATA", "ServiceLabels", "cluster_metadata", "inbound_http_log",
           "inbound_peer_filters", "inbound_tcp_logs", "metric_names", "outbound_http_log", "outbound_peer_filters",
           "outbound_tcp_logs"]
