"""PeerAuthentication: which inbound ports require, accept or refuse mutual TLS, and the TLS they terminate.

Istio's precedence, most specific wins: the workload's policy (a ``selector`` matching its labels; its
``portLevelMtls`` for the port), then the namespace's policy (no selector), then the mesh policy (no selector, in
the root namespace); ``UNSET`` inherits from the level above. The oldest policy wins among several at one level.
Without any policy the mode follows ``MeshSettings.inbound_mtls`` (True: PERMISSIVE, Istio's default; False:
DISABLE, for meshes that run without the agent's SDS).

The modes become filter chains (see ``listeners``): STRICT one TLS chain (a plaintext client fails the
handshake), PERMISSIVE a TLS chain and a plaintext chain chosen by the TLS inspector, DISABLE a plaintext chain.
The TLS chain requires a client certificate that chains to ``ROOTCA`` and carries a SPIFFE id of our trust
domain; which identities may call is AuthorizationPolicy's business (``authz``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, NamedTuple, Protocol, TypeVar, cast

from meshplane.model import spec as istio
from meshplane.model.labels import labels_match
from meshplane.model.proxy import InboundPort, Proxy
from meshplane.model.resources import (
    PEER_AUTHENTICATIONS,
    GroupResource,
)
from meshplane.model.spec import ConfigObject, MutualTLSMode
from meshplane.translate.context import PushContext
from meshplane.translate.memo import Slot


class Selecting(Protocol):
    """A security spec that selects workloads by ``selector.matchLabels`` (the three security.istio.io kinds)."""

    @property
    def selector(self) -> istio.WorkloadSelector | None: ...


S = TypeVar("S", bound=Selecting)


class Selected(NamedTuple, Generic[S]):
    """The objects of one kind that apply to a workload, by level, each level oldest first."""

    mesh: tuple[ConfigObject[S], ...]
    namespace: tuple[ConfigObject[S], ...]
    workload: tuple[ConfigObject[S], ...]

    def all(self) -> tuple[ConfigObject[S], ...]:
        """Every level, mesh first (the order their rules contribute in)."""
        return (*self.mesh, *self.namespace, *self.workload)


def _match_labels(spec: Selecting) -> Mapping[str, str] | None:
    """The selector's labels, None when it selects nothing in particular (absent or empty ``matchLabels``)."""
    sel = spec.selector
    return sel.match_labels if sel is not None and sel.match_labels else None


def _by_namespace_age(obj: ConfigObject[S]) -> tuple[str, str, str]:
    return obj.meta.namespace, obj.meta.creation_timestamp, obj.meta.name


def selected_policies(ctx: PushContext, gr: GroupResource, proxy: Proxy, kind: type[S]) -> Selected[S]:
    """The objects of ``gr`` that apply to ``proxy``, by level, oldest first; ``kind`` is the collection's spec
    class (it types the result). Root-namespace objects with a selector are workload-level for every namespace,
    as in Istio."""
    mesh: list[ConfigObject[S]] = []
    ns: list[ConfigObject[S]] = []
    workload: list[ConfigObject[S]] = []
    root = ctx.mesh.root_namespace
    objs = cast("tuple[ConfigObject[S], ...]", ctx.config.of(gr))
    for obj in sorted(objs, key=_by_namespace_age):
        namespace = obj.meta.namespace
        if namespace not in (root, proxy.namespace):
            continue
        sel = _match_labels(obj.spec)
        if sel is None:
            (ns if namespace == proxy.namespace and namespace != root else mesh).append(obj)
        elif labels_match(sel, proxy.labels):
            workload.append(obj)
    return Selected(tuple(mesh), tuple(ns), tuple(workload))


def _mode(mtls: istio.PeerAuthenticationMutualTLS | None) -> MutualTLSMode | None:
    """The mode a setting imposes; None when it inherits (absent or ``UNSET``)."""
    mode = mtls.mode if mtls is not None else None
    return None if mode is None or mode is MutualTLSMode.UNSET else mode


def _port_mode(spec: istio.PeerAuthentication, ports: Sequence[int]) -> MutualTLSMode | None:
    for p in ports:
        m = _mode(spec.port_level_mtls.get(str(p)))
        if m is not None:
            return m
    return None


# The effective inbound mTLS mode of a workload port: (namespace, labels, port, app port) -> mode (never UNSET).
_MODES: Slot[tuple[str, tuple[tuple[str, str], ...], int, int], MutualTLSMode] = Slot("peer-authentication")


def inbound_mtls_mode(proxy: Proxy, port: InboundPort, ctx: PushContext) -> MutualTLSMode:
    """STRICT, PERMISSIVE or DISABLE for one inbound port of ``proxy`` (Istio's precedence, see the module)."""
    key = (proxy.namespace, tuple(sorted(proxy.labels.items())), port.port, port.app_port)
    return ctx.memo.get_or_build(_MODES, key, lambda: _effective_mode(proxy, port, ctx))


def _effective_mode(proxy: Proxy, port: InboundPort, ctx: PushContext) -> MutualTLSMode:
    mode = MutualTLSMode.PERMISSIVE if ctx.mesh.inbound_mtls else MutualTLSMode.DISABLE
    levels = selected_policies(ctx, PEER_AUTHENTICATIONS, proxy, istio.PeerAuthentication)
    for level in levels:
        if level:
            m = _mode(level[0].spec.mtls)
            if m is not None:
                mode = m
    if levels.workload:
        # Istio keys portLevelMtls by the workload's (container) port: our app port; the sidecar port also counts.
        m = _port_mode(levels.workload[0].spec, (port.app_port, port.port))
        if m is not None:
            mode = m
    return mode
