"""EnvoyFilter (networking.istio.io/v1alpha3): user patches applied to what the builders generated, as Istio does.

Why a step of its own at the end: an EnvoyFilter edits Envoy's config, not Istio's model, so it can only run on the
finished protos of one proxy (``generate`` calls :func:`patch_listeners`, :func:`patch_route_configs` and
:func:`patch_clusters` on a view before packing it). The semantics follow istio/istio
``pilot/pkg/networking/core/envoyfilter`` and ``pilot/pkg/model/envoyfilter.go``:

* which objects apply: those of the config root namespace and of the proxy's namespace whose ``workloadSelector``
  matches its labels (a root-namespace selector matches in every namespace) or whose ``targetRefs`` name its
  Gateway (``gateway.networking.k8s.io`` ``Gateway``: proxies labelled ``gateway.networking.k8s.io/gateway-name``);
  ordered by ``priority``, root namespace first, creation time, then ``name.namespace``; their patches are merged
  into one list per ``applyTo``, and a patch whose ``match.proxy`` (``proxyVersion`` regex, ``metadata``) does not
  fit the proxy is dropped. The proxy's version is its ``ISTIO_VERSION`` metadata, else its Envoy's build version;
* the context: ``GATEWAY`` for a gateway, ``SIDECAR_INBOUND`` for a sidecar's inbound listeners (their inline
  route configurations included) and ``inbound|`` clusters, ``SIDECAR_OUTBOUND`` for the rest; ``ANY`` matches
  all, except that a LISTENER or CLUSTER ``ADD`` with ``ANY`` adds to outbound and gateways only;
* operations per level: MERGE (proto merge of the typed value; a filter's ``typed_config`` of the same type is
  merged as the typed message, a transport socket of the same name likewise), ADD, REMOVE, INSERT_BEFORE /
  INSERT_AFTER / INSERT_FIRST (filters, listener filters, HTTP routes; elsewhere they mean ADD), REPLACE (filters,
  listener filters, virtual hosts). Without a filter match, INSERT_BEFORE is INSERT_FIRST and INSERT_AFTER is ADD.

What the local runtime changes: in explicit-proxy mode (``interception: NONE``) a sidecar's outbound HTTP goes through
one listener (``<ip>_15001``) and one route configuration (``http_proxy``) whose virtual hosts are
``host:port``; there a ``routeConfiguration.portNumber`` selects the virtual hosts of that port. Inbound listeners
are ``inbound_<ip>_<port>``, so ``listener.portNumber`` is the port the sidecar serves.

Values are typed by the product's protobuf registry (``model.envoyproto``); admission refused any that do not read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshplane.model import envoyproto
from meshplane.model import spec as istio
from meshplane.model.labels import labels_match, targets_gateway_proxy
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.resources import (
    ENVOY_FILTER_TEMPLATE_BINDINGS,
    ENVOY_FILTER_TEMPLATES,
    ENVOY_FILTERS,
    LOCAL_RATE_LIMITERS,
)
from meshplane.model.spec import ConfigObject
from meshplane.translate.common import pack
from meshplane.translate.context import PushContext
from meshplane.translate.envoyfiltertemplate import bound_filters
from meshplane.translate.localratelimit import limiter_patches
from meshplane.translate.memo import Slot
from meshplane.translate.routes import HTTP_PROXY_ROUTE

INBOUND, OUTBOUND, GATEWAY, ANY = "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "ANY"
HCM = "envoy.filters.network.http_connection_manager"
VIRTUAL_LISTENERS = ("virtualInbound", "virtualOutbound")
# Filter names Istio's docs and older EnvoyFilters still use, for the filters we name by their canonical names.
_DEPRECATED_NAMES = {
    "envoy.http_connection_manager": HCM,
    "envoy.tcp_proxy": "envoy.filters.network.tcp_proxy",
    "envoy.router": "envoy.filters.http.router",
    "envoy.cors": "envoy.filters.http.cors",
    "envoy.fault": "envoy.filters.http.fault",
    "envoy.lua": "envoy.filters.http.lua",
    "envoy.filters.listener.tls_inspector": "envoy.filters.listener.tls_inspector",
    "envoy.listener.tls_inspector": "envoy.filters.listener.tls_inspector",
    "envoy.listener.original_dst": "envoy.filters.listener.original_dst",
}
# The applyTo levels each xDS type's builder output is patched at.
LISTENER_LEVELS = ("LISTENER", "LISTENER_FILTER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER",
                   "ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE")  # the last three: inline route configs
ROUTE_LEVELS = ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE")
CLUSTER_LEVELS = ("CLUSTER",)

M = TypeVar("M", bound=Message)
T = TypeVar("T")


def _canonical(name: str | None) -> str:
    return _DEPRECATED_NAMES.get(name or "", name or "")


@dataclass(frozen=True, slots=True, eq=False)
class Patch:
    """One ``configPatches[index]`` of the EnvoyFilter ``source`` (``namespace/name``), its value typed."""

    source: str
    index: int
    apply_to: str
    operation: str
    context: str
    match: istio.EnvoyFilterConfigPatchesMatch
    value: Message | None
    version: re.Pattern[str] | None = None
    version_unusable: bool = False  # a proxyVersion that does not compile matches no proxy (fail closed)

    @property
    def key(self) -> str:
        return f"{self.source}#{self.index}"

    def fresh(self, cls: type[M]) -> M:
        out = cls()
        if self.value is not None:
            out.CopyFrom(self.value)
        return cast(M, out)

    @property
    def listener(self) -> istio.EnvoyFilterConfigPatchesMatchListener | None:
        return self.match.listener

    @property
    def chain(self) -> istio.EnvoyFilterConfigPatchesMatchListenerFilterChain | None:
        lm = self.match.listener
        return None if lm is None else lm.filter_chain

    @property
    def filter(self) -> istio.EnvoyFilterConfigPatchesMatchListenerFilterChainFilter | None:
        fc = self.chain
        return None if fc is None else fc.filter


@dataclass(frozen=True, slots=True, eq=False)
class FilterRec:
    obj: ConfigObject[istio.EnvoyFilter]
    patches: tuple[Patch, ...]

    @property
    def spec(self) -> istio.EnvoyFilter:
        return self.obj.spec


@dataclass(frozen=True, slots=True)
class Patches:
    """The patches that apply to one proxy, in Istio's order, by ``applyTo``."""

    by_level: Mapping[str, tuple[Patch, ...]] = field(default_factory=dict)
    sources: tuple[str, ...] = ()  # the EnvoyFilters (namespace/name) they come from

    def of(self, level: str) -> tuple[Patch, ...]:
        return self.by_level.get(level, ())

    def key(self, levels: Sequence[str]) -> tuple[str, ...]:
        """What the patches of ``levels`` are (for memo keys); empty: nothing to do."""
        return tuple(p.key for lv in levels for p in self.of(lv))

    def sources_of(self, levels: Sequence[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.source for lv in levels for p in self.of(lv)))


