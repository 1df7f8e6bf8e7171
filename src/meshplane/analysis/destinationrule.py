"""DestinationRule analyzers: the host must exist, TLS must verify the server, mTLS must agree with the server.

IST0128/IST0129 are Istio's ``destinationrule/ca-certificates.go``: SIMPLE or MUTUAL TLS without
``caCertificates`` (and without a ``credentialName`` on a workload-selected rule) does not verify the server's
certificate. IST0113 (retired by Istio, checked here) is a DestinationRule that turns mTLS off towards workloads
whose PeerAuthentication is STRICT (every request is then refused), or forces ISTIO_MUTUAL towards workloads whose
PeerAuthentication is DISABLE.
"""

from __future__ import annotations

from typing import Any

from meshplane.analysis import messages as m
from meshplane.analysis.context import Context
from meshplane.model.names import Hostname
from meshplane.model.resources import DESTINATION_RULES, PEER_AUTHENTICATIONS
from meshplane.model.spec import ClientTLSMode, ClientTLSSettings, ConfigObject, DestinationRule, MutualTLSMode

DR = ConfigObject[DestinationRule]
_VERIFYING = (ClientTLSMode.SIMPLE, ClientTLSMode.MUTUAL)


def _unverified(tls: ClientTLSSettings | None, selected: bool) -> str | None:
    """The mode when ``tls`` sets up TLS without verifying the server, else None."""
    if tls is None or tls.mode not in _VERIFYING or tls.ca_certificates:
        return None
    if tls.credential_name and selected:
        return None
    return str(tls.mode.value) if tls.mode is not None else None


def check_ca_certificates(ctx: Context, obj: DR) -> None:
    spec = obj.spec
    selected = spec.workload_selector is not None
    tp = spec.traffic_policy
    if tp is None:
        return
    mode = _unverified(tp.tls, selected)
    if mode is not None:
        ctx.report(obj, m.NO_SERVER_CERT_VERIFICATION_DR, obj.meta.key, obj.meta.namespace, mode, spec.host or "")
    for pls in tp.port_level_settings:
        mode = _unverified(pls.tls, selected)
        if mode is not None:
            port = f"number:{pls.port.number}" if pls.port is not None and pls.port.number is not None else ""
            ctx.report(obj, m.NO_SERVER_CERT_VERIFICATION_PORT, obj.meta.key, obj.meta.namespace, mode,
                       spec.host or "", port)


def check_host(ctx: Context, obj: DR) -> None:
    host = obj.spec.host or ""
    if host and not ctx.service_exists(host, obj.meta.namespace):
        ctx.report(obj, m.REFERENCED_RESOURCE_NOT_FOUND, "host", host)


def _host_namespace(ctx: Context, fqdn: str) -> str | None:
    svc = ctx.registry.services.get(Hostname(fqdn))
    if svc is not None:
        return str(svc.namespace)
    parts = fqdn.split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[1]
    return None


def _namespace_policy(ctx: Context, namespace: str, root: str) -> tuple[ConfigObject[Any], MutualTLSMode] | None:
    """The PeerAuthentication that sets mTLS for all of ``namespace``'s workloads: its own namespace-wide one,
    else the mesh-wide one in the root namespace (Istio's precedence)."""
    for ns in (namespace, root):
        for pa in ctx.of(PEER_AUTHENTICATIONS):
            sel = pa.spec.selector
            if pa.meta.namespace != ns or (sel is not None and sel.match_labels):
                continue
            mode = pa.spec.mtls.mode if pa.spec.mtls is not None else None
            if mode is not None and mode is not MutualTLSMode.UNSET:
                return pa, mode
    return None


def check_mtls_conflict(ctx: Context, obj: DR, root: str) -> None:
    """IST0113."""
    tp = obj.spec.traffic_policy
    mode = tp.tls.mode if tp is not None and tp.tls is not None else None
    if mode not in (ClientTLSMode.DISABLE, ClientTLSMode.ISTIO_MUTUAL):
        return
    host = ctx.resolve(obj.spec.host or "", obj.meta.namespace)
    ns = _host_namespace(ctx, host)
    if ns is None:
        return
    found = _namespace_policy(ctx, ns, root)
    if found is None:
        return
    pa, pa_mode = found
    if (mode is ClientTLSMode.DISABLE and pa_mode is MutualTLSMode.STRICT) or (
            mode is ClientTLSMode.ISTIO_MUTUAL and pa_mode is MutualTLSMode.DISABLE):
        ctx.report(obj, m.MTLS_POLICY_CONFLICT, host, obj.meta.key, mode is ClientTLSMode.ISTIO_MUTUAL,
                   pa.meta.key, str(pa_mode.value))


def analyze(ctx: Context, root_namespace: str) -> None:
    for obj in ctx.of(DESTINATION_RULES):
        check_host(ctx, obj)
        check_ca_certificates(ctx, obj)
        check_mtls_conflict(ctx, obj, root_namespace)


__all__ = ["analyze"]
