"""One thin generator per xDS type over the pure builders, with the memo that lets proxies share results.

``generate`` is what the ADS server calls. It returns packed resources with a content-hash version; results are
memoised inside the (immutable) PushContext under a key made of what the view really depends on, so proxies
share one build, one serialization and one resource tuple (the ADS layer caches encoded responses by the
identity of that tuple, so returning the same tuple again is what makes the bytes shared):

* the large part — outbound clusters, outbound per-port listeners, route configurations, ClusterLoadAssignments
  — is keyed by the proxy's scope (type, namespace, Sidecar, labels only when config is label-sensitive), its
  interception mode and, for EDS, its locality, network and cluster;
* the small part bound to the instance — the explicit-proxy listener on its own address, inbound listeners and
  inbound clusters — is built per instance (and shared by instances that agree on those fields).

An instance without inbound ports (a client-only proxy, a gateway's cluster list) therefore costs one tuple
lookup per type. ``proxy_affected`` decides whether a push concerns a proxy at all (Sidecar egress scoping,
gateways).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, NamedTuple

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshplane.model import spec as istio
from meshplane.model import xdstypes
from meshplane.model.config import ConfigKey
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.push import PushRequest
from meshplane.model.resources import (
    DESTINATION_RULES,
    GATEWAYS,
    SERVICE_ENTRIES,
    SIDECARS,
    VIRTUAL_SERVICES,
    WASM_PLUGINS,
    WORKLOAD_ENTRIES,
)
from meshplane.model.spec import ConfigObject
from meshplane.translate.clusters import build_clusters, eds_cluster_names, uses_dynamic_forward_proxy
from meshplane.translate.context import MESH_GATEWAY, ProxyScope, PushContext
from meshplane.translate.endpoints import build_load_assignment
from meshplane.translate.envoyfilter import (
    CLUSTER_LEVELS,
    LISTENER_LEVELS,
    ROUTE_LEVELS,
    Patches,
    patch_clusters,
    patch_listeners,
    patch_route_configs,
    patches_for,
)
from meshplane.translate.hosts import host_matches, resolve_host
from meshplane.translate.listeners import (
    build_listeners,
    head_listener,
    inbound_listeners,
    inbound_service,
    outbound_port_listeners,
)
from meshplane.translate.memo import Slot
from meshplane.translate.nametable import build_name_table
from meshplane.translate.routes import build_route_configs, identity_reach
from meshplane.translate.telemetryapi import telemetry_policy
from meshplane.translate.wasmplugin import insert_plugins, plugins_for


class Resource(NamedTuple):
    name: str
    version: str  # a hash of the serialized resource
    resource: any_pb2.Any


Resources = tuple[Resource, ...]


def _assignment_host(key: tuple[str, tuple[object, ...]]) -> str:
    name = key[0]
    return name[name.rfind("|") + 1:]


# The memo's tables (translate.memo). Equal serialized resources are one Resource (bytes shared by every stream).
_PACKED: Slot[tuple[str, str, str], Resource] = Slot("packed")
# A view: the resources of one type for everything a proxy's output depends on (the key says what).
_VIEWS: Slot[tuple[object, ...], Resources] = Slot("views")
_VIEW_NAMES: Slot[int, tuple[Resources, frozenset[str]]] = Slot("view-names")
# One ClusterLoadAssignment (False: the cluster has none) for (cluster name, endpoint view): it depends on its
# host's endpoints only, so an endpoint push that names the changed hosts keeps every other host's.
_ASSIGNMENTS: Slot[tuple[str, tuple[object, ...]], Resource | bool] = Slot("assignments", host_of=_assignment_host)
_EDS_VIEWS: Slot[tuple[object, ...], Resources] = Slot("eds-views")
_EDS_FEW: Slot[tuple[tuple[object, ...], frozenset[str]], Resources] = Slot("eds-few")
# A view with a proxy's EnvoyFilter patches applied: (type, id of the view, the patches' keys, what else the
# patching reads) -> (the view, the patched view); the view is kept so that its id is never reused.
_PATCHED: Slot[tuple[object, ...], tuple[Resources, Resources]] = Slot("envoyfilter-patched")


def _pack(ctx: PushContext, type_url: str, name: str, msg: Message) -> Resource:
    data = msg.SerializeToString(deterministic=True)
    digest = hashlib.blake2b(data, digest_size=10).hexdigest()
    key = (type_url, name, digest)
    hit = ctx.memo.get(_PACKED, key)
    if hit is not None:
        return hit
    return ctx.memo.put(_PACKED, key, Resource(name, digest, any_pb2.Any(type_url=type_url, value=data)))


def _memo(ctx: PushContext, key: tuple[object, ...], build: Callable[[], Resources]) -> Resources:
    return ctx.memo.get_or_build(_VIEWS, key, build)


def _pack_all(ctx: PushContext, type_url: str, msgs: Iterable[Any]) -> Resources:
    return tuple(_pack(ctx, type_url, m.name, m) for m in msgs)


def _names_of(ctx: PushContext, view: Resources) -> frozenset[str]:
    hit = ctx.memo.get(_VIEW_NAMES, id(view))
    if hit is None or hit[0] is not view:
        hit = ctx.memo.put(_VIEW_NAMES, id(view), (view, frozenset(r.name for r in view)))
    return hit[1]


def _select(ctx: PushContext, view: Resources, names: Collection[str] | None) -> Sequence[Resource]:
    """``view`` itself when every name of it is asked for (so the encoded bytes stay shared), else the subset."""
    if names is None:
        return view
    wanted = names if isinstance(names, (set, frozenset)) else frozenset(names)
    if wanted == _names_of(ctx, view):
        return view
    return [r for r in view if r.name in wanted]


def _labels_key(proxy: Proxy) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(proxy.labels.items()))


def _unbound(proxy: Proxy) -> Proxy:
    """The proxy without what binds it to one instance: what every instance of its scope shares."""
    return dataclasses.replace(proxy, inbound_ports=(), listen_address="0.0.0.0", app_address="127.0.0.1",
                               ip_addresses=())


# --- CDS -------------------------------------------------------------------------------------------------------


def _clusters(proxy: Proxy, ctx: PushContext, scope: ProxyScope) -> Resources:
    t = xdstypes.CLUSTER
    shared_key = (t, "shared", scope.key, proxy.interception_mode, uses_dynamic_forward_proxy(proxy), proxy.sds)
    shared = _memo(ctx, shared_key, lambda: _pack_all(ctx, t, build_clusters(_unbound(proxy), ctx)))
    if proxy.type is not ProxyType.SIDECAR or not proxy.inbound_ports:
        return shared
    local_key = (t, "local", shared_key, proxy.inbound_ports, proxy.app_address, proxy.namespace,
                 _labels_key(proxy), proxy.ip_addresses)

    def build() -> Resources:
        have = _names_of(ctx, shared)
        # Everything the builders add for the inbound side (inbound clusters and what their filters call).
        local = [c for c in build_clusters(proxy, ctx) if c.name not in have]
        return shared + _pack_all(ctx, t, local)

    return _memo(ctx, local_key, build)


# --- LDS -------------------------------------------------------------------------------------------------------


def _listeners(proxy: Proxy, ctx: PushContext, scope: ProxyScope) -> Resources:
    t = xdstypes.LISTENER
    if proxy.type is ProxyType.ROUTER:
        key = (t, "gateway", scope.key, proxy.listen_address, tuple(sorted(proxy.gateway_ports.items())),
               telemetry_policy(proxy, ctx))
        return _memo(ctx, key, lambda: _pack_all(ctx, t, build_listeners(proxy, ctx)))
    policy = telemetry_policy(proxy, ctx)  # equal policies share listeners (it is hashable)
    shared_key = (t, "shared", scope.key, proxy.interception_mode, uses_dynamic_forward_proxy(proxy), policy)
    shared = _memo(ctx, shared_key, lambda: _pack_all(ctx, t, outbound_port_listeners(_unbound(proxy), ctx)))
    local_key = (t, "local", shared_key, proxy.listen_address, proxy.outbound_port, proxy.inbound_ports,
                 proxy.app_address, proxy.ip_addresses, proxy.namespace, _labels_key(proxy))

    def build() -> Resources:
        head = _pack_all(ctx, t, [head_listener(proxy, scope.outbound_policy, policy)])
        return head + shared + _pack_all(ctx, t, inbound_listeners(proxy, ctx))

    return _memo(ctx, local_key, build)


# --- EnvoyFilter --------------------------------------------------------------------------------------------

_LEVELS = {xdstypes.LISTENER: LISTENER_LEVELS, xdstypes.ROUTE: ROUTE_LEVELS, xdstypes.CLUSTER: CLUSTER_LEVELS}
_MESSAGES: dict[str, type[Message]] = {xdstypes.LISTENER: listener_pb2.Listener,
                                       xdstypes.ROUTE: route_pb2.RouteConfiguration,
                                       xdstypes.CLUSTER: cluster_pb2.Cluster}


def _wasm_plugins(proxy: Proxy, ctx: PushContext) -> list[ConfigObject[Any]]:
    plugins = ctx.config.of(WASM_PLUGINS)
    return plugins_for(proxy, plugins, ctx.mesh.root_namespace) if plugins else []


def _patched(ctx: PushContext, proxy: Proxy, type_url: str, view: Resources, patches: Patches,
             wasm: Sequence[ConfigObject[Any]] = ()) -> Resources:
    """``view`` with the proxy's WasmPlugins inserted (``wasmplugin``, listeners only) and then its EnvoyFilter
    patches applied (``envoyfilter``); the view itself when neither applies."""
    keys = patches.key(_LEVELS[type_url])
    if type_url == xdstypes.LISTENER and wasm:
        keys += tuple(f"wasm:{p.meta.key}" for p in wasm)
    else:
        wasm = ()
    if not keys:
        return view
    extra: tuple[object, ...] = (proxy.type, tuple(sorted(proxy.gateway_ports.items())))
    key = (type_url, id(view), keys, extra)
    hit = ctx.memo.get(_PATCHED, key)
    if hit is not None and hit[0] is view:
        return hit[1]
    cls = _MESSAGES[type_url]
    msgs: list[Any] = [cls.FromString(r.resource.value) for r in view]
    if type_url == xdstypes.LISTENER:
        msgs = insert_plugins(msgs, proxy, wasm)
        msgs = patch_listeners(msgs, proxy, patches, proxy.gateway_ports)
    elif type_url == xdstypes.ROUTE:
        msgs = patch_route_configs(msgs, proxy, patches)
        identity_reach(msgs, ctx)  # a route an EnvoyFilter added or changed: the identity goes to the mesh only
    else:
        def inbound_hosts(port: int) -> list[str]:
            for ip in proxy.inbound_ports:
                if ip.port == port:
                    svc = inbound_service(proxy, ip, ctx)
                    return [svc.hostname] if svc is not None else []
            return []

        msgs = patch_clusters(msgs, proxy, patches, inbound_hosts)
    out = _pack_all(ctx, type_url, msgs)
    ctx.memo.put(_PATCHED, key, (view, out))
    return out


def applied_envoy_filters(type_url: str, proxy: Proxy, ctx: PushContext) -> tuple[str, ...]:
    """The EnvoyFilters (``namespace/name``) with patches for what ``type_url`` carries to this proxy, and the
    objects generating such patches (``ASMLocalRateLimiter ns/name``, ``EnvoyFilterTemplateBinding ns/name``,
    ``WasmPlugin ns/name`` in listeners): those a rejection of that type may come from."""
    levels = _LEVELS.get(type_url)
    if not levels:
        return ()
    sources = patches_for(proxy, ctx).sources_of(levels)
    if type_url == xdstypes.LISTENER:
        sources += tuple(f"WasmPlugin {p.meta.key}" for p in _wasm_plugins(proxy, ctx))
    return sources


# --- EDS -------------------------------------------------------------------------------------------------------


_FEW = 8  # an EDS request for at most this many names (an endpoint push) never builds the whole view


def _endpoint_key(proxy: Proxy, scope: ProxyScope) -> tuple[object, ...]:
    return (scope.key, proxy.locality, proxy.network, proxy.cluster_id)


def _load_assignment(name: str, proxy: Proxy, ctx: PushContext, view_key: tuple[object, ...]) -> Resource | None:
    key = (name, view_key)
    hit = ctx.memo.get(_ASSIGNMENTS, key)
    if hit is None:
        cla = build_load_assignment(name, proxy, ctx)
        hit = ctx.memo.put(_ASSIGNMENTS, key, _pack(ctx, xdstypes.ENDPOINT, name, cla) if cla is not None else False)
    return hit if isinstance(hit, Resource) else None


def _endpoints(proxy: Proxy, ctx: PushContext, scope: ProxyScope, names: Collection[str] | None) -> Sequence[Resource]:
    view_key = _endpoint_key(proxy, scope)

    def build() -> Resources:
        out = (_load_assignment(n, proxy, ctx, view_key) for n in sorted(set(eds_cluster_names(proxy, ctx))))
        return tuple(r for r in out if r is not None)

    view = ctx.memo.get(_EDS_VIEWS, view_key)
    wanted = None if names is None else names if isinstance(names, frozenset) else frozenset(names)
    if view is None and (wanted is None or len(wanted) > _FEW):
        view = ctx.memo.get_or_build(_EDS_VIEWS, view_key, build)
    if view is not None and (wanted is None or wanted == _names_of(ctx, view)):
        return view
    assert wanted is not None
    # An endpoint push asks every proxy for the same few names: equal views get the same tuple (so the ADS
    # layer encodes it once for all of them).
    few = ctx.memo.get(_EDS_FEW, (view_key, wanted))
    if few is None:
        found = (_load_assignment(n, proxy, ctx, view_key) for n in sorted(wanted))
        few = ctx.memo.put(_EDS_FEW, (view_key, wanted), tuple(r for r in found if r is not None))
    return few


def generate(type_url: str, proxy: Proxy, ctx: PushContext,
             names: Collection[str] | None = None) -> Sequence[Resource]:
    """The resources of ``type_url`` this proxy should have (filtered by ``names`` for EDS and RDS). Equal views
    return the same (immutable) tuple, so callers may cache by its identity."""
    scope = ctx.scope(proxy)
    if type_url == xdstypes.CLUSTER:
        view = _clusters(proxy, ctx, scope)
    elif type_url == xdstypes.LISTENER:
        view = _listeners(proxy, ctx, scope)
    elif type_url == xdstypes.ROUTE:
        # Routes depend on the scope and the interception mode only: shared by every instance of a workload.
        key = (type_url, scope.key, proxy.interception_mode, tuple(sorted(proxy.gateway_ports.items())))
        view = _memo(ctx, key, lambda: _pack_all(ctx, type_url, build_route_configs(proxy, ctx)))
    else:
        view = None
    if view is not None:
        patches = patches_for(proxy, ctx)
        wasm = _wasm_plugins(proxy, ctx) if type_url == xdstypes.LISTENER else []
        if patches.by_level or wasm:
            view = _patched(ctx, proxy, type_url, view, patches, wasm)
        return _select(ctx, view, names)
    if type_url == xdstypes.ENDPOINT:
        return _endpoints(proxy, ctx, scope, names)
    if type_url == xdstypes.NAME_TABLE:  # one unnamed resource, shared by the proxies of one scope
        return _memo(ctx, (type_url, "names", scope.key),
                     lambda: (_pack(ctx, type_url, "", build_name_table(proxy, ctx)),))
    return ()


def _object_hosts(ctx: PushContext, key: ConfigKey) -> list[str] | None:
    """The hosts a changed object concerns, or None when unknown (e.g. deleted: be conservative)."""
    for obj in ctx.config.of(key.gr):
        if obj.meta.name != key.name or obj.meta.namespace != key.namespace:
            continue
        suffix, spec = ctx.mesh.domain_suffix, obj.spec
        if isinstance(spec, istio.DestinationRule):
            return [resolve_host(spec.host or "", key.namespace, suffix)]
        if isinstance(spec, istio.VirtualService) and spec.hosts:
            if [g for g in spec.gateways if g != MESH_GATEWAY]:
                return None
            return [resolve_host(h, key.namespace, suffix) for h in spec.hosts]
        if isinstance(spec, istio.ServiceEntry):
            return list(spec.hosts)
        return None
    return None


def proxy_affected(proxy: Proxy, ctx: PushContext, request: PushRequest) -> bool:
    """Whether ``request`` changes anything this proxy receives. Conservative: unsure means yes."""
    scope = ctx.scope(proxy)
    if not request.full:
        if proxy.type is ProxyType.ROUTER:
            return bool(request.endpoints_updated)
        return scope.sees_any(request.endpoints_updated)
    visible = [s.hostname for s in scope.services]
    if not request.config_updated:
        return True
    for key in request.config_updated:
        if key.gr == GATEWAYS:
            if proxy.type is ProxyType.ROUTER:
                return True
            continue
        if key.gr == SIDECARS:
            if proxy.type is ProxyType.SIDECAR and key.namespace in (proxy.namespace, ctx.mesh.root_namespace):
                return True
            continue
        if key.gr == WORKLOAD_ENTRIES:
            return True
        if key.gr in (VIRTUAL_SERVICES, DESTINATION_RULES, SERVICE_ENTRIES):
            if scope.sidecar is None or proxy.type is ProxyType.ROUTER:
                return True
            hosts = _object_hosts(ctx, key)
            if hosts is None:
                return True
            if any(host_matches(h, v) or host_matches(v, h) for h in hosts for v in visible):
                return True
            if key.gr == SERVICE_ENTRIES and any(scope.sidecar.allows(key.namespace, h) for h in hosts):
                return True
            continue
        return True
    return False
