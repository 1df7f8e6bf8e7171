"""Who a proxy is, as its Envoy tells peers and writes into Istio's standard metric labels.

Why an environment variable: the outbound listeners are shared by every proxy of one scope (their bytes are
built once per push; see ``translate.generate``), yet the identity a sidecar sends its peers is its own. The agent
starts Envoy with it in ``MESHPLANE_PEER`` (one value, ``model.statname.peer_value``) and the shared
configuration reads it with Envoy's ``%ENVIRONMENT(...)%`` formatter into the one ``x-meshplane-peer`` header
that the sidecars add and strip (``translate.telemetry``). The proxy's own metric labels on those shared
listeners are filled in by its agent at scrape time (``agent.statsdecode``), not per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshplane.model.statname import PEER_FIELDS, UNKNOWN, peer_value

PEER_ENV = "MESHPLANE_PEER"  # the proxy's identity as one peer value
PEER_HEADER = "x-meshplane-peer"  # the same, sent to the peer sidecar (and removed by it)


OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"


# Labels naming an endpoint's workload (as its proxy names itself in WORKLOAD_NAME): Istio's label, then the one
# meshplane's agent puts on the WorkloadEntry it registers (whose own name is the instance's).
AGENT_WORKLOAD_LABEL = "meshplane.io/workload"
WORKLOAD_NAME_LABELS = ("service.istio.io/workload-name", AGENT_WORKLOAD_LABEL)


def endpoint_workload(labels: Mapping[str, str], name: str) -> str:
    """The workload an endpoint belongs to: a workload label, else ``name`` (its registry object's)."""
    return next((labels[k] for k in WORKLOAD_NAME_LABELS if labels.get(k)), name)


def canonical_app(labels: Mapping[str, str], workload: str) -> str:
    """Istio's canonical service name: its own label, then Kubernetes' recommended one, then ``app``."""
    for key in ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app"):
        if labels.get(key):
            return labels[key]
    return workload or UNKNOWN


def canonical_version(labels: Mapping[str, str]) -> str:
    for key in ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version"):
        if labels.get(key):
            return labels[key]
    return UNKNOWN


def identity_of(metadata: Mapping[str, Any]) -> dict[str, str]:
    """``PEER_FIELDS``' values for a proxy whose node metadata is ``metadata`` (the keys of
    docs/proxy-metadata.md: NAMESPACE, WORKLOAD_NAME, LABELS, CLUSTER_ID)."""
    raw_labels = metadata.get("LABELS")
    labels = {str(k): str(v) for k, v in raw_labels.items()} if isinstance(raw_labels, Mapping) else {}
    workload = str(metadata.get("WORKLOAD_NAME") or "") or UNKNOWN
    values = {
        "workload": workload,
        "namespace": str(metadata.get("NAMESPACE") or "") or UNKNOWN,
        "app": canonical_app(labels, workload),
        "version": canonical_version(labels),
        "cluster": str(metadata.get("CLUSTER_ID") or "") or UNKNOWN,
    }
    return values


def peer_environment(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The environment of an Envoy whose node metadata is ``metadata``: its identity for its peers and for its
    traces."""
    values = identity_of(metadata)
    env = {PEER_ENV: peer_value(values)}
    # The service of this proxy's spans: Envoy's OpenTelemetry tracer reads it with its environment resource
    # detector (``translate.tracing``). Values are the workload's names (no ``,`` or ``=`` in them).
    env[OTEL_RESOURCE_ATTRIBUTES] = (f"service.name={values['workload']},service.namespace={values['namespace']},"
                                     f"k8s.cluster.name={values['cluster']}")
    return env


__all__ = ["AGENT_WORKLOAD_LABEL", "OTEL_RESOURCE_ATTRIBUTES", "PEER_ENV", "PEER_FIELDS", "PEER_HEADER", "UNKNOWN",
           "WORKLOAD_NAME_LABELS", "canonical_app", "canonical_version", "endpoint_workload", "identity_of",
           "peer_environment"]
