"""Istio's WasmPlugin (extensions.istio.io/v1alpha1) as an ``envoy.filters.http.wasm`` filter in the proxies' HTTP
filter chains. Pure.

Why a step of its own, before the EnvoyFilter patches: Istio places WasmPlugins when it builds the filter chain (so
an EnvoyFilter can still patch around them), at a position set by ``phase`` that depends on which filters the chain
has: AUTHN before the authentication filters (``jwt_authn``), AUTHZ before the authorization filters (RBAC,
ext_authz), STATS after those (all three before fault, CORS and the rest when the chain has no security
filters), and no phase just before the router. Within a phase
a higher ``priority`` runs first, then older objects, then by name.

Which proxies: the plugins of the config root namespace and of the proxy's namespace whose ``selector.matchLabels``
match it, or whose ``targetRefs`` name its Gateway (``gateway.networking.k8s.io`` ``Gateway``); which traffic:
``match[]`` (any entry): ``mode`` CLIENT is a sidecar's outbound listeners and gateways, SERVER a sidecar's inbound
ones, otherwise both; ``ports`` the listener's port.

The filter: the module is Envoy's to read (``url: file:///path`` becomes a local data source; admission refused any
other scheme), ``pluginConfig`` is handed over as JSON (a ``StringValue``, as Istio does), ``pluginName`` is the root
id, ``vmConfig.env`` the VM's environment, ``failStrategy`` the failure policy. Filter name: ``<namespace>.<name>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as http_wasm_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import wrappers_pb2

from meshplane.model import spec as istio
from meshplane.model.labels import labels_match, target_refs, targets_gateway_proxy
from meshplane.model.proxy import Proxy, ProxyType
from meshplane.model.spec import ConfigObject
from meshplane.model.wasm import file_path
from meshplane.translate.common import pack

Plugin = ConfigObject[istio.WasmPlugin]

HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
_AUTHN = frozenset({"envoy.filters.http.jwt_authn"})
_AUTHZ = frozenset({"envoy.filters.http.rbac", "envoy.filters.http.ext_authz"})
_AFTER_SECURITY = frozenset({"envoy.filters.http.fault"})
_PHASES = ("AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE")


def _attaches(obj: Plugin, proxy: Proxy, root: str) -> bool:
    ns = obj.meta.namespace
    if ns not in (proxy.namespace, root):
        return False
    spec = obj.spec
    refs = target_refs(spec.target_ref, spec.target_refs)
    if refs:
        return any(targets_gateway_proxy(r, ns, proxy.namespace, proxy.labels) for r in refs)
    labels = spec.selector.match_labels if spec.selector is not None else {}
    return labels_match(labels, proxy.labels)


def plugins_for(proxy: Proxy, plugins: Sequence[Plugin], root: str) -> list[Plugin]:
    """The plugins of ``proxy``, in the order they run within a phase."""
    out = [p for p in plugins if _attaches(p, proxy, root) and file_path(p.spec.url or "") is not None
           and (p.spec.type is None or p.spec.type.value != "NETWORK")]
    return sorted(out, key=lambda p: (-(p.spec.priority or 0), p.meta.creation_timestamp, p.meta.namespace,
                                      p.meta.name))


def _phase(p: Plugin) -> str:
    return p.spec.phase.value if p.spec.phase is not None else "UNSPECIFIED_PHASE"


def _applies(p: Plugin, side: str, port: int) -> bool:
    """``side``: CLIENT (a sidecar's outbound, a gateway) or SERVER (a sidecar's inbound)."""
    if not p.spec.match:
        return True
    for m in p.spec.match:
        mode = m.mode.value if m.mode is not None else "UNDEFINED"
        if mode in ("CLIENT", "SERVER") and mode != side:
            continue
        if m.ports and port not in {pt.number for pt in m.ports}:
            continue
        return True
    return False


def wasm_filter(p: Plugin) -> hcm_pb2.HttpFilter:
    spec = p.spec
    path = file_path(spec.url or "") or ""
    vm = wasm_pb2.VmConfig(vm_id=f"{p.meta.namespace}.{p.meta.name}", runtime="envoy.wasm.runtime.v8",
                           code=base_pb2.AsyncDataSource(local=base_pb2.DataSource(filename=path)))
    if spec.vm_config is not None and spec.vm_config.env:
        env = vm.environment_variables
        for e in spec.vm_config.env:
            if e.value_from is not None and e.value_from.value == "HOST":
                env.host_env_keys.append(e.name or "")
            else:
                env.key_values[e.name or ""] = e.value or ""
    cfg = wasm_pb2.PluginConfig(name=f"{p.meta.namespace}.{p.meta.name}", root_id=spec.plugin_name or "",
                                vm_config=vm)
    if spec.plugin_config is not None:
        cfg.configuration.CopyFrom(pack(wrappers_pb2.StringValue(
            value=json.dumps(spec.plugin_config, separators=(",", ":"), sort_keys=True))))
    strategy = spec.fail_strategy.value if spec.fail_strategy is not None else "FAIL_CLOSE"
    cfg.failure_policy = {"FAIL_OPEN": wasm_pb2.FAIL_OPEN, "FAIL_RELOAD": wasm_pb2.FAIL_RELOAD}.get(
        strategy, wasm_pb2.FAIL_CLOSED)
    return hcm_pb2.HttpFilter(name=f"{p.meta.namespace}.{p.meta.name}",
                              typed_config=pack(http_wasm_pb2.Wasm(config=cfg)))


def _position(names: list[str], phase: str) -> int:
    """Where a plugin of ``phase`` goes in a chain of these filter names (before its anchor)."""
    router = names.index(ROUTER) if ROUTER in names else len(names)

    def first(anchors: frozenset[str], fallback: int) -> int:
        return next((i for i, n in enumerate(names) if n in anchors), fallback)

    # Without authentication/authorization filters, the security phases sit where those would be: before the
    # request-changing filters (fault first), as Istio's come before them.
    security_end = first(_AFTER_SECURITY, router)
    # STATS: after the last authentication/authorization filter (there are no stats filters: meshplane's metrics
    # come from access logs).
    stats = max((i + 1 for i, n in enumerate(names) if n in _AUTHN | _AUTHZ), default=security_end)
    if phase == "AUTHN":
        return first(_AUTHN, first(_AUTHZ, stats))
    if phase == "AUTHZ":
        return first(_AUTHZ, stats)
    if phase == "STATS":
        return stats
    return router


def insert_plugins(listeners: Sequence[listener_pb2.Listener], proxy: Proxy,
                   plugins: Sequence[Plugin]) -> list[listener_pb2.Listener]:
    """``listeners`` (owned by the caller: changed in place) with the plugins in their HTTP filter chains."""
    if not plugins:
        return list(listeners)
    filters = {p.meta.key: wasm_filter(p) for p in plugins}
    for lst in listeners:
        if proxy.type is ProxyType.ROUTER:
            side = "CLIENT"
        else:
            side = "SERVER" if lst.traffic_direction == base_pb2.INBOUND else "CLIENT"
        sa = lst.address.socket_address if lst.HasField("address") else None
        port = sa.port_value if sa is not None else 0
        chains = [*lst.filter_chains, *([lst.default_filter_chain] if lst.HasField("default_filter_chain") else [])]
        for fc in chains:
            for f in fc.filters:
                if f.name != HCM or not f.HasField("typed_config"):
                    continue
                chain_port = fc.filter_chain_match.destination_port.value or port
                chosen = [p for p in plugins if _applies(p, side, chain_port)]
                if not chosen:
                    continue
                hcm = hcm_pb2.HttpConnectionManager()
                if not f.typed_config.Unpack(hcm):
                    continue
                items = list(hcm.http_filters)
                for phase in _PHASES:
                    group = [filters[p.meta.key] for p in chosen if _phase(p) == phase]
                    if group:
                        at = _position([h.name for h in items], phase)
                        items[at:at] = group
                del hcm.http_filters[:]
                hcm.http_filters.extend(items)
                f.typed_config.CopyFrom(pack(hcm))
    return list(listeners)


__all__ = ["insert_plugins", "plugins_for", "wasm_filter"]
