"""Service registries: where services and their endpoints come from, and how sources combine. Pure: no I/O.

Every source (ServiceEntry + WorkloadEntry objects of the config, a member Kubernetes cluster, auto-registered
workloads) implements :class:`ServiceRegistry`; :func:`aggregate` merges them into one immutable
:class:`~meshplane.model.service.RegistrySnapshot` (services by host across clusters, endpoints sharded by
(cluster, source)). :func:`diff_endpoints` tells which hosts need only an EDS push. Across pushes,
:class:`RegistryAggregator` keeps the sources and answers the push pipeline's one question: the new snapshot and
the hosts of an endpoint-only change (:class:`RegistryUpdate`).
A member cluster is a :class:`KubeRegistry`, fed with list results and watch events by the Kubernetes client
adapter (``meshplane.kube``); converting its objects is :mod:`meshplane.registry.kube_convert`.
"""

from __future__ import annotations

from meshplane.model.service import Endpoint, RegistrySnapshot, Service, ShardKey
from meshplane.registry.aggregate import ServiceRegistry, aggregate, diff_endpoints
from meshplane.registry.aggregator import RegistryAggregator, RegistryUpdate
from meshplane.registry.kube_source import KubeRegistry, SourceStatus
from meshplane.registry.serviceentry import ServiceEntrySource, registry_from_config

__all__ = [
    "Endpoint",
    "KubeRegistry",
    "RegistryAggregator",
    "RegistrySnapshot",
    "RegistryUpdate",
    "Service",
    "ServiceEntrySource",
    "ServiceRegistry",
    "ShardKey",
    "SourceStatus",
    "aggregate",
    "diff_endpoints",
    "registry_from_config",
]
