"""Istio's standard metrics on upstream Envoy: ``istio_requests_total`` and friends with Istio's labels.

Why this shape: upstream Envoy has no Istio stats filter, but it has the *stats access logger*, which turns each
finished request (or TCP connection) into counter and histogram samples of a stat with tags. So every sidecar
HTTP connection manager (and TCP proxy) gets one such logger, reporting as Istio does: ``reporter="destination"``
on the inbound side, ``reporter="source"`` on the outbound side and at gateways.

The logger formats every tag per request and looks the stat up by the resulting name, so what is known when the
listener is built is not a tag but part of the stat's *name* (``model.statname``: the reporter, the protocol,
the connection security policy, inbound the destination service, and the proxy's own identity on listeners built
for one proxy); listeners shared by a scope's proxies carry ``$self`` placeholders there instead. Per request
one tag is formatted (``model.statname``'s request tag), its fields: ``response_code``, ``response_flags``, the
other side's principal (from the TLS handshake), the peer's identity and, outbound, the destination service
(from the cluster's metadata, which ``cluster_metadata`` writes); Envoy's cost per tag is paid once, not five
times per sample. The agent's metrics listener (port 15090, ``/stats/prometheus``) decodes the names and that tag
back into Istio's names and labels (``agent.statsdecode``).

The peer's identity costs no round trip: the client's sidecar sends its own in one ``x-meshplane-peer`` header
(a fixed string, or ``%ENVIRONMENT(MESHPLANE_PEER)%`` on shared listeners; see ``model.peer``), but only to a
destination in the mesh: the filter that sets it is off in the connection manager and the route configurations
turn it on where every upstream of a route is a mesh workload (``send_identity_to_mesh``); elsewhere the header
the application sent is removed and nothing is added. The server's
sidecar moves it into dynamic metadata with one rule and removes it before the application sees it; on mTLS
chains the server's sidecar answers with its own identity the same way (only there: a plaintext caller may be
outside the mesh and is not told who answered). A label nobody sent is ``unknown``, as in Istio. TCP carries
no exchange: at the source the destination's labels come from the upstream endpoint's metadata (the control
plane writes each workload endpoint's peer value there on non-HTTP ports, ``endpoint_identity``); at the
destination the caller's labels are ``unknown``, its principal comes from the certificate. TCP bytes are counted
when a connection closes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as accesslog_data_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.stats.v3 import stats_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, struct_pb2

from meshplane.model import statname
from meshplane.model.peer import (
    PEER_ENV,
    PEER_FIELDS,
    PEER_HEADER,
    UNKNOWN,
    canonical_app,
    canonical_version,
    endpoint_workload,
)
from meshplane.model.proxy import Proxy
from meshplane.model.service import Endpoint, Service
from meshplane.translate.common import pack
from meshplane.translate.telemetryapi import AccessLogSink, TelemetryPolicy

STATS_LOGGER = "envoy.access_loggers.stats"
FILE_LOGGER = "envoy.access_loggers.file"
STAT_PREFIX = "istio"  # Envoy exports <prefix>.<name> as envoy_istio_<name>
PEER_METADATA = "meshplane.peer"  # dynamic metadata namespace of the peer's identity
PEER_KEY = "id"  # ... and its one key (a peer value, model.statname)
CLUSTER_METADATA = "meshplane.telemetry"  # outbound clusters: the service they reach (key "service")
HEADER_TO_METADATA = "envoy.filters.http.header_to_metadata"
HEADER_MUTATION = "envoy.filters.http.header_mutation"
PEER_SENDER = "meshplane.peer_sender"  # outbound: the header_mutation sending our identity, off unless a route says

MUTUAL_TLS = "mutual_tls"
NONE = "none"


# The proxy's own label values, when the listener is built for that proxy alone (its inbound side, its head
# listener, a gateway's listeners): fixed in the stat names. None: a listener shared by the proxies of a scope,
# whose names carry ``$self`` for the proxy's agent to fill in at scrape time.
Identity = Mapping[str, str] | None


def _peer_fields(workload: str, namespace: str, labels: Mapping[str, str], cluster: str) -> dict[str, str]:
    """``model.peer``'s fields of a workload (a proxy's own, or an endpoint's)."""
    return {"workload": workload or UNKNOWN, "namespace": namespace or UNKNOWN,
            "app": canonical_app(labels, workload), "version": canonical_version(labels), "cluster": cluster or UNKNOWN}


