"""ASMOPAPolicy: an ext_authz filter on the inbound HTTP chains of the workloads a policy selects.

Why translation only adds a filter: the policy is evaluated by OPA next to the workload (the agent's ext_authz
server, ``meshplane.agent.opa``), which reads the policies itself; Envoy just asks it about every request through
the bootstrap cluster the agent declares in node metadata ``OPA_EXTAUTHZ`` (``opa-extauthz``, a Unix socket).
A selected proxy that has no such server (no agent) gets an RBAC filter that denies everything instead: ASM's
``default allow = false`` must never turn into "allow" because the evaluator is missing. The check fails closed
(``failure_mode_allow`` false) and carries the caller's identity from the client certificate (Envoy fills
``source.principal``).
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshplane.model import spec as istio
from meshplane.model.proxy import Proxy
from meshplane.model.resources import (
    OPA_POLICIES,
    )
from meshplane.model.spec import ConfigObject
from meshplane.translate.common import duration, pack, selects_workload
from meshplane.translate.context import PushContext

METADATA_KEY = "OPA_EXTAUTHZ"
FILTER_NAME = "meshplane.opa.ext_authz"


def selecting_policies(proxy: Proxy, ctx: PushContext) -> list[str]:
    """Names of the ASMOPAPolicies of ``proxy``'s namespace whose ``workloadSelector`` selects it (none: all)."""
    objs: tuple[ConfigObject[istio.ASMOPAPolicy], ...] = ctx.config.of(OPA_POLICIES)
    return sorted(o.meta.name for o in objs if selects_workload(o.meta, o.spec.workload_selector, proxy))


def opa_http_filters(proxy: Proxy, ctx: PushContext) -> list[hcm_pb2.HttpFilter]:
    if not selecting_policies(proxy, ctx):
        return []
    cluster = proxy.metadata.get(METADATA_KEY)
    if not isinstance(cluster, str) or not cluster:
        deny_all = http_rbac_pb2.RBAC(rules=rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW))
        return [hcm_pb2.HttpFilter(name=FILTER_NAME, typed_config=pack(deny_all))]
    ea = ext_authz_pb2.ExtAuthz(transport_api_version=config_source_pb2.V3, failure_mode_allow=False)
    ea.grpc_service.envoy_grpc.cluster_name = cluster
    ea.grpc_service.timeout.CopyFrom(duration(1))
    return [hcm_pb2.HttpFilter(name=FILTER_NAME, typed_config=pack(ea))]