NO_PATCHES = Patches()


def compile_filter(obj: ConfigObject[istio.EnvoyFilter], source: str | None = None) -> FilterRec:
    """The object's patches with typed values (``source``: what they are reported as coming from, the object's
    ``namespace/name`` by default). A value that no longer reads (admission refused it, so only an object stored
    by an older version) drops that patch only."""
    out: list[Patch] = []
    for i, cp in enumerate(obj.spec.config_patches):
        if cp.patch is None or cp.apply_to is None or cp.patch.operation is None:
            continue
        apply_to, op = cp.apply_to.value, cp.patch.operation.value
        if apply_to in ("INVALID", "EXTENSION_CONFIG", "BOOTSTRAP") or op == "INVALID":
            continue  # refused at admission (see api._networking)
        value: Message | None = None
        if cp.patch.value is not None and op != "REMOVE":
            try:
                value = envoyproto.patch_value(apply_to, cp.patch.value)
            except envoyproto.EnvoyProtoError:
                continue
        if op in ("INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST") and apply_to not in (
                "HTTP_FILTER", "NETWORK_FILTER", "HTTP_ROUTE", "LISTENER_FILTER"):
            op = "ADD"
        match = cp.match or istio.EnvoyFilterConfigPatchesMatch()
        context = match.context.value if match.context is not None else ANY
        version, unusable = None, False
        wanted = match.proxy.proxy_version if match.proxy is not None else None
        if wanted:
            try:
                version = re.compile(wanted)
            except re.error:
                unusable = True
        out.append(Patch(source or obj.meta.key, i, apply_to, op, context, match, value, version, unusable))
    return FilterRec(obj, tuple(out))