def proxy_identity(proxy: Proxy, trust_domain: str = "") -> dict[str, str]:
    """``model.peer``'s fields for ``proxy`` (the values its agent puts in its environment) and, with the trust
    domain, its SPIFFE id (``principal``)."""
    values = _peer_fields(proxy.workload_name, proxy.namespace, proxy.labels, proxy.cluster_id)
    if trust_domain:
        values["principal"] = f"spiffe://{trust_domain}/ns/{proxy.namespace}/sa/{proxy.service_account or 'default'}"
    return values


def _own(field: str, identity: Identity = None) -> str:
    if identity is not None and field in identity:
        return identity[field]
    return statname.SELF


def _own_peer_value(identity: Identity) -> str:
    """What this proxy sends its peers: its identity as one value, fixed when the listener is its own."""
    if identity is not None and all(f in identity for f in PEER_FIELDS):
        return statname.peer_value(identity)  # escaped: no ``%`` that Envoy would read as a command
    return f"%ENVIRONMENT({PEER_ENV})%"


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


def _metadata_rule() -> header_to_metadata_pb2.Config.Rule:
    rule = header_to_metadata_pb2.Config.Rule(header=PEER_HEADER, remove=True)
    rule.on_header_present.CopyFrom(header_to_metadata_pb2.Config.KeyValuePair(
        metadata_namespace=PEER_METADATA, key=PEER_KEY, type=header_to_metadata_pb2.Config.STRING))
    return rule


def _mutation(identity: Identity, *, request: bool) -> hcm_pb2.HttpFilter:
    cfg = header_mutation_pb2.HeaderMutation()
    target = cfg.mutations.request_mutations if request else cfg.mutations.response_mutations
    target.add().append.CopyFrom(base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=PEER_HEADER, value=_own_peer_value(identity)),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD))
    return hcm_pb2.HttpFilter(name=HEADER_MUTATION, typed_config=pack(cfg))


def inbound_peer_filters(policy: TelemetryPolicy, *, mtls: bool,
                         identity: Identity = None) -> list[hcm_pb2.HttpFilter]:
    """First filters of a sidecar's inbound HCM: take the caller's identity out of its header (always: a
    plaintext caller must not reach the application with it either) and, on mTLS chains, answer with ours.
    With every metric disabled the header is still removed, but nothing is read or sent."""
    if not policy.peer_exchange:
        return [_remove_peer_header()]
    take = header_to_metadata_pb2.Config()
    take.request_rules.append(_metadata_rule())
    filters = [hcm_pb2.HttpFilter(name=HEADER_TO_METADATA, typed_config=pack(take))]
    if mtls:
        filters.append(_mutation(identity, request=False))
    return filters


def _remove_peer_header() -> hcm_pb2.HttpFilter:
    cfg = header_mutation_pb2.HeaderMutation()
    cfg.mutations.request_mutations.add().remove = PEER_HEADER
    return hcm_pb2.HttpFilter(name=HEADER_MUTATION, typed_config=pack(cfg))


def outbound_peer_filters(policy: TelemetryPolicy, identity: Identity = None) -> list[hcm_pb2.HttpFilter]:
    """First filters of an outbound HCM (sidecar or gateway): remove the identity header the application sent
    (always, also with every metric disabled: it must reach no destination), then send ours where the route
    enables it (``send_identity_to_mesh``) and take the answering sidecar's out of the response."""
    strip = _remove_peer_header()
    if not policy.peer_exchange:
        return [strip]
    take = header_to_metadata_pb2.Config()
    take.response_rules.append(_metadata_rule())
    send = _mutation(identity, request=True)
    send.name, send.disabled = PEER_SENDER, True
    return [hcm_pb2.HttpFilter(name=HEADER_TO_METADATA, typed_config=pack(take)), strip, send]


