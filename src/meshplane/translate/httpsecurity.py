"""The security HTTP filters of a proxy's HTTP connection managers, shared by sidecars and gateways.

Why one place: Istio authenticates and authorizes a request the same way wherever the policy selects the proxy, a
sidecar's inbound listener or a gateway's listeners, and the order matters: ``jwt_authn`` (RequestAuthentication)
first, so that the RBAC filters (AuthorizationPolicy: CUSTOM, DENY, ALLOW, AUDIT; see ``authz``) read the
verified payload it writes to dynamic metadata. Both listener builders take the chain from here.
"""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshplane.model.proxy import Proxy, ProxyType
from meshplane.translate.authz import authz_http_filters
from meshplane.translate.context import PushContext
from meshplane.translate.jwt import jwt_filter
from meshplane.translate.memo import Slot

# The security filters of a proxy (by type, namespace and labels).
_SECURITY_FILTERS: Slot[tuple[bool, str, tuple[tuple[str, str], ...]], list[hcm_pb2.HttpFilter]] = Slot(
    "security-http-filters")


def security_http_filters(proxy: Proxy, ctx: PushContext) -> list[hcm_pb2.HttpFilter]:
    """jwt_authn (RequestAuthentication), then ext_authz / RBAC (AuthorizationPolicy)."""
    def build() -> list[hcm_pb2.HttpFilter]:
        jwt = jwt_filter(proxy, ctx)
        return ([jwt] if jwt is not None else []) + authz_http_filters(proxy, ctx)

    key = (proxy.type is ProxyType.ROUTER, proxy.namespace, tuple(sorted(proxy.labels.items())))
    return ctx.memo.get_or_build(_SECURITY_FILTERS, key, build)
