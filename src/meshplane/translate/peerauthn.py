"""PeerAuthentication: which inbound ports require, accept or refuse mutual TLS, and what clients originate.

:func:`compose_peer_policy` is Istio's ComposePeerAuthentication, most specific wins:

=========  ===================================================================  =====================
level      which objects                                                        among several
=========  ===================================================================  =====================
mesh       the root namespace (``MeshSettings.root_namespace``), no selector    the oldest
namespace  the workload's namespace (not the root), no selector                 the oldest
workload   the workload's namespace (not the root), ``selector`` matching it    the oldest
port       ``portLevelMtls`` of the chosen workload policy, by workload port    -
=========  ===================================================================  =====================

``UNSET`` (or no ``mtls``) inherits from the level above; without any setting the mode follows
``MeshSettings.inbound_mtls`` (True: PERMISSIVE, Istio's default; False: DISABLE, for meshes that run without
the agent's SDS). "Oldest" is the earliest ``creationTimestamp``, then the name. As in Istio, a policy with a
selector in the root namespace applies to nothing (it is not mesh-wide and not workload-level), and
``portLevelMtls`` is keyed by the port the workload serves on (Kubernetes' ``targetPort``: the endpoint's port,
the sidecar's inbound port), never the service port.

The server side: the modes become filter chains (see ``listeners``): STRICT one TLS chain (a plaintext client fails
the handshake), PERMISSIVE a TLS chain and a plaintext chain chosen by the TLS inspector, DISABLE a plaintext
chain. The TLS chain requires a client certificate that chains to ``ROOTCA`` and carries a SPIFFE id of our trust
domain; which identities may call is AuthorizationPolicy's business (``authz``).

The client side (auto mTLS, ``endpoints``): a client originates mTLS to an endpoint with a sidecar only if that
endpoint's composed mode for the port it is reached on is not DISABLE (as Istio's EDS ``mtlsChecker`` does), so
the client follows the server's chains exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Generic, NamedTuple, Protocol, TypeVar, cast

from meshplane.model import spec as istio
from meshplane.model.labels import TargetRef, labels_match, target_refs, targets_gateway_proxy
from meshplane.model.proxy import InboundPort, Proxy
from meshplane.model.resources import (
    PEER_AUTHENTICATIONS,
    GroupResource,
)
from meshplane.model.service import Endpoint
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


def _target_refs(spec: Selecting) -> tuple[TargetRef, ...]:
    """The policy's ``targetRef`` and ``targetRefs`` (PeerAuthentication has neither)."""
    return target_refs(getattr(spec, "target_ref", None), getattr(spec, "target_refs", ()))


def _by_namespace_age(obj: ConfigObject[S]) -> tuple[str, str, str]:
    return obj.meta.namespace, obj.meta.creation_timestamp, obj.meta.name


def selected_policies(ctx: PushContext, gr: GroupResource, proxy: Proxy, kind: type[S]) -> Selected[S]:
    """The objects of ``gr`` that apply to ``proxy``, by level, oldest first; ``kind`` is the collection's spec
    class (it types the result). Root-namespace objects with a selector are workload-level for every namespace,
    as in Istio for AuthorizationPolicy and RequestAuthentication (PeerAuthentication composes differently: see
    :func:`compose_peer_policy`)."""
    mesh: list[ConfigObject[S]] = []
    ns: list[ConfigObject[S]] = []
    workload: list[ConfigObject[S]] = []
    root = ctx.mesh.root_namespace
    objs = cast("tuple[ConfigObject[S], ...]", ctx.config.of(gr))
    for obj in sorted(objs, key=_by_namespace_age):
        namespace = obj.meta.namespace
        if namespace not in (root, proxy.namespace):
            continue
        refs = _target_refs(obj.spec)
        if refs:
            # targetRefs instead of a selector: a Gateway API Gateway's proxies (workload level); a Service or
            # ServiceEntry target is for waypoints (Istio's ambient mode, which this mesh does not run): no
            # sidecar. Never the namespace: that would put a gateway's policy on every workload there.
            if any(targets_gateway_proxy(r, namespace, proxy.namespace, proxy.labels) for r in refs):
                workload.append(obj)
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