def _filter_config(*, on: bool) -> any_pb2.Any:
    # A FilterConfig whose ``config`` is present but empty turns a filter that is off in the HCM on.
    fc = rc.FilterConfig(disabled=not on)
    if on:
        fc.config.SetInParent()
    return pack(fc)


_SENDER_ON, _SENDER_OFF = _filter_config(on=True), _filter_config(on=False)


def _route_in_mesh(action: rc.RouteAction, in_mesh: Callable[[str], bool]) -> list[bool]:
    """For each upstream of a route (its cluster, or each weighted cluster), whether it is in the mesh. A
    mirror gets the request's headers, so one outside the mesh keeps the whole route out; a cluster named by a
    header (or a plugin) is not known here: out."""
    which = action.WhichOneof("cluster_specifier")
    if which == "cluster":
        each = [in_mesh(action.cluster)]
    elif which == "weighted_clusters":
        each = [in_mesh(c.name) for c in action.weighted_clusters.clusters]
    else:
        return [False]
    if any(not in_mesh(m.cluster) for m in action.request_mirror_policies):
        return [False] * len(each)
    return each


_Level: TypeAlias = rc.VirtualHost | rc.Route | rc.WeightedCluster.ClusterWeight | route_pb2.RouteConfiguration


def _settle(level: _Level, want: bool, inherited: bool) -> bool:
    """Give ``level`` the sender's setting ``want``, written only where it differs from what it inherits."""
    level.typed_per_filter_config.pop(PEER_SENDER, None)
    if want != inherited:
        level.typed_per_filter_config[PEER_SENDER].CopyFrom(_SENDER_ON if want else _SENDER_OFF)
    return want


def _most(votes: list[bool]) -> bool:
    return sum(votes) * 2 > len(votes)


def send_identity_to_mesh(configs: Iterable[route_pb2.RouteConfiguration], in_mesh: Callable[[str], bool]) -> None:
    """Switch ``PEER_SENDER`` on exactly where the upstream is a mesh workload (``in_mesh``: an upstream
    cluster's name): not towards a ``MESH_EXTERNAL`` ServiceEntry, the PassthroughCluster, the BlackHoleCluster,
    a cluster chosen by a header; direct responses and redirects reach no upstream. Envoy takes the setting of
    a weighted cluster, else of its route, else of its virtual host, else of the route configuration, else the
    HCM's (off); each level is given what most of its children want and a child says otherwise only where it
    differs, so a mesh's route configuration carries the setting a few times, not once per host. Idempotent:
    it is applied again after EnvoyFilter patches. Without the sender in the HCM (every metric disabled) the
    routes' setting does nothing."""
    for cfg in configs:
        # per virtual host: its forwarding routes with what each wants and what each of its upstreams does
        plan = [(vh, [(r, _most(each), each) for r in vh.routes if r.HasField("route")
                      for each in [_route_in_mesh(r.route, in_mesh)]]) for vh in cfg.virtual_hosts]
        vh_wants = [_most([w for _, w, _ in routes]) if routes else None for _, routes in plan]
        top = _settle(cfg, _most([w for w in vh_wants if w is not None]), False)
        for (vh, routes), vh_want in zip(plan, vh_wants, strict=True):
            here = _settle(vh, top if vh_want is None else vh_want, top)
            for r, want, each in routes:
                mine = _settle(r, want, here)
                if r.route.HasField("weighted_clusters"):
                    for c, yes in zip(r.route.weighted_clusters.clusters, each, strict=True):
                        _settle(c, yes, mine)