@dataclass(frozen=True, slots=True)
class _Index:
    by_namespace: Mapping[str, tuple[FilterRec, ...]]


_INDEX: Slot[str, _Index] = Slot("envoyfilters", endpoint_free=True)


def _index(ctx: PushContext) -> _Index:
    def build() -> _Index:
        by_ns: dict[str, list[FilterRec]] = {}
        for obj in ctx.config.of(ENVOY_FILTERS):
            by_ns.setdefault(obj.meta.namespace, []).append(compile_filter(obj))
        bindings = ctx.config.of(ENVOY_FILTER_TEMPLATE_BINDINGS)
        if bindings:  # ASM's templates: each binding is an EnvoyFilter of its namespace
            for source, obj in bound_filters(ctx.config.of(ENVOY_FILTER_TEMPLATES), bindings,
                                             ctx.mesh.root_namespace):
                by_ns.setdefault(obj.meta.namespace, []).append(compile_filter(obj, source))
        return _Index({k: tuple(v) for k, v in by_ns.items()})

    return ctx.memo.get_or_build(_INDEX, "index", build)


def proxy_version(proxy: Proxy) -> str:
    """What ``match.proxy.proxyVersion`` is matched against: ``ISTIO_VERSION`` metadata, else the Envoy build
    version the proxy announced (``ENVOY_VERSION``, set by the xDS server from the node)."""
    for key in ("ISTIO_VERSION", "ENVOY_VERSION"):
        v = proxy.metadata.get(key)
        if isinstance(v, str) and v:
            return v
    return ""


def _attaches(rec: FilterRec, proxy: Proxy, root: str) -> bool:
    ns = rec.obj.meta.namespace
    if ns != proxy.namespace and ns != root:
        return False
    spec = rec.spec
    if spec.target_refs:
        return any(targets_gateway_proxy(ref, ns, proxy.namespace, proxy.labels) for ref in spec.target_refs)
    if spec.workload_selector is not None and spec.workload_selector.labels:
        return labels_match(spec.workload_selector.labels, proxy.labels)
    return True


def _proxy_matches(p: Patch, proxy: Proxy) -> bool:
    pm = p.match.proxy
    if pm is None:
        return True
    if p.version_unusable:
        return False
    if p.version is not None:
        version = proxy_version(proxy)
        if not version or p.version.search(version) is None:
            return False
    return all(str(proxy.metadata.get(k, "")) == v for k, v in pm.metadata.items())


def patches_for(proxy: Proxy, ctx: PushContext) -> Patches:
    """The EnvoyFilter patches that apply to ``proxy`` (Istio's ``PushContext.EnvoyFilters``)."""
    idx = _index(ctx)
    limiters = ctx.config.of(LOCAL_RATE_LIMITERS)
    if not idx.by_namespace and not limiters:
        return NO_PATCHES
    root = ctx.mesh.root_namespace
    recs = [r for r in idx.by_namespace.get(root, ()) if _attaches(r, proxy, root)]
    if proxy.namespace != root:
        recs += [r for r in idx.by_namespace.get(proxy.namespace, ()) if _attaches(r, proxy, root)]
    generated = [Patch(lp.source, lp.index, lp.apply_to, lp.operation, lp.context, lp.match, lp.value)
                 for lp in limiter_patches(proxy, limiters)] if limiters else []
    if not recs and not generated:
        return NO_PATCHES
    recs.sort(key=lambda r: (r.spec.priority or 0, r.obj.meta.namespace != root, r.obj.meta.creation_timestamp,
                             f"{r.obj.meta.name}.{r.obj.meta.namespace}"))
    by_level: dict[str, list[Patch]] = {}
    for p in generated:  # what the product generates from ASM's kinds comes before the user's EnvoyFilters
        by_level.setdefault(p.apply_to, []).append(p)
    for r in recs:
        for p in r.patches:
            if _proxy_matches(p, proxy):
                by_level.setdefault(p.apply_to, []).append(p)
    return Patches({k: tuple(v) for k, v in by_level.items()},
                   tuple(dict.fromkeys(p.source for ps in by_level.values() for p in ps)))


