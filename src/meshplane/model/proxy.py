"""What the control plane knows about one connected Envoy: its identity, workload and place in the mesh.

Envoy tells us this in its Node (id, locality, metadata) on the first xDS request; ``docs/proxy-metadata.md``
documents the keys for anyone writing a bootstrap by hand. ``proxy_from_node`` is the only parser.
"""

from __future__ import annotations

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
