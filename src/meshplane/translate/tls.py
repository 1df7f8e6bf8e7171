"""TLS contexts, written once: the client side of a DestinationRule's ``tls`` (and auto mTLS), the server side of
mesh mTLS inbound and of a Gateway server's ``tls``.

Certificates come from the agent's SDS server (see ``common.sds_secret``): ``default`` (the workload certificate)
and ``ROOTCA`` (the mesh trust bundle) for ISTIO_MUTUAL, ``kubernetes://NAME`` and ``kubernetes://NAME-cacert`` for
a ``credentialName``; or from files the proxy reads (``clientCertificate``/``serverCertificate``, ``privateKey``,
``caCertificates``), as in Istio.

Also here: what an HTTP connection manager tells the application about the client certificate
(``x-forwarded-client-cert``, :func:`forward_client_cert`), since it is a decision about the TLS peer.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf.message import Message

from meshplane.model import spec as istio
from meshplane.translate.common import pack, sds_secret
from meshplane.translate.mesh import MeshSettings

TLS_SOCKET = "envoy.transport_sockets.tls"
# Auto mTLS: an endpoint labelled ``tlsMode: istio`` runs a sidecar; EDS carries that in this metadata namespace.
TLS_MODE_LABEL = "security.istio.io/tlsMode"
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"

_URI = common_pb2.SubjectAltNameMatcher.URI
_DNS = common_pb2.SubjectAltNameMatcher.DNS


def transport_socket(ctx: Message) -> base_pb2.TransportSocket:
    """The TLS transport socket of a cluster or filter chain carrying ``ctx`` (an Upstream/DownstreamTlsContext)."""
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(ctx))


def san_matchers(sans: Sequence[str]) -> list[common_pb2.SubjectAltNameMatcher]:
    """Exact SAN matchers: a ``spiffe://`` identity is a URI SAN, anything else a DNS SAN."""
    return [common_pb2.SubjectAltNameMatcher(san_type=_URI if san.startswith("spiffe://") else _DNS,
                                             matcher=string_pb2.StringMatcher(exact=san)) for san in sans]


def _mesh_identity(common: common_pb2.CommonTlsContext, mesh: MeshSettings,
                   peers: Sequence[common_pb2.SubjectAltNameMatcher]) -> None:
    """ISTIO_MUTUAL: present the workload certificate, accept peers that chain to the mesh root and match ``peers``."""
    common.tls_certificate_sds_secret_configs.append(sds_secret(mesh.workload_secret, mesh))
    combined = common.combined_validation_context
    combined.validation_context_sds_secret_config.CopyFrom(sds_secret(mesh.root_secret, mesh))
    combined.default_validation_context.match_typed_subject_alt_names.extend(peers)


def _certificate(common: common_pb2.CommonTlsContext, mesh: MeshSettings, credential: str | None,
                 cert_file: str | None, key_file: str | None) -> None:
    """Our certificate: the ``credentialName`` secret over SDS, else the certificate and key files (both needed)."""
    if credential:
        common.tls_certificate_sds_secret_configs.append(sds_secret(f"kubernetes://{credential}", mesh))
    elif cert_file and key_file:
        cert = common.tls_certificates.add()
        cert.certificate_chain.filename = cert_file
        cert.private_key.filename = key_file


def upstream_tls(tls: istio.ClientTLSSettings, *, mesh: MeshSettings, istio_sni: str, alpn: Sequence[str] = (),
                 endpoint_sans: Sequence[str] = ()) -> tls_pb2.UpstreamTlsContext | None:
    """The client side of a DestinationRule's ``tls``: None for DISABLE (or no mode); SIMPLE, MUTUAL (files or
    ``credentialName``) or ISTIO_MUTUAL (SNI ``istio_sni`` unless ``sni`` says otherwise, peers ``subjectAltNames``
    or else ``endpoint_sans``). ``alpn``: what the cluster's codec speaks (offering more would let the server pick
    a protocol the codec cannot talk). ``insecureSkipVerify`` leaves the server certificate unchecked."""
    mode = tls.mode or istio.ClientTLSMode.DISABLE
    if mode is istio.ClientTLSMode.DISABLE:
        return None
    ctx = tls_pb2.UpstreamTlsContext()
    common = ctx.common_tls_context
    common.alpn_protocols.extend(alpn)
    sans = tls.subject_alt_names
    if mode is istio.ClientTLSMode.ISTIO_MUTUAL:
        ctx.sni = tls.sni or istio_sni
        _mesh_identity(common, mesh, san_matchers(sans or endpoint_sans))
        return ctx
    if tls.sni:
        ctx.sni = tls.sni
    cred = tls.credential_name
    if mode is istio.ClientTLSMode.MUTUAL:
        _certificate(common, mesh, cred, tls.client_certificate, tls.private_key)
    if tls.insecure_skip_verify:
        return ctx
    if cred:
        combined = common.combined_validation_context
        combined.validation_context_sds_secret_config.CopyFrom(sds_secret(f"kubernetes://{cred}-cacert", mesh))
        combined.default_validation_context.match_typed_subject_alt_names.extend(san_matchers(sans))
    elif tls.ca_certificates:
        common.validation_context.trusted_ca.filename = tls.ca_certificates
        common.validation_context.match_typed_subject_alt_names.extend(san_matchers(sans))
    return ctx