# --- shared helpers --------------------------------------------------------------------------------------------


def _context_matches(p: Patch, context: str) -> bool:
    return p.context == context or p.context == ANY


def _merge_any(dst: any_pb2.Any, src: any_pb2.Any) -> any_pb2.Any:
    """Istio's ``MergeAnyWithAny``: the same type is merged as the typed message; another type replaces."""
    if dst.type_url != src.type_url:
        out = any_pb2.Any()
        out.CopyFrom(src)
        return out
    merged = envoyproto.unpack(dst)
    envoyproto.merge(merged, envoyproto.unpack(src))
    return pack(merged)


def _splice(items: list[T], p: Patch, new: Callable[[], T], has_match: bool,
            matches: Callable[[T], bool]) -> list[T]:
    """ADD / INSERT_* / REPLACE / REMOVE on one list of filters (Istio's list operations)."""
    op = p.operation
    if op == "ADD":
        return [*items, new()]
    if op == "INSERT_FIRST":
        return [new(), *items]
    if op == "INSERT_AFTER" and not has_match:
        return [*items, new()]
    if op == "INSERT_BEFORE" and not has_match:
        return [new(), *items]
    if not has_match:
        return items
    at = next((i for i, e in enumerate(items) if matches(e)), -1)
    if op == "REMOVE":
        return [e for e in items if not matches(e)]
    if at < 0:
        return items
    if op == "INSERT_BEFORE":
        return [*items[:at], new(), *items[at:]]
    if op == "INSERT_AFTER":
        return [*items[:at + 1], new(), *items[at + 1:]]
    if op == "REPLACE":
        return [*items[:at], new(), *items[at + 1:]]
    return items


def _set_list(field_: Any, items: Sequence[Message]) -> None:
    copies = list(items)
    del field_[:]
    field_.extend(copies)


# --- listeners -------------------------------------------------------------------------------------------------


def _listener_matches(lst: listener_pb2.Listener, p: Patch) -> bool:
    lm = p.listener
    if lm is None:
        return True
    if lm.name and lm.name != lst.name:
        return False
    if p.apply_to != "LISTENER" and lst.name in VIRTUAL_LISTENERS:
        return True  # the port is matched on the filter chain's destination port
    if lm.port_number:
        sa = lst.address.socket_address if lst.HasField("address") else None
        if sa is None or sa.port_value != lm.port_number:
            return False
    return True


def _chain_matches(lst: listener_pb2.Listener, fc: lc_pb2.FilterChain, p: Patch) -> bool:
    lm = p.listener
    if lm is None:
        return True
    fcm = fc.filter_chain_match
    if lst.name in VIRTUAL_LISTENERS and lm.port_number and fcm.destination_port.value != lm.port_number:
        return False
    m = lm.filter_chain
    if m is None:
        return True
    if m.name and m.name != fc.name:
        return False
    if m.sni and m.sni not in fcm.server_names:
        return False
    if m.transport_protocol and fcm.transport_protocol != m.transport_protocol:
        return False
    if m.application_protocols and not all(
            a in fcm.application_protocols for a in m.application_protocols.split(",")):
        return False
    return not m.destination_port or fcm.destination_port.value == m.destination_port


def _has_listener_filter_match(p: Patch) -> bool:
    return p.listener is not None and bool(p.listener.listener_filter)


