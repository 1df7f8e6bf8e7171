"""What the control plane knows about one connected Envoy: its identity, workload and place in the mesh.

Envoy tells us this in its Node (id, locality, metadata) on the first xDS request; ``docs/proxy-metadata.md``
documents the keys for anyone writing a bootstrap by hand. ``proxy_from_node`` is the only parser.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ProxyType(StrEnum):
    SIDECAR = "sidecar"
    ROUTER = "router"  # a gateway (ingress, egress, east-west)


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    subzone: str = ""


@dataclass(frozen=True, slots=True)
class Proxy:
    id: str
    type: ProxyType
    namespace: str
    workload_name: str
    labels: Mapping[str, str]
    service_account: str
    cluster_id: str
    network: str
    locality: Locality
    ip_addresses: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    mesh_id: str = ""
    # Where this Envoy binds its listeners (the instance's own loopback address in the local runtime).
    listen_address: str = "0.0.0.0"
    # Ports the workload serves; the sidecar listens on them and forwards to the application.
    inbound_ports: tuple[InboundPort, ...] = ()
    # Where the local application listens (inbound traffic is forwarded here).
    app_address: str = "127.0.0.1"
    # Gateways: Service port -> port the Envoy really listens on (80 -> 8080 when run without root).
    gateway_ports: Mapping[int, int] = field(default_factory=dict)
    # "NONE": the application uses the sidecar as an explicit HTTP proxy; "REDIRECT": traffic is captured.
    interception_mode: str = "NONE"
    # Port of the explicit HTTP proxy listener (NONE mode) or of the virtual outbound listener (REDIRECT mode).
    outbound_port: int = 15001
    # Whether the proxy has an SDS source for its certificates (metadata SDS; the bootstrap has ``sds-grpc``).
    # Without one, auto mTLS is not offered: its TLS context would wait for a secret that never comes, holding
    # every mesh-internal cluster in warming for Envoy's initial fetch timeout (15 s).
    sds: bool = True

    @property
    def is_gateway(self) -> bool:
        return self.type is ProxyType.ROUTER

    def gateway_listen_port(self, service_port: int) -> int:
        """The port a gateway binds for a Gateway server's (Service) port."""
        return self.gateway_ports.get(service_port, service_port)


@dataclass(frozen=True, slots=True)
class InboundPort:
    """One port the workload serves: the sidecar listens on ``port``, forwards to ``app_port`` of the app."""

    port: int
    app_port: int
    protocol: str = ""  # "" = infer from the services that select this workload, else TCP
    name: str = ""


class ProxyMetadataError(ValueError):
    """The Node a proxy sent cannot be understood: the message names the bad key (or the node id)."""


_STRING_KEYS = ("NAMESPACE", "WORKLOAD_NAME", "SERVICE_ACCOUNT", "CLUSTER_ID", "NETWORK", "MESH_ID")


