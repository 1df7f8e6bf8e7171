"""The message catalogue: Istio's analysis codes (``IST0xxx``) and meshplane's own (``MPL0xxx``) for ASM kinds.

Why Istio's codes, names, levels and templates verbatim (``pkg/config/analysis/msg/messages.yaml``): users search
for ``IST0101``, CI scripts grep for it, and Istio's documentation of each code then applies as written. A message
renders as ``istioctl analyze`` prints it::

    Error [IST0101] (VirtualService default/bookinfo) Referenced gateway not found: "bookinfo-gatewy"

Two codes Istio has retired are kept because meshplane can still check what they meant: IST0104
(GatewayPortNotOnWorkload: a Gateway port no selected workload instance declares; Istio replaced it with IST0162,
which looks at the Service in front of the workloads) and IST0113 (MTLSPolicyConflict: a DestinationRule that
turns mTLS off for a host whose workloads' PeerAuthentication requires it).

Templates use Go's verbs as Istio writes them; :func:`go_format` renders the few used here (``%s``, ``%v``,
``%d``, ``%q``, ``%t``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Level(Enum):
    """Istio's levels, worst first (``diag.Level``); ``value`` is (rank, Istio's name, the status enum's)."""

    ERROR = (3, "Error", "ERROR")
    WARNING = (2, "Warning", "WARNING")
    INFO = (1, "Info", "INFO")

    @property
    def rank(self) -> int:
        return self.value[0]

    @property
    def title(self) -> str:
        return self.value[1]

    @property
    def status_name(self) -> str:
        return self.value[2]

    @classmethod
    def parse(cls, text: str) -> Level:
        """``error``, ``Warning``, ``INFO`` (any case); ValueError naming the accepted ones otherwise."""
        for level in cls:
            if level.title.lower() == text.lower():
                return level
        raise ValueError(f"unknown level {text!r}: use Error, Warning or Info")


@dataclass(frozen=True, slots=True)
class MessageType:
    code: str
    name: str
    level: Level
    template: str


# --- Istio's catalogue (the codes meshplane checks) -----------------------------------------------------------
REFERENCED_RESOURCE_NOT_FOUND = MessageType("IST0101", "ReferencedResourceNotFound", Level.ERROR,
                                            "Referenced %s not found: %q")
GATEWAY_PORT_NOT_ON_WORKLOAD = MessageType(
    "IST0104", "GatewayPortNotOnWorkload", Level.WARNING,
    "The gateway refers to a port that is not exposed on the workload (pod selector %s; port %d)")
SCHEMA_VALIDATION_ERROR = MessageType("IST0106", "SchemaValidationError", Level.ERROR, "Schema validation error: %v")
UNKNOWN_ANNOTATION = MessageType("IST0108", "UnknownAnnotation", Level.WARNING, "Unknown annotation: %s")
CONFLICTING_MESH_GATEWAY_VS_HOSTS = MessageType(
    "IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Level.ERROR,
    "The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined "
    "behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.")
MTLS_POLICY_CONFLICT = MessageType(
    "IST0113", "MTLSPolicyConflict", Level.ERROR,
    "A DestinationRule and Policy are in conflict with regards to mTLS for host %s. The DestinationRule %q "
    "specifies that mTLS must be %t but the Policy object %q specifies %s.")
NO_SERVER_CERT_VERIFICATION_DR = MessageType(
    "IST0128", "NoServerCertificateVerificationDestinationLevel", Level.WARNING,
    "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server "
    "identity for host: %s")
NO_SERVER_CERT_VERIFICATION_PORT = MessageType(
    "IST0129", "NoServerCertificateVerificationPortLevel", Level.WARNING,
    "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server "
    "identity for host: %s at port %s")
VS_UNREACHABLE_RULE = MessageType("IST0130", "VirtualServiceUnreachableRule", Level.WARNING,
                                  "VirtualService rule %v not used (%s).")
VS_INEFFECTIVE_MATCH = MessageType(
    "IST0131", "VirtualServiceIneffectiveMatch", Level.INFO,
    "VirtualService rule %v match %v is not used (duplicate/overlapping match in rule %v).")
VS_HOST_NOT_FOUND_IN_GATEWAY = MessageType(
    "IST0132", "VirtualServiceHostNotFoundInGateway", Level.WARNING,
    "one or more host %v defined in VirtualService %s not found in Gateway %s.")
CONFLICTING_GATEWAYS = MessageType("IST0145", "ConflictingGateways", Level.ERROR,
                                   "Conflict with gateways %s (workload selector %s, port %s, hosts %v).")
GATEWAY_PORT_NOT_DEFINED_ON_SERVICE = MessageType(
    "IST0162", "GatewayPortNotDefinedOnService", Level.WARNING,
    "The gateway is listening on a target port (port %d) that is not defined in the Service associated with its "
    "workload instances (Pod selector %s). If you need to access the gateway port through the gateway Service, "
    "it will not be available.")