def _listener_filter_matches(f: lc_pb2.ListenerFilter, p: Patch) -> bool:
    return not _has_listener_filter_match(p) or _canonical(p.listener.listener_filter if p.listener else "") == \
        _canonical(f.name)


def _network_filter_matches(f: lc_pb2.Filter, p: Patch) -> bool:
    m = p.filter
    return m is None or _canonical(m.name) == _canonical(f.name)


def _has_http_filter_match(p: Patch) -> bool:
    return p.filter is not None and p.filter.sub_filter is not None


def _http_filter_matches(f: hcm_pb2.HttpFilter, p: Patch) -> bool:
    m = p.filter
    if m is None or m.sub_filter is None:
        return True
    return _canonical(m.sub_filter.name) == _canonical(f.name)


def _merge_named(dst: Any, src: Any) -> None:
    """MERGE of a (network, HTTP, listener) filter: the name may be overwritten, a typed config is merged."""
    if not dst.HasField("typed_config"):
        return  # Istio skips these (nothing typed to merge into)
    if src.name:
        dst.name = src.name
    if src.HasField("typed_config"):
        dst.typed_config.CopyFrom(_merge_any(dst.typed_config, src.typed_config))


def _merge_transport_socket(dst: Any, src: Any) -> bool:
    """A patch's transport socket merged into the one of the same name (typed); True when handled."""
    if not src.HasField("transport_socket") or not dst.HasField("transport_socket"):
        return False
    if src.transport_socket.name != dst.transport_socket.name:
        return False
    if dst.transport_socket.HasField("typed_config") and src.transport_socket.HasField("typed_config"):
        dst.transport_socket.typed_config.CopyFrom(
            _merge_any(dst.transport_socket.typed_config, src.transport_socket.typed_config))
    return True


def patch_listeners(listeners: Sequence[listener_pb2.Listener], proxy: Proxy,
                    patches: Patches, gateway_ports: Mapping[int, int] | None = None) -> list[listener_pb2.Listener]:
    """``listeners`` (owned by the caller: changed in place) with the patches applied."""
    if proxy.type is ProxyType.ROUTER:
        return _patch_group(GATEWAY, list(listeners), patches, gateway_ports or {})
    inbound = [lst for lst in listeners if lst.traffic_direction == base_pb2.INBOUND]
    outbound = [lst for lst in listeners if lst.traffic_direction != base_pb2.INBOUND]
    return _patch_group(OUTBOUND, outbound, patches, {}) + _patch_group(INBOUND, inbound, patches, {})


def _patch_group(context: str, listeners: list[listener_pb2.Listener], patches: Patches,
                 ports: Mapping[int, int]) -> list[listener_pb2.Listener]:
    kept = [lst for lst in listeners if not _patch_listener(context, patches, lst, ports)]
    for p in patches.of("LISTENER"):
        if p.operation != "ADD" or not _context_matches(p, context):
            continue
        if p.context == ANY and context not in (OUTBOUND, GATEWAY):
            continue
        kept.append(p.fresh(listener_pb2.Listener))
    return kept


def _patch_listener(context: str, patches: Patches, lst: listener_pb2.Listener, ports: Mapping[int, int]) -> bool:
    """True when the listener is removed."""
    for p in patches.of("LISTENER"):
        if not _context_matches(p, context) or not _listener_matches(lst, p):
            continue
        if p.operation == "REMOVE":
            return True
        if p.operation == "MERGE" and p.value is not None:
            envoyproto.merge(lst, p.value)
    _patch_listener_filters(context, patches, lst)
    _patch_chains(context, patches, lst, ports)
    return False


def _patch_listener_filters(context: str, patches: Patches, lst: listener_pb2.Listener) -> None:
    for p in patches.of("LISTENER_FILTER"):
        if not _context_matches(p, context) or not _listener_matches(lst, p):
            continue
        if p.operation == "MERGE":
            if _has_listener_filter_match(p) and p.value is not None:
                for f in lst.listener_filters:
                    if _listener_filter_matches(f, p):
                        _merge_named(f, p.value)
            continue
        items = _splice(list(lst.listener_filters), p, lambda: p.fresh(lc_pb2.ListenerFilter),  # noqa: B023
                        _has_listener_filter_match(p), lambda f: _listener_filter_matches(f, p))  # noqa: B023
        _set_list(lst.listener_filters, items)


