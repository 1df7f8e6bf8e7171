"""What one agent needs to know about its workload instance, as one JSON document (``meshplane agent --config``).

Why a file and not dozens of flags: the local runtime writes it for each instance it starts, a person running a
VM writes it once, and the same document is kept next to the instance's logs, so what an agent was told is always
on disk. The fields map one to one onto Envoy node metadata (docs/proxy-metadata.md) and onto the WorkloadEntry
the agent registers (Istio's WorkloadGroup auto-registration).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class AgentConfigError(ValueError):
    """The agent configuration is unusable; the message names the field."""


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A port the workload serves: the sidecar listens on ``port`` at the instance address, the application on
    ``app_port`` at ``app_address``."""

    port: int
    app_port: int
    name: str = "http"
    protocol: str = "HTTP"


@dataclass(frozen=True, slots=True)
class Readiness:
    """Readiness probe of the application (Kubernetes' probe fields, in seconds)."""

    http_path: str = ""  # "" and tcp False: no probe (ready as soon as Envoy is)
    tcp: bool = False
    period_s: float = 2.0
    timeout_s: float = 1.0
    failure_threshold: int = 2
    success_threshold: int = 1


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str  # instance name: WorkloadEntry name and the POD part of the node id
    namespace: str
    workload: str
    address: str  # the instance's own IP: mesh endpoint, listen address of the sidecar, WorkloadEntry address
    xds: str  # HOST:PORT of the ADS server
    api: str = ""  # URL of the Kubernetes-compatible API ("" = do not register)
    api_token: str = ""
    cluster: str = "Kubernetes"
    network: str = ""
    region: str = ""
    zone: str = ""
    subzone: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    ports: tuple[PortSpec, ...] = ()
    app_address: str = ""  # "" = same as address
    gateway: bool = False  # proxy type router (an ingress/egress gateway) instead of sidecar
    gateway_ports: Mapping[int, int] = field(default_factory=dict)  # Gateway (Service) port -> listen port
    admin_port: int = 15000
    stats_port: int = 15090  # Prometheus scrapes /stats/prometheus here (Istio's port); 0 = no metrics listener
    # The agent's status port (Istio's 15020): /stats/prometheus (the agent's metrics with Envoy's merged in) and
    # /healthz/ready, on ``address``; 0 = none. A port already taken is logged and the agent runs without it.
    status_port: int = 15020
    # Istio's health port: Envoy serves /healthz/ready here, answered by the status port's readiness (what load
    # balancers and readiness probes ask); 0 = none, as when there is no status port.
    health_port: int = 15021
    # Istio's metrics merging: the application's own Prometheus endpoint (http://HOST:PORT/PATH), appended to the
    # status port's /stats/prometheus; "" = none.
    app_metrics_url: str = ""
    outbound_port: int = 15001
    readiness: Readiness = field(default_factory=Readiness)
    register: bool = True
    delta: bool = False
    envoy_path: str = ""  # "" = find ``envoy`` next to the Python interpreter or on PATH
    envoy_log_level: str = "warning"
    concurrency: int = 1
    drain_s: float = 1.0  # how long Envoy drains connections when the agent stops
    work_dir: str = ""  # bootstrap, Envoy log, status file; "" = a temporary directory
    status_file: str = ""  # where the agent reports its state as JSON ("" = work_dir/status.json)
    envoy_record: str = ""  # where the agent records Envoy's PID (see meshplane.agent.procs); "" = nowhere
    mesh_id: str = ""
    # Zero trust: with ``ca`` (HOST:PORT of the signing service) the agent generates the workload's key in memory,
    # gets its certificate with ``ca_token`` (a bootstrap token bound to namespace + service account), serves both
    # to Envoy over SDS on ``sds_socket`` ("" = work_dir/sds.sock) and labels its WorkloadEntry for auto mTLS.
    ca: str = ""
    ca_token: str = ""
    trust_domain: str = "cluster.local"
    cert_ttl_s: int = 0  # requested certificate lifetime; 0 = the CA's default
    sds_socket: str = ""
    bundle_poll_s: float = 2.0  # how often the trust bundle is read from the API (root rotation)
    # OPA: the ext_authz server evaluating the ASMOPAPolicies that select this workload ("" = work_dir/extauthz.sock)
    opa: bool = True
    extauthz_socket: str = ""
    policy_poll_s: float = 1.0
    root_namespace: str = "istio-system"  # where ASMOPAPolicies publish Rego (policyRegoID) for every namespace
    # Interception: "NONE" (the application uses the sidecar as explicit proxy) or "REDIRECT" (iptables capture
    # in the instance's network namespace: virtualOutbound 15001, virtualInbound 15006).
    interception: str = "NONE"
    # DNS proxy (Istio's DNS capture): answers mesh names from the name table pushed over xDS (NDS) on
    # ``dns_address``, forwards the rest to ``dns_upstream`` (HOST:PORT; "" = the first nameserver of
    # /etc/resolv.conf as the agent sees it) with a cache.
    dns: bool = False
    dns_address: str = "127.0.0.1:15053"  # comma-separated HOST:PORTs
    dns_proxy_address: str = ""  # Envoy's own resolver (upstream answers only), e.g. 127.0.0.1:53; "" = none
    dns_upstream: str = ""

    @property
    def node_id(self) -> str:
        kind = "router" if self.gateway else "sidecar"
        return f"{kind}~{self.address}~{self.name}.{self.namespace}~{self.namespace}.svc.cluster.local"

    @property
    def locality(self) -> str:
        """Istio's ``region/zone/subzone``, without trailing empty parts."""
        return "/".join((self.region, self.zone, self.subzone)).rstrip("/") if self.region else ""

    def metadata(self) -> dict[str, Any]:
        """Envoy node metadata (the keys of docs/proxy-metadata.md)."""
        md: dict[str, Any] = {
            "NAMESPACE": self.namespace,
            "WORKLOAD_NAME": self.workload,
            "SERVICE_ACCOUNT": self.service_account,
            "LABELS": dict(self.labels),
            "CLUSTER_ID": self.cluster,
            "NETWORK": self.network,
            "INSTANCE_IPS": self.address,
            "LISTEN_ADDRESS": self.address,
            "APP_ADDRESS": self.app_address or self.address,
            "INTERCEPTION_MODE": self.interception,
            "OUTBOUND_PORT": str(self.outbound_port),
        }
        if self.mesh_id:
            md["MESH_ID"] = self.mesh_id
        if self.dns:
            md["DNS_CAPTURE"] = "true"
        if self.ports and not self.gateway:
            md["INBOUND_PORTS"] = ",".join(
                f"{p.name}:{p.port}/{p.protocol}={p.app_port}" if p.name else f"{p.port}/{p.protocol}={p.app_port}"
                for p in self.ports)
        if self.gateway_ports:
            md["GATEWAY_PORTS"] = ",".join(f"{k}={v}" for k, v in sorted(self.gateway_ports.items()))
        return md

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["labels"] = dict(self.labels)
        d["ports"] = [{"port": p.port, "app_port": p.app_port, "name": p.name, "protocol": p.protocol}
                      for p in self.ports]
        d["gateway_ports"] = {str(k): v for k, v in self.gateway_ports.items()}
        r = self.readiness
        d["readiness"] = {f: getattr(r, f) for f in r.__dataclass_fields__}
        return d

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AgentConfig:
        if not isinstance(raw, Mapping):
            raise AgentConfigError("agent config: expected a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise AgentConfigError(f"agent config: unknown field {unknown[0]!r}")
        for req in ("name", "namespace", "workload", "address", "xds"):
            if not isinstance(raw.get(req), str) or not raw[req]:
                raise AgentConfigError(f"agent config: field {req!r} is required (a non-empty string)")
        if raw.get("interception", "NONE") not in ("NONE", "REDIRECT"):
            raise AgentConfigError(f"agent config: field 'interception': {raw.get('interception')!r} is not NONE "
                                   "or REDIRECT")
        kw: dict[str, Any] = dict(raw)
        try:
            kw["ports"] = tuple(PortSpec(int(p["port"]), int(p.get("app_port") or p["port"]),
                                         str(p.get("name", "http")), str(p.get("protocol", "HTTP")).upper())
                                for p in raw.get("ports") or [])
            kw["gateway_ports"] = {int(k): int(v) for k, v in (raw.get("gateway_ports") or {}).items()}
            kw["labels"] = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
            rd = raw.get("readiness") or {}
            kw["readiness"] = Readiness(**{k: v for k, v in rd.items() if k in Readiness.__dataclass_fields__})
        except (KeyError, TypeError, ValueError) as e:
            raise AgentConfigError(f"agent config: bad ports, gateway_ports, labels or readiness: {e}") from e
        return cls(**kw)

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise AgentConfigError(f"{path}: {e}") from e
        return cls.from_json(raw)