def endpoint_identity(endpoint: Endpoint) -> str | None:
    """The peer value of a workload endpoint, for its metadata (``PEER_METADATA``): a TCP connection's source
    reports its destination's workload labels from it, as no response header answers over TCP. None for an
    endpoint that is not a workload of the registry (a ServiceEntry's address)."""
    if not endpoint.workload_name:
        return None
    return statname.peer_value(_peer_fields(endpoint_workload(endpoint.labels, endpoint.workload_name),
                                            endpoint.namespace, endpoint.labels, endpoint.cluster_id))


def cluster_metadata(c: cluster_pb2.Cluster, svc: Service) -> None:
    """Label an outbound cluster with the service it reaches (``destination_service*`` at the source), as one
    service value (``model.statname``): one field of the request tag instead of three."""
    labels = ServiceLabels.of(svc)
    c.metadata.filter_metadata[CLUSTER_METADATA].update(
        {"service": statname.joined((labels.host, labels.name, labels.namespace))})


# --- the stats loggers ----------------------------------------------------------------------------------------

# The per-request values of the request tag's fields (Envoy format strings); every other label is fixed in the
# stat name. A label whose format is its standard one (below) becomes a placeholder reading that field.
_PEER_TAG_VALUE = f"%DYNAMIC_METADATA({PEER_METADATA}:{PEER_KEY})%"
_SERVICE_TAG_VALUE = f"%CLUSTER_METADATA({CLUSTER_METADATA}:service)%"
_ENDPOINT_PEER_VALUE = f"%UPSTREAM_METADATA({PEER_METADATA}:{PEER_KEY})%"
_DOWNSTREAM_PRINCIPAL = "%DOWNSTREAM_PEER_URI_SAN%"
_UPSTREAM_PRINCIPAL = "%UPSTREAM_PEER_URI_SAN%"
# label -> (its standard format, the field carrying it, the placeholder in the name)
_FIELDS = {
    "response_code": ("%RESPONSE_CODE%", "code", statname.CODE),
    "response_flags": ("%RESPONSE_FLAGS%", "flags", statname.FLAGS),
    "source_principal": (_DOWNSTREAM_PRINCIPAL, "principal", statname.PRINCIPAL),
    "destination_principal": (_UPSTREAM_PRINCIPAL, "principal", statname.PRINCIPAL),
}


def _source_labels(identity: Identity) -> dict[str, str]:
    """Labels of ``reporter="source"``: us as the source, the answering sidecar as the destination (from its
    response header; over TCP, where nobody answers with one, from the upstream endpoint's metadata, which
    ``endpoint_identity`` gives the control plane). Our principal is known only when the connection was
    mutual TLS, which the peer's principal tells (``$mtls``)."""
    labels = {"reporter": "source"}
    for label, f in statname.side_labels("source"):
        labels[label] = _own(f, identity)
    for label, _ in statname.side_labels("destination"):
        labels[label] = statname.PEER
    labels["source_principal"] = statname.MTLS
    labels["destination_principal"] = _UPSTREAM_PRINCIPAL
    for label in statname.SERVICE_LABELS:
        labels[label] = statname.SERVICE
    # Istio's source reporter does not know the policy the server applied.
    labels["connection_security_policy"] = UNKNOWN
    return labels


def _destination_labels(service: ServiceLabels, *, mtls: bool, http: bool, identity: Identity) -> dict[str, str]:
    """Labels of ``reporter="destination"``: the caller as the source (from its header; none over TCP), us as
    the destination (on an mTLS chain our certificate is the proxy's own: its SPIFFE id)."""
    labels = {"reporter": "destination"}
    for label, _ in statname.side_labels("source"):
        labels[label] = statname.PEER if http else UNKNOWN
    for label, f in statname.side_labels("destination"):
        labels[label] = _own(f, identity)
    labels["source_principal"] = _DOWNSTREAM_PRINCIPAL if mtls else UNKNOWN
    labels["destination_principal"] = _own("principal", identity) if mtls else UNKNOWN
    labels["destination_service"] = service.host
    labels["destination_service_name"] = service.name
    labels["destination_service_namespace"] = service.namespace
    labels["connection_security_policy"] = MUTUAL_TLS if mtls else NONE
    return labels


