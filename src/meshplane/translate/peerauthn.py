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
from enum import StrEnum
from typing import Any

from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from meshplane.model.config import JSONObject
from meshplane.model.proxy import InboundPort, Proxy
from meshplane.model.resources import GroupResource
from meshplane.translate.common import sds_secret
from meshplane.translate.context import PushContext
from meshplane.translate.memo import Slot
from meshplane.translate.mesh import MeshSettings

PEER_AUTHENTICATIONS = GroupResource("security.istio.io", "peerauthentications")


class MtlsMode(StrEnum):
    STRICT = "STRICT"
    PERMISSIVE = "PERMISSIVE"
    DISABLE = "DISABLE"


def _meta(obj: JSONObject) -> tuple[str, str, str]:
    md = obj.get("metadata") or {}
    return str(md.get("namespace") or "default"), str(md.get("creationTimestamp") or ""), str(md.get("name") or "")


def _selector(spec: Mapping[str, Any]) -> Mapping[str, str] | None:
    sel = spec.get("selector")
    if not isinstance(sel, Mapping):
        return None
    labels = sel.get("matchLabels")
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) and labels else None


def selected_policies(ctx: PushContext, gr: GroupResource, proxy: Proxy) -> tuple[list[JSONObject], list[JSONObject],
                                                                                  list[JSONObject]]:
    """(mesh-level, namespace-level, workload-level) objects of ``gr`` that apply to ``proxy``, oldest first.
    Root-namespace objects with a selector are workload-level for every namespace, as in Istio."""
    mesh: list[JSONObject] = []
    ns: list[JSONObject] = []
    workload: list[JSONObject] = []
    root = ctx.mesh.root_namespace
    for obj in sorted((o.raw for o in ctx.config.of(gr)), key=_meta):
        namespace = _meta(obj)[0]
        if namespace not in (root, proxy.namespace):
            continue
        sel = _selector(obj.get("spec") or {})
        if sel is None:
            (ns if namespace == proxy.namespace and namespace != root else mesh).append(obj)
        elif all(proxy.labels.get(k) == v for k, v in sel.items()):
            workload.append(obj)
    return mesh, ns, workload


def _mode(raw: Any) -> MtlsMode | None:
    mode = str((raw or {}).get("mode") or "UNSET").upper() if isinstance(raw, Mapping) else "UNSET"
    return MtlsMode(mode) if mode in MtlsMode.__members__ else None


def _port_mode(spec: Mapping[str, Any], ports: Sequence[int]) -> MtlsMode | None:
    plm = spec.get("portLevelMtls")
    if not isinstance(plm, Mapping):
        return None
    for p in ports:
        m = _mode(plm.get(str(p), plm.get(p)))
        if m is not None:
            return m
    return None


# The effective inbound mTLS mode of a workload port: (namespace, labels, port, app port) -> mode.
_MODES: Slot[tuple[str, tuple[tuple[str, str], ...], int, int], MtlsMode] = Slot("peer-authentication")


def inbound_mtls_mode(proxy: Proxy, port: InboundPort, ctx: PushContext) -> MtlsMode:
    key = (proxy.namespace, tuple(sorted(proxy.labels.items())), port.port, port.app_port)
    hit = ctx.memo.get(_MODES, key)
    if hit is not None:
        return hit
    mode = MtlsMode.PERMISSIVE if ctx.mesh.inbound_mtls else MtlsMode.DISABLE
    mesh, ns, workload = selected_policies(ctx, PEER_AUTHENTICATIONS, proxy)
    for level in (mesh, ns, workload):
        if level:
            spec = level[0].get("spec") or {}
            m = _mode(spec.get("mtls"))
            if m is not None:
                mode = m
    if workload:
        # Istio keys portLevelMtls by the workload's (container) port: our app port; the sidecar port also counts.
        m = _port_mode(workload[0].get("spec") or {}, (port.app_port, port.port))
        if m is not None:
            mode = m
    return ctx.memo.put(_MODES, key, mode)


def downstream_tls(mesh: MeshSettings, http: bool) -> tls_pb2.DownstreamTlsContext:
    """Server side of ISTIO_MUTUAL: our certificate ``default`` and a client certificate that chains to ``ROOTCA``
    with a URI SAN in our trust domain."""
    tls = tls_pb2.DownstreamTlsContext()
    tls.require_client_certificate.value = True
    common = tls.common_tls_context
    common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_2
    common.tls_certificate_sds_secret_configs.append(sds_secret(mesh.workload_secret, mesh))
    combined = common.combined_validation_context
    combined.validation_context_sds_secret_config.CopyFrom(sds_secret(mesh.root_secret, mesh))
    combined.default_validation_context.match_typed_subject_alt_names.append(common_pb2.SubjectAltNameMatcher(
        san_type=common_pb2.SubjectAltNameMatcher.URI,
        matcher=string_pb2.StringMatcher(prefix=f"spiffe://{mesh.trust_domain}/")))
    if http:
        common.alpn_protocols.extend(["h2", "http/1.1"])
    return tls
