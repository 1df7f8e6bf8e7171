"""The Kubernetes client adapter: list+watch of member clusters' API servers (``kubernetes_asyncio``, asyncio).

Why a package of its own: the registry is pure (conversion, a cluster's state and merge logic, unit-tested without
a network); talking to an API server (kubeconfig, requests, timeouts, backoff, resuming watches) is I/O and lives
here, the only package that imports ``kubernetes_asyncio`` (enforced by ``lint-imports``).
:class:`KubeClusterSource` feeds one member cluster into a :class:`~meshplane.registry.kube_source.KubeRegistry`;
``meshplane.multicluster`` runs one per MemberCluster, built by the :class:`KubeSourceFactory` that
``cli.serverproc`` hands it.
"""

from meshplane.kube.kubeconfig import KubeSourceError, parse_kubeconfig
from meshplane.kube.source import KubeClusterSource, KubeSourceFactory, SourceSettings

__all__ = ["KubeClusterSource", "KubeSourceError", "KubeSourceFactory", "SourceSettings", "parse_kubeconfig"]