def _is_format(value: str) -> bool:
    """Whether a label's value is an Envoy format string (formatted per request) rather than a fixed value or a
    placeholder of ``model.statname`` (both part of the stat name)."""
    return "%" in value


def _stat(metric: str, labels: Mapping[str, str], peer: str = _PEER_TAG_VALUE) -> stats_pb2.Config.Stat:
    """One stat: the fixed labels and placeholders in its name, and per request one tag (``model.statname``'s
    request tag) with every field a placeholder reads; a format string that is not a label's standard one (a
    Telemetry tag override) stays a tag of its own. ``peer``: where the peer value comes from."""
    fixed: dict[str, str] = {}
    fields: dict[str, str] = {}
    tags: dict[str, str] = {}
    for label, value in labels.items():
        standard = _FIELDS.get(label)
        if standard is not None and value == standard[0] and fields.get(standard[1], value) == value:
            fields[standard[1]] = value
            fixed[label] = standard[2]
        elif _is_format(value):
            tags[label] = value
        else:
            fixed[label] = value
    used = set(fixed.values())
    if statname.PEER in used:
        fields["peer"] = peer
    if statname.SERVICE in used:
        fields["service"] = _SERVICE_TAG_VALUE
    if statname.MTLS in used and "principal" not in fields:
        # ``$mtls`` asks whether the other side showed a certificate: the other side's principal, read even
        # where its label was removed (source_principal is $mtls at the source: the upstream is the other side)
        mtls_label = next(k for k, v in fixed.items() if v == statname.MTLS)
        fields["principal"] = _UPSTREAM_PRINCIPAL if mtls_label.startswith("source_") else _DOWNSTREAM_PRINCIPAL
    if fields:
        tags[statname.REQUEST_TAG] = statname.request_value(fields)
    return stats_pb2.Config.Stat(
        name=statname.encode_name(metric, fixed),
        tags=[stats_pb2.Config.Tag(name=k, value_format=v) for k, v in sorted(tags.items())])


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    length = len(payload)
    varint = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(varint) + payload


# The stats logger's ``stats_scope`` (Config field 6, an ``envoy.type.v3.Scope``: ``prefix`` is field 5,
# ``sharing_name`` field 6): every logger names the same shared scope, so the counters are one set per proxy
# that survives listener updates. With the deprecated ``stat_prefix`` each listener owned its stats and a config
# push that replaced a listener reset them to zero (found by tests/e2e/test_telemetry_metrics_e2e.py). The
# field is newer than the protobuf classes this package is built with, hence written by hand.
_SHARED_SCOPE = _field(6, _field(5, STAT_PREFIX.encode()) + _field(6, b"meshplane.istio-standard-metrics"))


def _log(cfg: stats_pb2.Config, log_filter: accesslog_pb2.AccessLogFilter | None = None) -> accesslog_pb2.AccessLog:
    packed = pack(cfg)
    packed.value = packed.value + _SHARED_SCOPE
    log = accesslog_pb2.AccessLog(name=STATS_LOGGER, typed_config=packed)
    if log_filter is not None:
        log.filter.CopyFrom(log_filter)
    return log


