"""One thin generator per xDS type over the pure builders, with the memo that lets proxies share results.

``generate`` is what the ADS server calls. It returns packed resources with a content-hash version; results are
memoised inside the (immutable) PushContext under a key made of what the proxy's view depends on, so every
proxy of a deployment (same namespace, labels, Sidecar, addresses) shares one build and one serialization.
``proxy_affected`` decides whether a push concerns a proxy at all (Sidecar egress scoping, gateways).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable
from typing import Any, NamedTuple

from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshplane.model import xdstypes
from meshplane.model.config import ConfigKey
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.push import PushRequest
from meshplane.translate.clusters import build_clusters, eds_cluster_names
from meshplane.translate.context import (
    DESTINATION_RULES,
    GATEWAYS,
    SERVICE_ENTRIES,
    SIDECARS,
    VIRTUAL_SERVICES,
    WORKLOAD_ENTRIES,
    PushContext,
)
from meshplane.translate.endpoints import build_load_assignment
from meshplane.translate.hosts import host_matches, resolve_host
from meshplane.translate.listeners import build_listeners
from meshplane.translate.routes import build_route_configs


class Resource(NamedTuple):
    name: str
    version: str  # a hash of the serialized resource
    resource: any_pb2.Any


def _local_key(proxy: Proxy) -> tuple[object, ...]:
    """What besides the scope changes a proxy's listeners and inbound clusters."""
    return (
        proxy.listen_address, proxy.app_address, proxy.inbound_ports, tuple(sorted(proxy.gateway_ports.items())),
        proxy.interception_mode, proxy.outbound_port, proxy.ip_addresses,
    )


def _pack(ctx: PushContext, type_url: str, name: str, msg: Message) -> Resource:
    data = msg.SerializeToString(deterministic=True)
    digest = hashlib.blake2b(data, digest_size=10).hexdigest()
    key = ("packed", type_url, name, digest)
    hit = ctx._cache.get(key)
    if hit is not None:
        assert isinstance(hit, Resource)
        return hit
    packed = any_pb2.Any(type_url=type_url, value=data)
    res = Resource(name, digest, packed)
    ctx._cache[key] = res
    return res


def _memo(ctx: PushContext, key: tuple[object, ...], build: Callable[[], list[Resource]]) -> list[Resource]:
    hit = ctx._cache.get(key)
    if hit is None:
        hit = build()
        ctx._cache[key] = hit
    assert isinstance(hit, list)
    return hit


def _pack_all(ctx: PushContext, type_url: str, msgs: Iterable[Any]) -> list[Resource]:
    return [_pack(ctx, type_url, m.name, m) for m in msgs]


def generate(type_url: str, proxy: Proxy, ctx: PushContext, names: Collection[str] | None = None) -> list[Resource]:
    """The resources of ``type_url`` this proxy should have (filtered by ``names`` for EDS and RDS)."""
    scope = ctx.scope(proxy)
    if type_url == xdstypes.CLUSTER:
        out = _memo(ctx, (type_url, scope.key, _local_key(proxy)),
                    lambda: _pack_all(ctx, type_url, build_clusters(proxy, ctx)))
    elif type_url == xdstypes.LISTENER:
        out = _memo(ctx, (type_url, scope.key, _local_key(proxy)),
                    lambda: _pack_all(ctx, type_url, build_listeners(proxy, ctx)))
    elif type_url == xdstypes.ROUTE:
        # Routes depend on the scope and the interception mode only: shared by every instance of a workload.
        out = _memo(ctx, (type_url, scope.key, proxy.interception_mode, tuple(sorted(proxy.gateway_ports.items()))),
                    lambda: _pack_all(ctx, type_url, build_route_configs(proxy, ctx)))
    elif type_url == xdstypes.ENDPOINT:
        wanted = list(names) if names is not None else eds_cluster_names(proxy, ctx)
        out = []
        for name in sorted(set(wanted)):
            key = (type_url, name, proxy.locality, proxy.network, scope.key)
            hit = ctx._cache.get(key)
            if hit is None:
                cla = build_load_assignment(name, proxy, ctx)
                hit = _pack(ctx, type_url, name, cla) if cla is not None else False
                ctx._cache[key] = hit
            if isinstance(hit, Resource):
                out.append(hit)
        return out
    else:
        return []
    if names is not None:
        wanted_set = set(names)
        return [r for r in out if r.name in wanted_set]
    return list(out)


def _object_hosts(ctx: PushContext, key: ConfigKey) -> list[str] | None:
    """The hosts a changed object concerns, or None when unknown (e.g. deleted: be conservative)."""
    for obj in ctx.config.of(key.gr):
        md = obj.get("metadata") or {}
        if md.get("name") == key.name and (md.get("namespace") or "default") == key.namespace:
            spec = obj.get("spec") or {}
            suffix = ctx.mesh.domain_suffix
            if key.gr == DESTINATION_RULES:
                return [resolve_host(str(spec.get("host") or ""), key.namespace, suffix)]
            if key.gr == VIRTUAL_SERVICES and spec.get("hosts"):
                if [g for g in spec.get("gateways") or [] if g != "mesh"]:
                    return None
                return [resolve_host(str(h), key.namespace, suffix) for h in spec.get("hosts") or []]
            if key.gr == SERVICE_ENTRIES:
                return [str(h) for h in spec.get("hosts") or []]
            return None
    return None


def proxy_affected(proxy: Proxy, ctx: PushContext, request: PushRequest) -> bool:
    """Whether ``request`` changes anything this proxy receives. Conservative: unsure means yes."""
    scope = ctx.scope(proxy)
    visible = [s.hostname for s in scope.services]
    if not request.full:
        if proxy.type is ProxyType.ROUTER:
            return bool(request.endpoints_updated)
        return any(h in request.endpoints_updated for h in visible)
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