# --- meshplane's own, for the ASM kinds ---------------------------------------------------------------------------
LANE_GROUP_GATEWAY_NOT_FOUND = MessageType(
    "MPL0001", "LaneGroupGatewayNotFound", Level.ERROR,
    "The lane group's ingress gateway %s is not a Gateway: no ingress VirtualService is generated for its lanes")
LANE_FALLBACK_NOT_A_LANE = MessageType(
    "MPL0002", "LaneFallbackTargetNotFound", Level.ERROR,
    "fallbackTarget %q is not a lane of this group (lanes: %v): requests for a lane without the service have no "
    "base lane to fall back to")
TRAFFIC_LABEL_SELECTS_NOTHING = MessageType(
    "MPL0003", "TrafficLabelSelectsNothing", Level.WARNING,
    "The TrafficLabel's workloadSelector %s selects no workload instance in namespace %s: it labels no traffic")
LANE_GROUP_SERVICE_NOT_FOUND = MessageType(
    "MPL0004", "LaneGroupServiceNotFound", Level.ERROR,
    "The lane group's service %s is not in the registry: its routes and subsets cannot reach it")
TEMPLATE_BINDING_UNRESOLVED = MessageType(
    "MPL0005", "EnvoyFilterTemplateBindingUnresolved", Level.ERROR,
    "The binding applies nothing: %s")

CATALOGUE: tuple[MessageType, ...] = (
    REFERENCED_RESOURCE_NOT_FOUND, GATEWAY_PORT_NOT_ON_WORKLOAD, SCHEMA_VALIDATION_ERROR, UNKNOWN_ANNOTATION,
    CONFLICTING_MESH_GATEWAY_VS_HOSTS, MTLS_POLICY_CONFLICT, NO_SERVER_CERT_VERIFICATION_DR,
    NO_SERVER_CERT_VERIFICATION_PORT, VS_UNREACHABLE_RULE, VS_INEFFECTIVE_MATCH, VS_HOST_NOT_FOUND_IN_GATEWAY,
    CONFLICTING_GATEWAYS, GATEWAY_PORT_NOT_DEFINED_ON_SERVICE, LANE_GROUP_GATEWAY_NOT_FOUND,
    LANE_FALLBACK_NOT_A_LANE, TRAFFIC_LABEL_SELECTS_NOTHING, LANE_GROUP_SERVICE_NOT_FOUND,
    TEMPLATE_BINDING_UNRESOLVED,
)

_VERB = re.compile(r"%([svdqt%])")


def _go_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(_go_value(x) for x in v) + "]"
    return str(v)


def go_format(template: str, args: Sequence[Any]) -> str:
    """Go's ``fmt.Sprintf`` for the verbs the catalogue uses (``%q`` quotes as Go does, close enough: JSON)."""
    it = iter(args)

    def one(m: re.Match[str]) -> str:
        verb = m.group(1)
        if verb == "%":
            return "%"
        v = next(it, "")
        if verb == "q":
            return json.dumps(str(v))
        return _go_value(v)

    return _VERB.sub(one, template)


@dataclass(frozen=True, slots=True)
class Resource:
    """What a message is about: kind and ``namespace/name`` (Istio's ``FriendlyName``), and where it came from
    when it was read from a file (``-f``)."""

    kind: str
    namespace: str
    name: str
    origin: str = ""

    @property
    def friendly(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    resource: Resource
    args: tuple[Any, ...] = ()

    @property
    def text(self) -> str:
        return go_format(self.type.template, self.args)

    def line(self) -> str:
        """``Error [IST0101] (VirtualService default/bookinfo) Referenced gateway not found: "x"``."""
        where = self.resource.friendly + (f" {self.resource.origin}" if self.resource.origin else "")
        return f"{self.type.level.title} [{self.type.code}] ({where}) {self.text}"

    def to_json(self) -> dict[str, Any]:
        """``istioctl analyze -o json``'s shape."""
        out: dict[str, Any] = {"code": self.type.code, "name": self.type.name, "level": self.type.level.title,
                               "origin": self.resource.friendly, "message": self.text}
        if self.resource.origin:
            out["reference"] = self.resource.origin
        return out

    def to_status(self) -> dict[str, Any]:
        """One entry of ``status.validationMessages`` (Istio's ``AnalysisMessageBase`` plus the text)."""
        return {"type": {"code": self.type.code, "name": self.type.name}, "level": self.type.level.status_name,
                "description": self.text}

    @property
    def sort_key(self) -> tuple[int, str, str, str, str, str]:
        r = self.resource
        return (-self.type.level.rank, self.type.code, r.kind, r.namespace, r.name, self.text)


__all__ = [
    "CATALOGUE",
    "Level",
    "Message",
    "MessageType",
    "Resource",
    "go_format",
]
