"""Who a proxy is, as its Envoy tells peers and writes into Istio's standard metric labels.

Why environment variables: the listeners a proxy's metrics are configured on are shared by every proxy of one
scope (their bytes are built once per push; see ``translate.generate``), yet labels like ``source_workload`` are
the proxy's own. The agent starts Envoy with the proxy's identity in ``MESHPLANE_PEER_*`` variables and the shared
configuration reads them with Envoy's ``%ENVIRONMENT(...)%`` formatter; peers learn each other's identity from
``x-meshplane-peer-*`` headers that the sidecars add and strip (``translate.telemetry``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Istio's label suffixes, in the order of ``source_*`` / ``destination_*``.
PEER_FIELDS = ("workload", "namespace", "app", "version", "cluster")
UNKNOWN = "unknown"  # Istio's value for a label it cannot know


OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"


def env_name(field: str) -> str:
    return f"MESHPLANE_PEER_{field.upper()}"


def header_name(field: str) -> str:
    return f"x-meshplane-peer-{field}"


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


def peer_environment(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The ``MESHPLANE_PEER_*`` variables for an Envoy whose node metadata is ``metadata`` (the keys of
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
    env = {env_name(f): values[f] for f in PEER_FIELDS}
    # The service of this proxy's spans: Envoy's OpenTelemetry tracer reads it with its environment resource
    # detector (``translate.tracing``). Values are the workload's names (no ``,`` or ``=`` in them).
    env[OTEL_RESOURCE_ATTRIBUTES] = (f"service.name={values['workload']},service.namespace={values['namespace']},"
                                     f"k8s.cluster.name={values['cluster']}")
    return env


__all__ = ["OTEL_RESOURCE_ATTRIBUTES", "PEER_FIELDS", "UNKNOWN", "canonical_app", "canonical_version", "env_name",
           "header_name", "peer_environment"]
