"""Service registries: where services and their endpoints come from, and how sources combine.

Every source (ServiceEntry + WorkloadEntry objects of the config, a member Kubernetes cluster, auto-registered
workloads) implements :class:`ServiceRegistry`; :func:`aggregate` merges them into one immutable
:class:`~meshplane.model.service.RegistrySnapshot` (services by host across clusters, endpoints sharded by
(cluster, source)). :func:`diff_endpoints` tells the push pipeline which hosts need only an EDS push.
``KubeClusterSource`` (one Kubernetes member cluster) is imported lazily: it pulls in the Kubernetes client.
"""

from __future__ import annotations

from meshplane.model.service import Endpoint, RegistrySnapshot, Service, ShardKey
from meshplane.registry.aggregate import ServiceRegistry, aggregate, diff_endpoints
from meshplane.registry.serviceentry import ServiceEntrySource, registry_from_config


def __getattr__(name: str) -> object:
    if name in ("KubeClusterSource", "SourceStatus", "SourceSettings"):
        from meshplane.registry import kube

        return getattr(kube, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Endpoint",
    "KubeClusterSource",
    "RegistrySnapshot",
    "Service",
    "ServiceEntrySource",
    "ServiceRegistry",
    "ShardKey",
    "SourceSettings",
    "SourceStatus",
    "aggregate",
    "diff_endpoints",
    "registry_from_config",
]