def _patch_chains(context: str, patches: Patches, lst: listener_pb2.Listener, ports: Mapping[int, int]) -> None:
    removed = {i for i, fc in enumerate(lst.filter_chains)
               if fc.filters and _patch_chain(context, patches, lst, fc, ports)}
    if (lst.HasField("default_filter_chain") and lst.default_filter_chain.filters
            and _patch_chain(context, patches, lst, lst.default_filter_chain, ports)):
        lst.ClearField("default_filter_chain")
    for p in patches.of("FILTER_CHAIN"):
        if p.operation == "ADD" and _context_matches(p, context) and _listener_matches(lst, p):
            lst.filter_chains.append(p.fresh(lc_pb2.FilterChain))
    if removed:
        _set_list(lst.filter_chains, [fc for i, fc in enumerate(lst.filter_chains) if i not in removed])


def _patch_chain(context: str, patches: Patches, lst: listener_pb2.Listener, fc: lc_pb2.FilterChain,
                 ports: Mapping[int, int]) -> bool:
    """True when the chain is removed."""
    for p in patches.of("FILTER_CHAIN"):
        if not _context_matches(p, context) or not _listener_matches(lst, p) or not _chain_matches(lst, fc, p):
            continue
        if p.operation == "REMOVE":
            return True
        if p.operation == "MERGE" and p.value is not None and not _merge_transport_socket(fc, p.value):
            envoyproto.merge(fc, p.value)
    for p in patches.of("NETWORK_FILTER"):
        if (p.operation == "MERGE" or not _context_matches(p, context) or not _listener_matches(lst, p)
                or not _chain_matches(lst, fc, p)):
            continue
        items = _splice(list(fc.filters), p, lambda: p.fresh(lc_pb2.Filter),  # noqa: B023
                        p.filter is not None, lambda f: _network_filter_matches(f, p))  # noqa: B023
        _set_list(fc.filters, items)
    for f in fc.filters:
        for p in patches.of("NETWORK_FILTER"):
            if (p.operation == "MERGE" and p.value is not None and _context_matches(p, context)
                    and _listener_matches(lst, p) and _chain_matches(lst, fc, p)
                    and _network_filter_matches(f, p)):
                _merge_named(f, p.value)
        if f.name == HCM and f.HasField("typed_config"):
            _patch_hcm(context, patches, lst, fc, f, ports)
    return False


def _patch_hcm(context: str, patches: Patches, lst: listener_pb2.Listener, fc: lc_pb2.FilterChain,
               f: lc_pb2.Filter, ports: Mapping[int, int]) -> None:
    relevant = [p for p in patches.of("HTTP_FILTER")
                if _context_matches(p, context) and _listener_matches(lst, p) and _chain_matches(lst, fc, p)
                and _network_filter_matches(f, p)]
    inline_routes = any(patches.of(lv) for lv in ROUTE_LEVELS)
    if not relevant and not inline_routes:
        return
    hcm = hcm_pb2.HttpConnectionManager()
    if not f.typed_config.Unpack(hcm):
        return
    for p in relevant:
        if p.operation == "MERGE":
            continue
        items = _splice(list(hcm.http_filters), p, lambda: p.fresh(hcm_pb2.HttpFilter),  # noqa: B023
                        _has_http_filter_match(p), lambda h: _http_filter_matches(h, p))  # noqa: B023
        _set_list(hcm.http_filters, items)
    for h in hcm.http_filters:
        for p in relevant:
            if p.operation == "MERGE" and p.value is not None and _http_filter_matches(h, p):
                _merge_named(h, p.value)
    if inline_routes and hcm.HasField("route_config"):
        patch_route_config(context, patches, hcm.route_config, ports)
    f.typed_config.CopyFrom(pack(hcm))


# --- route configurations --------------------------------------------------------------------------------------