class PeerPolicy(NamedTuple):
    """The composed PeerAuthentication of one workload: its mode and the modes of the ports ``portLevelMtls``
    names (none of them UNSET)."""

    mode: MutualTLSMode
    per_port: Mapping[int, MutualTLSMode]

    def mode_for(self, port: int) -> MutualTLSMode:
        """The mode of workload port ``port``."""
        return self.per_port.get(port, self.mode)


def _by_age(obj: ConfigObject[istio.PeerAuthentication]) -> tuple[str, str]:
    return obj.meta.creation_timestamp, obj.meta.name


def compose_peer_policy(root_namespace: str, policies: Iterable[ConfigObject[istio.PeerAuthentication]],
                        namespace: str, labels: Mapping[str, str], *,
                        default: MutualTLSMode = MutualTLSMode.PERMISSIVE) -> PeerPolicy:
    """The policy of the workload with ``labels`` in ``namespace`` among ``policies`` (any namespaces), by the
    precedence table of the module; ``default`` when nothing says otherwise."""
    mesh: ConfigObject[istio.PeerAuthentication] | None = None
    ns: ConfigObject[istio.PeerAuthentication] | None = None
    workload: ConfigObject[istio.PeerAuthentication] | None = None
    for obj in policies:
        where = obj.meta.namespace
        sel = _match_labels(obj.spec)
        if sel is None:
            if where == root_namespace:
                if mesh is None or _by_age(obj) < _by_age(mesh):
                    mesh = obj
            elif where == namespace and (ns is None or _by_age(obj) < _by_age(ns)):
                ns = obj
        elif (where == namespace and where != root_namespace and labels_match(sel, labels)
              and (workload is None or _by_age(obj) < _by_age(workload))):
            workload = obj
    mode = default
    for level in (mesh, ns, workload):
        m = _mode(level.spec.mtls) if level is not None else None
        if m is not None:
            mode = m
    per_port: dict[int, MutualTLSMode] = {}
    if workload is not None:
        for key, setting in workload.spec.port_level_mtls.items():
            if key.isdigit():  # admission refuses other keys
                per_port[int(key)] = _mode(setting) or mode
    return PeerPolicy(mode, per_port)


# The composed policy of a workload: (namespace, labels) -> policy. Config only: kept across endpoint pushes.
_POLICIES: Slot[tuple[str, tuple[tuple[str, str], ...]], PeerPolicy] = Slot("peer-authentication",
                                                                           endpoint_free=True)


def peer_policy(ctx: PushContext, namespace: str, labels: Mapping[str, str]) -> PeerPolicy:
    """The composed PeerAuthentication of the workload with ``labels`` in ``namespace`` (memoized)."""
    default = MutualTLSMode.PERMISSIVE if ctx.mesh.inbound_mtls else MutualTLSMode.DISABLE

    def build() -> PeerPolicy:
        objs = cast("tuple[ConfigObject[istio.PeerAuthentication], ...]", ctx.config.of(PEER_AUTHENTICATIONS))
        return compose_peer_policy(ctx.mesh.root_namespace, objs, namespace, labels, default=default)

    return ctx.memo.get_or_build(_POLICIES, (namespace, tuple(sorted(labels.items()))), build)


def inbound_mtls_mode(proxy: Proxy, port: InboundPort, ctx: PushContext) -> MutualTLSMode:
    """STRICT, PERMISSIVE or DISABLE for one inbound port of ``proxy``: its workload port is ``port.port`` (where
    clients connect; ``app_port`` is only where the sidecar forwards to)."""
    return peer_policy(ctx, proxy.namespace, proxy.labels).mode_for(port.port)


def endpoint_mtls_mode(ctx: PushContext, ep: Endpoint, namespace: str, port: int) -> MutualTLSMode:
    """The mode the sidecar of endpoint ``ep`` (of a workload in ``namespace``) has on workload port ``port``:
    what its inbound chains accept, so what a client may originate (see the module)."""
    return peer_policy(ctx, ep.namespace or namespace, ep.labels).mode_for(port)