def _tagged(tags: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """The Telemetry API's tag overrides: None removes a tag, a format string sets (or adds) it."""
    out = dict(tags)
    for tag, value in changes.items():
        if value is None:
            out.pop(tag, None)
        else:
            out[tag] = value
    return out


@dataclass(frozen=True, slots=True)
class _Metric:
    """One of Istio's standard metrics: the Telemetry API's name for it, Envoy's stat, how a sample is counted
    (``value`` None: one per request or connection; a format string: that amount; ``unit``: a histogram) and when
    (``connect``: as a TCP connection reaches its upstream, else when the request or connection ends)."""

    telemetry: str
    stat: str
    value: str | None = None
    unit: int | None = None
    connect: bool = False


_HTTP_METRICS = (
    _Metric("REQUEST_COUNT", "requests_total"),
    _Metric("REQUEST_DURATION", "request_duration_milliseconds", "%DURATION%", stats_pb2.Config.Histogram.Milliseconds),
    _Metric("REQUEST_SIZE", "request_bytes", "%BYTES_RECEIVED%", stats_pb2.Config.Histogram.Bytes),
    _Metric("RESPONSE_SIZE", "response_bytes", "%BYTES_SENT%", stats_pb2.Config.Histogram.Bytes),
)
_TCP_METRICS = (
    _Metric("TCP_OPENED_CONNECTIONS", "tcp_connections_opened_total", connect=True),
    _Metric("TCP_CLOSED_CONNECTIONS", "tcp_connections_closed_total"),
    _Metric("TCP_SENT_BYTES", "tcp_sent_bytes_total", "%BYTES_SENT%"),
    _Metric("TCP_RECEIVED_BYTES", "tcp_received_bytes_total", "%BYTES_RECEIVED%"),
)


def _stats(metrics: tuple[_Metric, ...], tags: dict[str, str], policy: TelemetryPolicy, *, client: bool,
           tcp: bool) -> list[accesslog_pb2.AccessLog]:
    """The stats loggers of one side: one for what is counted at the end, one (TCP) for what is counted at the
    upstream connect (the TCP proxy flushes its access logs then too)."""
    # The peer: from the exchanged header over HTTP; over TCP the upstream endpoint's metadata (the source side)
    peer = _ENDPOINT_PEER_VALUE if tcp and client else _PEER_TAG_VALUE
    at_connect, at_end = stats_pb2.Config(), stats_pb2.Config()
    for m in metrics:
        enabled, changes = policy.metric(m.telemetry, client=client)
        if not enabled:
            continue
        cfg = at_connect if m.connect else at_end
        stat = _stat(m.stat, _tagged(tags, changes), peer)
        if m.unit is not None:
            cfg.histograms.add(stat=stat, unit=m.unit, value_format=m.value)
        elif m.value is not None:
            cfg.counters.add(stat=stat, value_format=m.value)
        else:
            cfg.counters.add(stat=stat, value_fixed={"value": 1})
    out = []
    if at_connect.counters:
        out.append(_log(at_connect, _log_type("TcpUpstreamConnected")))
    if at_end.counters or at_end.histograms:
        out.append(_log(at_end, _log_type("TcpConnectionEnd") if tcp else None))
    return out


def _http_stats(labels: dict[str, str], protocol: str, policy: TelemetryPolicy,
                client: bool) -> list[accesslog_pb2.AccessLog]:
    labels = {**labels, "request_protocol": protocol, "response_code": "%RESPONSE_CODE%",
              "response_flags": "%RESPONSE_FLAGS%"}
    return _stats(_HTTP_METRICS, labels, policy, client=client, tcp=False)


def inbound_http_logs(service: ServiceLabels, policy: TelemetryPolicy, *, mtls: bool, grpc: bool = False,
                      identity: Identity = None) -> list[accesslog_pb2.AccessLog]:
    """The server side's metrics (``reporter="destination"``) and access logs."""
    labels = _destination_labels(service, mtls=mtls, http=True, identity=identity)
    return [*_http_stats(labels, "grpc" if grpc else "http", policy,
                         client=False), *access_logs(policy, client=False)]


def outbound_http_logs(policy: TelemetryPolicy, identity: Identity = None) -> list[accesslog_pb2.AccessLog]:
    """The client side's metrics (``reporter="source"``) and access logs: sidecars' outbound, gateways."""
    return [*_http_stats(_source_labels(identity), "http", policy, client=True),
            *access_logs(policy, client=True)]


def _log_type(kind: str) -> accesslog_pb2.AccessLogFilter:
    f = accesslog_pb2.AccessLogFilter()
    f.log_type_filter.types.append(accesslog_data_pb2.AccessLogType.Value(kind))
    return f


def _tcp_stats(labels: dict[str, str], policy: TelemetryPolicy, client: bool) -> list[accesslog_pb2.AccessLog]:
    labels = {**labels, "request_protocol": "tcp", "response_flags": "%RESPONSE_FLAGS%"}
    return _stats(_TCP_METRICS, labels, policy, client=client, tcp=True)


def inbound_tcp_logs(service: ServiceLabels, policy: TelemetryPolicy, *, mtls: bool,
                     identity: Identity = None) -> list[accesslog_pb2.AccessLog]:
    return [*_tcp_stats(_destination_labels(service, mtls=mtls, http=False, identity=identity), policy,
                        client=False),
            *access_logs(policy, client=False, tcp=True)]


def outbound_tcp_logs(policy: TelemetryPolicy, identity: Identity = None) -> list[accesslog_pb2.AccessLog]:
    return [*_tcp_stats(_source_labels(identity), policy, client=True),
            *access_logs(policy, client=True, tcp=True)]


# --- access logs (the Telemetry API's accessLogging, MeshConfig's accessLogFile) ---------------------------------


def _code_filter(op: str, code: int) -> accesslog_pb2.AccessLogFilter:
    def compare(cmp: int, value: int) -> accesslog_pb2.AccessLogFilter:
        f = accesslog_pb2.AccessLogFilter()
        f.status_code_filter.comparison.op = cmp
        f.status_code_filter.comparison.value.default_value = value
        f.status_code_filter.comparison.value.runtime_key = "meshplane.access_log.status"
        return f

    c = accesslog_pb2.ComparisonFilter
    if op == "!=":
        either = accesslog_pb2.AccessLogFilter()
        either.or_filter.filters.extend([compare(c.LE, code - 1), compare(c.GE, code + 1)])
        return either
    return {">=": compare(c.GE, code), ">": compare(c.GE, code + 1), "<=": compare(c.LE, code),
            "<": compare(c.LE, code - 1), "==": compare(c.EQ, code)}[op]


def _file_log(sink: AccessLogSink, log_filter: accesslog_pb2.AccessLogFilter | None) -> accesslog_pb2.AccessLog:
    cfg = file_pb2.FileAccessLog(path=sink.path)
    if sink.json:
        fmt = struct_pb2.Struct()
        fmt.update(dict(sink.json))
        cfg.log_format.json_format.CopyFrom(fmt)
    else:
        cfg.log_format.text_format_source.inline_string = sink.text
    log = accesslog_pb2.AccessLog(name=FILE_LOGGER, typed_config=pack(cfg))
    if log_filter is not None:
        log.filter.CopyFrom(log_filter)
    return log


def access_logs(policy: TelemetryPolicy, *, client: bool, tcp: bool = False) -> list[accesslog_pb2.AccessLog]:
    out: list[accesslog_pb2.AccessLog] = []
    for rule in policy.access_logs(client=client):
        log_filter = _code_filter(*rule.code) if rule.code is not None and not tcp else None
        if tcp:
            # A TCP proxy logs each connection once, at its end (not at the connect the metrics count).
            log_filter = _log_type("TcpConnectionEnd")
        out.extend(_file_log(sink, log_filter) for sink in rule.sinks)
    return out


def metric_names() -> Iterable[str]:
    """Every metric these loggers emit, under Istio's names."""
    return (f"istio_{n}" for n in ("requests_total", "request_duration_milliseconds", "request_bytes",
                                   "response_bytes", "tcp_connections_opened_total", "tcp_connections_closed_total",
                                   "tcp_sent_bytes_total", "tcp_received_bytes_total"))


__all__ = ["CLUSTER_METADATA", "PEER_KEY", "PEER_METADATA", "PEER_SENDER", "ServiceLabels", "access_logs",
           "cluster_metadata", "endpoint_identity", "inbound_http_logs", "inbound_peer_filters", "inbound_tcp_logs",
           "metric_names", "outbound_http_logs", "outbound_peer_filters", "outbound_tcp_logs",
           "send_identity_to_mesh"]
