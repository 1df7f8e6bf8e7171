"""Pure translation from Istio config and the service registry to Envoy protos (no I/O, no gRPC).

The xDS server calls :func:`build_push_context` once per config version (or :meth:`PushContext.with_registry`
for endpoint-only changes), then :func:`generate` per proxy and type, and :func:`proxy_affected` to skip proxies
a change does not concern.
"""

from __future__ import annotations

from meshplane.translate.context import PushContext, build_push_context
from meshplane.translate.generate import Resource, applied_envoy_filters, generate, proxy_affected
from meshplane.translate.mesh import MeshSettings

__all__ = ["MeshSettings", "PushContext", "Resource", "applied_envoy_filters", "build_push_context", "generate",
           "proxy_affected"]
