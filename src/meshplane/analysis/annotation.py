"""IST0108: an annotation in Istio's namespace (a key whose prefix ends in ``istio.io``) that Istio does not define.

Why: a misspelt annotation (``sidecar.istio.io/injet``) is accepted by every API server and silently does nothing.
Istio checks the annotations of Kubernetes objects against its annotation registry (``istio.io/api``'s
``annotation`` package); meshplane's config objects carry the same kind of keys (``istio.io/dry-run`` on an
AuthorizationPolicy), so every object analyzed is checked. The list below is Istio's resource annotations.
"""

from __future__ import annotations

from meshplane.analysis import messages as m
from meshplane.analysis.context import Context

KNOWN = frozenset({
    "ambient.istio.io/bypass-inbound-capture", "ambient.istio.io/dns-capture", "ambient.istio.io/redirection",
    "ambient.istio.io/waypoint-inbound-binding",
    "gateway.istio.io/controller-version", "gateway.istio.io/service-account", "gateway.istio.io/name-override",
    "inject.istio.io/templates",
    "install.operator.istio.io/chart-owner", "install.operator.istio.io/owner-generation",
    "install.operator.istio.io/version",
    "istio.io/dry-run", "istio.io/rev", "istio.io/use-waypoint", "istio.io/use-waypoint-namespace",
    "istio.io/connect-strategy", "istio.io/managed-gateway-controller",
    "networking.istio.io/exportTo", "networking.istio.io/serviceType", "networking.istio.io/traffic-distribution",
    "networking.istio.io/address-type", "networking.istio.io/service-type",
    "prometheus.istio.io/merge-metrics",
    "proxy.istio.io/config", "proxy.istio.io/overrides",
    "readiness.status.sidecar.istio.io/applicationPorts", "readiness.status.sidecar.istio.io/failureThreshold",
    "readiness.status.sidecar.istio.io/initialDelaySeconds", "readiness.status.sidecar.istio.io/periodSeconds",
    "security.istio.io/tlsMode",
    "sidecar.istio.io/agentLogLevel", "sidecar.istio.io/bootstrapOverride", "sidecar.istio.io/componentLogLevel",
    "sidecar.istio.io/discoveryAddress", "sidecar.istio.io/enableCoreDump", "sidecar.istio.io/extraStatTags",
    "sidecar.istio.io/inject", "sidecar.istio.io/interceptionMode", "sidecar.istio.io/logLevel",
    "sidecar.istio.io/nativeSidecar", "sidecar.istio.io/proxyCPU", "sidecar.istio.io/proxyCPULimit",
    "sidecar.istio.io/proxyImage", "sidecar.istio.io/proxyImageType", "sidecar.istio.io/proxyMemory",
    "sidecar.istio.io/proxyMemoryLimit", "sidecar.istio.io/rewriteAppHTTPProbers", "sidecar.istio.io/status",
    "sidecar.istio.io/statsHistogramBuckets", "sidecar.istio.io/statsInclusionPrefixes",
    "sidecar.istio.io/statsInclusionRegexps", "sidecar.istio.io/statsInclusionSuffixes",
    "sidecar.istio.io/statsFlushInterval", "sidecar.istio.io/userVolume", "sidecar.istio.io/userVolumeMount",
    "status.sidecar.istio.io/port",
    "topology.istio.io/controlPlaneClusters",
    "traffic.istio.io/nodeSelector",
    "traffic.sidecar.istio.io/excludeInboundPorts", "traffic.sidecar.istio.io/excludeInterfaces",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges", "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/includeInboundPorts", "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeOutboundPorts", "traffic.sidecar.istio.io/kubevirtInterfaces",
})


def istio_annotation(key: str) -> bool:
    """In Istio's namespace (as ``istioAnnotation`` decides: the prefix before ``/`` ends in ``istio.io``)."""
    if key == "kubernetes.io/ingress.class":
        return True
    prefix, sep, _ = key.partition("/")
    return bool(sep) and prefix.endswith("istio.io")


def analyze(ctx: Context) -> None:
    for objs in ctx.config.objects.values():
        for obj in objs:
            for key in sorted(obj.meta.annotations):
                if istio_annotation(key) and key not in KNOWN and key != "kubernetes.io/ingress.class":
                    ctx.report(obj, m.UNKNOWN_ANNOTATION, key)


__all__ = ["KNOWN", "analyze", "istio_annotation"]