def _route_port(name: str) -> int:
    if name.startswith("inbound|"):
        parts = name.split("|")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return int(name) if name.isdigit() else 0


def _rc_matches(context: str, rc: route_pb2.RouteConfiguration, p: Patch, ports: Mapping[int, int]) -> bool:
    m = p.match.route_configuration
    if m is None:
        return True
    if m.name and m.name != rc.name:
        return False
    if context != GATEWAY:
        if m.port_number and rc.name == HTTP_PROXY_ROUTE:
            return p.apply_to != "ROUTE_CONFIGURATION"  # the explicit proxy's: matched per virtual host
        return not m.port_number or m.port_number == _route_port(rc.name)
    parts = rc.name.split(".")
    number = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    port_name = parts[2] if len(parts) > 2 else ""
    gateway = f"{parts[4]}/{parts[3]}" if len(parts) > 4 else ""
    if m.port_name and m.port_name != port_name:
        return False
    if m.gateway and m.gateway != gateway:
        return False
    if m.port_number:
        services = [s for s, listen in ports.items() if listen == number]
        if m.port_number != number and m.port_number not in services:
            return False
    return True


def _vhost_matches(rc: route_pb2.RouteConfiguration, vh: rc_pb2.VirtualHost, p: Patch) -> bool:
    m = p.match.route_configuration
    if m is None:
        return True
    if m.port_number and rc.name == HTTP_PROXY_ROUTE and not vh.name.endswith(f":{m.port_number}"):
        return False
    return m.vhost is None or not m.vhost.name or m.vhost.name == vh.name


def _has_route_match(p: Patch) -> bool:
    m = p.match.route_configuration
    return m is not None and m.vhost is not None and m.vhost.route is not None


_ACTIONS = {"route": "ROUTE", "redirect": "REDIRECT", "direct_response": "DIRECT_RESPONSE"}


def _route_matches(r: rc_pb2.Route, p: Patch) -> bool:
    if not _has_route_match(p):
        return True
    m = cast(istio.EnvoyFilterConfigPatchesMatchRouteConfigurationVhostRoute,
             p.match.route_configuration.vhost.route)  # type: ignore[union-attr]
    if m.name and m.name != r.name:
        return False
    action = m.action.value if m.action is not None else "ANY"
    return action == "ANY" or _ACTIONS.get(r.WhichOneof("action") or "", "") == action


def patch_route_config(context: str, patches: Patches, rc: route_pb2.RouteConfiguration,
                       ports: Mapping[int, int]) -> None:
    """One route configuration patched in place (Istio's ``ApplyRouteConfigurationPatches``)."""
    for p in patches.of("ROUTE_CONFIGURATION"):
        if (p.operation == "MERGE" and p.value is not None and _context_matches(p, context)
                and _rc_matches(context, rc, p, ports)):
            envoyproto.merge(rc, p.value)
    vhosts = [p for p in patches.of("VIRTUAL_HOST") if _context_matches(p, context)
              and _rc_matches(context, rc, p, ports)]
    routes = [p for p in patches.of("HTTP_ROUTE") if _context_matches(p, context)
              and _rc_matches(context, rc, p, ports)]
    if not vhosts and not routes:
        return
    kept: list[rc_pb2.VirtualHost] = []
    for vh in rc.virtual_hosts:
        removed = False
        for p in vhosts:
            if not _vhost_matches(rc, vh, p):
                continue
            if p.operation == "REMOVE":
                removed = True
                break
            if p.operation == "MERGE" and p.value is not None:
                envoyproto.merge(vh, p.value)
            elif p.operation == "REPLACE":
                vh.CopyFrom(p.fresh(rc_pb2.VirtualHost))
        if removed:
            continue
        _patch_routes(rc, vh, [p for p in routes if _vhost_matches(rc, vh, p)])
        kept.append(vh)
    for p in vhosts:
        if p.operation == "ADD":
            kept.append(p.fresh(rc_pb2.VirtualHost))
    _set_list(rc.virtual_hosts, kept)


