"""Member clusters: the controller that runs one registry source per MemberCluster and reports its health.

It sits beside ``apiserver`` and ``xds`` (it reads the store, drives registry sources) and reaches the xDS
server only through the small :class:`RegistryHooks` Protocol and the Kubernetes client only through the
:class:`SourceFactory` it is given, both wired in ``cli.serverproc`` (``XdsServer`` and
``meshplane.kube.KubeSourceFactory``).
"""

from meshplane.model.resources import MEMBER_CLUSTERS
from meshplane.multicluster.controller import (
    MemberClusterController,
    MemberState,
    RegistryHooks,
    SourceFactory,
    render_status,
)

__all__ = ["MEMBER_CLUSTERS", "MemberClusterController", "MemberState", "RegistryHooks", "SourceFactory",
           "render_status"]