def mesh_inbound_tls(mesh: MeshSettings, *, http: bool) -> tls_pb2.DownstreamTlsContext:
    """The server side of ISTIO_MUTUAL (a sidecar's inbound chains): our certificate ``default``, TLS 1.2 or
    newer, and a client certificate that chains to ``ROOTCA`` with a URI SAN in our trust domain."""
    ctx = tls_pb2.DownstreamTlsContext()
    ctx.require_client_certificate.value = True
    common = ctx.common_tls_context
    common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_2
    _mesh_identity(common, mesh, [common_pb2.SubjectAltNameMatcher(
        san_type=_URI, matcher=string_pb2.StringMatcher(prefix=f"spiffe://{mesh.trust_domain}/"))])
    if http:
        common.alpn_protocols.extend(["h2", "http/1.1"])
    return ctx


def gateway_server_tls(tls: istio.ServerTLSSettings | None, mesh: MeshSettings,
                       alpn: Sequence[str] = ()) -> tls_pb2.DownstreamTlsContext:
    """The server side of a Gateway server's ``tls`` (mode SIMPLE when unset): ISTIO_MUTUAL with the workload
    certificate and ``ROOTCA``; otherwise the ``credentialName`` secret or the certificate files, and for MUTUAL
    (a client certificate required) and OPTIONAL_MUTUAL (asked for) the ``-cacert`` secret or ``caCertificates``."""
    tls = tls or istio.ServerTLSSettings()
    mode = tls.mode or istio.ServerTLSMode.SIMPLE
    ctx = tls_pb2.DownstreamTlsContext()
    common = ctx.common_tls_context
    common.alpn_protocols.extend(alpn)
    if mode is istio.ServerTLSMode.ISTIO_MUTUAL:
        common.tls_certificate_sds_secret_configs.append(sds_secret(mesh.workload_secret, mesh))
        common.validation_context_sds_secret_config.CopyFrom(sds_secret(mesh.root_secret, mesh))
        ctx.require_client_certificate.value = True
        return ctx
    cred = tls.credential_name
    _certificate(common, mesh, cred, tls.server_certificate, tls.private_key)
    if mode in (istio.ServerTLSMode.MUTUAL, istio.ServerTLSMode.OPTIONAL_MUTUAL):
        ctx.require_client_certificate.value = mode is istio.ServerTLSMode.MUTUAL
        if cred:
            common.validation_context_sds_secret_config.CopyFrom(sds_secret(f"kubernetes://{cred}-cacert", mesh))
        elif tls.ca_certificates:
            common.validation_context.trusted_ca.filename = tls.ca_certificates
    return ctx


_HCM = hcm_pb2.HttpConnectionManager


def forward_client_cert(hcm: hcm_pb2.HttpConnectionManager, *, sidecar_inbound: bool = False,
                        gateway: bool = False) -> None:
    """``x-forwarded-client-cert`` (XFCC) handling of one HTTP connection manager, Istio's defaults:

    * a sidecar's inbound chains: APPEND_FORWARD with the current client's Subject, URI and DNS SANs, so the
      application sees ``By=<our SPIFFE id>;Hash=<sha256 of the client certificate>;Subject="";URI=<the
      client's SPIFFE id>`` for an mTLS request. Envoy removes the header of a request that did not arrive
      over mTLS (a plaintext client of a PERMISSIVE or DISABLE port cannot forge one);
    * a gateway: SANITIZE_SET, the edge: whatever the client sent is dropped and only the details of the
      certificate the client presented to the gateway (with the certificate itself) are set;
    * everything else (a sidecar's outbound side): SANITIZE, Envoy's default: an application cannot hand a
      forged XFCC to its sidecar to forward.
    """
    if gateway:
        hcm.forward_client_cert_details = _HCM.SANITIZE_SET
        details = hcm.set_current_client_cert_details
        details.subject.value = True
        details.cert = details.uri = details.dns = True
    elif sidecar_inbound:
        hcm.forward_client_cert_details = _HCM.APPEND_FORWARD
        details = hcm.set_current_client_cert_details
        details.subject.value = True
        details.uri = details.dns = True
    else:
        hcm.forward_client_cert_details = _HCM.SANITIZE