def _patch_routes(rc: route_pb2.RouteConfiguration, vh: rc_pb2.VirtualHost, patches: list[Patch]) -> None:
    if not patches:
        return
    kept: list[rc_pb2.Route] = []
    for r in vh.routes:
        removed = False
        for p in patches:
            if not _route_matches(r, p):
                continue
            if p.operation == "REMOVE":
                removed = True
                break
            if p.operation == "MERGE" and p.value is not None:
                envoyproto.merge(r, p.value)
        if not removed:
            kept.append(r)
    for p in patches:
        new = p.fresh(rc_pb2.Route)
        has = _has_route_match(p)
        if p.operation == "ADD":
            kept.append(new)
        elif p.operation in ("INSERT_BEFORE", "INSERT_AFTER") or (p.operation == "INSERT_FIRST" and not has):
            kept = _splice(kept, p, lambda: new, has, lambda r: _route_matches(r, p))  # noqa: B023
        elif p.operation == "INSERT_FIRST" and any(_route_matches(r, p) for r in kept):
            kept.insert(0, new)
    _set_list(vh.routes, kept)


def patch_route_configs(rcs: Sequence[route_pb2.RouteConfiguration], proxy: Proxy,
                        patches: Patches) -> list[route_pb2.RouteConfiguration]:
    """RDS route configurations (owned by the caller) patched: ``GATEWAY`` or ``SIDECAR_OUTBOUND`` context."""
    context = GATEWAY if proxy.type is ProxyType.ROUTER else OUTBOUND
    for rc in rcs:
        patch_route_config(context, patches, rc, proxy.gateway_ports)
    return list(rcs)


# --- clusters --------------------------------------------------------------------------------------------------


def _cluster_matches(c: cluster_pb2.Cluster, p: Patch, inbound_hosts: Callable[[int], Sequence[str]]) -> bool:
    m = p.match.cluster
    if m is None:
        return True
    if m.name:
        return bool(m.name == c.name)
    parts = c.name.split("|")
    if len(parts) != 4:
        direction, port, subset, host = "", 0, "", ""
    else:
        direction, subset, host = parts[0], parts[2], parts[3]
        port = int(parts[1]) if parts[1].isdigit() else 0
    hosts = [host]
    if direction == "inbound":
        hosts = list(inbound_hosts(port)) or hosts
    if m.subset and m.subset != subset:
        return False
    if m.service and m.service not in hosts:
        return False
    return not m.port_number or m.port_number == port


def patch_clusters(clusters: Sequence[cluster_pb2.Cluster], proxy: Proxy, patches: Patches,
                   inbound_hosts: Callable[[int], Sequence[str]]) -> list[cluster_pb2.Cluster]:
    """Clusters (owned by the caller) with CLUSTER patches applied and added ones appended. ``inbound_hosts``:
    the services of this proxy on an inbound port (an ``inbound|`` cluster names no host)."""
    out: list[cluster_pb2.Cluster] = []
    ps = patches.of("CLUSTER")
    for c in clusters:
        context = GATEWAY if proxy.type is ProxyType.ROUTER else INBOUND if c.name.startswith("inbound|") else OUTBOUND
        removed = False
        for p in ps:
            if not _context_matches(p, context) or not _cluster_matches(c, p, inbound_hosts):
                continue
            if p.operation == "REMOVE":
                removed = True
                break
            if p.operation == "MERGE" and p.value is not None and not _merge_transport_socket(c, p.value):
                envoyproto.merge(c, p.value)
        if not removed:
            out.append(c)
    contexts = (GATEWAY,) if proxy.type is ProxyType.ROUTER else (OUTBOUND, INBOUND)
    for context in contexts:
        for p in ps:
            if p.operation != "ADD" or not _context_matches(p, context):
                continue
            if p.context == ANY and context not in (OUTBOUND, GATEWAY):
                continue
            out.append(p.fresh(cluster_pb2.Cluster))
    return out


__all__ = ["NO_PATCHES", "FilterRec", "Patch", "Patches", "compile_filter", "patch_clusters", "patch_listeners",
           "patch_route_config", "patch_route_configs", "patches_for", "proxy_version"]
