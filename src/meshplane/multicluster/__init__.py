"""Member clusters: the controller that runs one registry source per MemberCluster and reports its health.

It sits beside ``apiserver`` and ``xds`` (it reads the store, drives registry sources) and reaches the xDS
server only through the small :class:`RegistryHooks` Protocol, wired in ``cli.serverproc``.
"""

from meshplane.multicluster.controller import (
    MEMBER_CLUSTERS,
    MemberClusterController,
    MemberState,
    RegistryHooks,
    render_status,
)

__all__ = ["MEMBER_CLUSTERS", "MemberClusterController", "MemberState", "RegistryHooks", "render_status"]