def _ports_from(key: str, raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [p.strip() for p in raw.split(",") if p.strip()]
    if isinstance(raw, list | tuple):
        return [str(p).strip() for p in raw]
    if isinstance(raw, int):
        return [str(raw)]
    raise ProxyMetadataError(f"metadata {key}: expected a comma-separated string or a list, got {type(raw).__name__}")


def _port(key: str, text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ProxyMetadataError(f"metadata {key}: {text!r} is not a port number") from None
    if not 0 < n < 65536:
        raise ProxyMetadataError(f"metadata {key}: port {n} out of range 1-65535")
    return n


def _parse_inbound_ports(raw: Any) -> tuple[InboundPort, ...]:
    """``INBOUND_PORTS``: entries ``PORT[/PROTOCOL][=APP_PORT]`` or ``NAME:PORT...``, comma-separated or a list."""
    out: list[InboundPort] = []
    for entry in _ports_from("INBOUND_PORTS", raw):
        name = ""
        text = entry
        if ":" in text:
            name, _, text = text.partition(":")
        text, _, app = text.partition("=")
        port_text, _, protocol = text.partition("/")
        port = _port("INBOUND_PORTS", port_text)
        app_port = _port("INBOUND_PORTS", app) if app else port
        out.append(InboundPort(port, app_port, protocol.upper(), name))
    return tuple(out)


def _parse_port_map(key: str, raw: Any) -> dict[int, int]:
    """``GATEWAY_PORTS``: ``80=8080,443=8443`` or a map ``{"80": 8080}``."""
    if isinstance(raw, Mapping):
        return {_port(key, str(k)): _port(key, str(v)) for k, v in raw.items()}
    out: dict[int, int] = {}
    for entry in _ports_from(key, raw):
        src, sep, dst = entry.partition("=")
        if not sep:
            src, sep, dst = entry.partition(":")
        if not sep:
            raise ProxyMetadataError(f"metadata {key}: entry {entry!r} is not SERVICE_PORT=LISTEN_PORT")
        out[_port(key, src)] = _port(key, dst)
    return out


def _ip(key: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ProxyMetadataError(f"metadata {key}: {text!r} is not an IP address") from None


def proxy_from_node(node_id: str, metadata: Mapping[str, Any], locality: Locality) -> Proxy:
    """Parse an Envoy Node (id, metadata as plain JSON, locality) into a Proxy.

    The node id is Istio's ``TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN`` (TYPE ``sidecar`` or ``router``).
    Metadata keys are documented in docs/proxy-metadata.md; metadata wins over what the id implies.
    """
    parts = node_id.split("~")
    if len(parts) != 4:
        raise ProxyMetadataError(f"node id {node_id!r}: expected TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN")
    type_text, id_ip, pod_ns, dns = parts
    try:
        ptype = ProxyType(type_text)
    except ValueError:
        raise ProxyMetadataError(f"node id {node_id!r}: type {type_text!r} is not sidecar or router") from None
    for key in _STRING_KEYS:
        if key in metadata and not isinstance(metadata[key], str):
            raise ProxyMetadataError(f"metadata {key}: expected a string, got {type(metadata[key]).__name__}")
    namespace = str(metadata.get("NAMESPACE") or "")
    if not namespace:
        _pod, _, namespace = pod_ns.partition(".")
        if not namespace:
            namespace = dns.partition(".")[0]
    if not namespace:
        raise ProxyMetadataError(f"metadata NAMESPACE: missing, and node id {node_id!r} names no namespace")
    labels_raw = metadata.get("LABELS") or {}
    if not isinstance(labels_raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels_raw.items()
    ):
        raise ProxyMetadataError("metadata LABELS: expected a map of strings to strings")
    ips_raw = metadata.get("INSTANCE_IPS")
    ips = ([id_ip] if id_ip else []) if ips_raw is None else _ports_from("INSTANCE_IPS", ips_raw)
    ip_addresses = tuple(_ip("INSTANCE_IPS", i) for i in ips)
    workload = str(metadata.get("WORKLOAD_NAME") or pod_ns.partition(".")[0])
    listen = metadata.get("LISTEN_ADDRESS")
    if listen is not None:
        if not isinstance(listen, str):
            raise ProxyMetadataError("metadata LISTEN_ADDRESS: expected a string")
        listen_address = _ip("LISTEN_ADDRESS", listen)
    else:
        listen_address = ip_addresses[0] if ip_addresses and ptype is ProxyType.SIDECAR else "0.0.0.0"
    app = metadata.get("APP_ADDRESS", "127.0.0.1")
    if not isinstance(app, str):
        raise ProxyMetadataError("metadata APP_ADDRESS: expected a string")
    app_address = _ip("APP_ADDRESS", app)
    mode = str(metadata.get("INTERCEPTION_MODE") or "NONE").upper()
    if mode not in ("NONE", "REDIRECT"):
        raise ProxyMetadataError(f"metadata INTERCEPTION_MODE: {mode!r} is not NONE or REDIRECT")
    outbound_port = _port("OUTBOUND_PORT", str(metadata.get("OUTBOUND_PORT", 15001)))
    sds_raw = metadata.get("SDS", True)
    if str(sds_raw).lower() not in ("true", "false"):  # a JSON bool or its string
        raise ProxyMetadataError(f"metadata SDS: {sds_raw!r} is not true or false")
    sds = str(sds_raw).lower() == "true"
    return Proxy(
        id=node_id,
        type=ptype,
        namespace=namespace,
        workload_name=workload,
        labels=dict(labels_raw),
        service_account=str(metadata.get("SERVICE_ACCOUNT") or "default"),
        cluster_id=str(metadata.get("CLUSTER_ID") or "Kubernetes"),
        network=str(metadata.get("NETWORK") or ""),
        locality=locality,
        ip_addresses=ip_addresses,
        metadata=dict(metadata),
        mesh_id=str(metadata.get("MESH_ID") or ""),
        listen_address=listen_address,
        inbound_ports=_parse_inbound_ports(metadata.get("INBOUND_PORTS") or ()),
        app_address=app_address,
        gateway_ports=_parse_port_map("GATEWAY_PORTS", metadata.get("GATEWAY_PORTS") or {}),
        interception_mode=mode,
        outbound_port=outbound_port,
        sds=sds,
    )
