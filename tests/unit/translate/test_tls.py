"""TLS contexts (``tls``): the client side of DestinationRule ``tls`` modes, the server side of mesh mTLS and of
Gateway server ``tls`` modes; what each HTTP connection manager does with ``x-forwarded-client-cert``."""

from __future__ import annotations

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from meshplane.model import spec as istio
from meshplane.translate import MeshSettings
from meshplane.translate.filters import http_connection_manager
from meshplane.translate.tls import (
    gateway_server_tls,
    mesh_inbound_tls,
    san_matchers,
    transport_socket,
    upstream_tls,
)

MESH = MeshSettings(trust_domain="example.org")
C = istio.ClientTLSMode
S = istio.ServerTLSMode
SNI = "outbound_.80_._.svc.default.svc.cluster.local"


def _up(mode: istio.ClientTLSMode | None = None, **kw: object) -> tls_pb2.UpstreamTlsContext | None:
    return upstream_tls(istio.ClientTLSSettings(mode=mode, **kw), mesh=MESH, istio_sni=SNI,  # type: ignore[arg-type]
                        alpn=["http/1.1"], endpoint_sans=["spiffe://example.org/ns/default/sa/svc"])


def _sans(matchers: object) -> list[tuple[int, str]]:
    return [(m.san_type, m.matcher.exact) for m in matchers]  # type: ignore[attr-defined]


def test_disable_or_no_mode_is_plaintext() -> None:
    assert _up(C.DISABLE) is None
    assert _up() is None


def test_istio_mutual_uses_the_mesh_identity() -> None:
    t = _up(C.ISTIO_MUTUAL)
    assert t is not None and t.sni == SNI
    common = t.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    assert common.combined_validation_context.validation_context_sds_secret_config.name == "ROOTCA"
    assert _sans(common.combined_validation_context.default_validation_context.match_typed_subject_alt_names) == [
        (common_pb2.SubjectAltNameMatcher.URI, "spiffe://example.org/ns/default/sa/svc")]
    assert list(common.alpn_protocols) == ["http/1.1"]
    own = _up(C.ISTIO_MUTUAL, sni="own.example", subject_alt_names=("spiffe://example.org/ns/x/sa/y",))
    assert own is not None and own.sni == "own.example"
    assert _sans(own.common_tls_context.combined_validation_context.default_validation_context
                 .match_typed_subject_alt_names) == [(common_pb2.SubjectAltNameMatcher.URI,
                                                      "spiffe://example.org/ns/x/sa/y")]


def test_simple_with_ca_file_sni_and_sans() -> None:
    t = _up(C.SIMPLE, sni="api.example.com", ca_certificates="/etc/ca.pem", subject_alt_names=("api.example.com",))
    assert t is not None and t.sni == "api.example.com"
    vc = t.common_tls_context.validation_context
    assert vc.trusted_ca.filename == "/etc/ca.pem"
    assert _sans(vc.match_typed_subject_alt_names) == [(common_pb2.SubjectAltNameMatcher.DNS, "api.example.com")]
    assert not t.common_tls_context.tls_certificates  # SIMPLE presents no client certificate


def test_mutual_with_files_or_credential_name() -> None:
    files = _up(C.MUTUAL, client_certificate="/c.pem", private_key="/k.pem", ca_certificates="/ca.pem")
    assert files is not None
    cert = files.common_tls_context.tls_certificates[0]
    assert (cert.certificate_chain.filename, cert.private_key.filename) == ("/c.pem", "/k.pem")
    cred = _up(C.MUTUAL, credential_name="cred", subject_alt_names=("a.example",))
    assert cred is not None
    common = cred.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["kubernetes://cred"]
    assert common.combined_validation_context.validation_context_sds_secret_config.name == "kubernetes://cred-cacert"
    assert len(common.combined_validation_context.default_validation_context.match_typed_subject_alt_names) == 1
    only_cert = _up(C.MUTUAL, client_certificate="/c.pem")  # a certificate without its key is not presented
    assert only_cert is not None and not only_cert.common_tls_context.tls_certificates


def test_insecure_skip_verify_checks_nothing() -> None:
    t = _up(C.SIMPLE, ca_certificates="/ca.pem", insecure_skip_verify=True)
    assert t is not None
    assert not t.common_tls_context.HasField("validation_context")
    assert not t.common_tls_context.HasField("combined_validation_context")


def test_mesh_inbound_requires_a_mesh_client_certificate() -> None:
    t = mesh_inbound_tls(MESH, http=True)
    assert t.require_client_certificate.value
    common = t.common_tls_context
    assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["default"]
    (m,) = common.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    assert (m.san_type, m.matcher.prefix) == (common_pb2.SubjectAltNameMatcher.URI, "spiffe://example.org/")
    assert list(common.alpn_protocols) == ["h2", "http/1.1"]
    assert not mesh_inbound_tls(MESH, http=False).common_tls_context.alpn_protocols


def test_gateway_server_modes() -> None:
    simple = gateway_server_tls(istio.ServerTLSSettings(credential_name="gw"), MESH, ["h2"])
    assert [s.name for s in simple.common_tls_context.tls_certificate_sds_secret_configs] == ["kubernetes://gw"]
    assert not simple.require_client_certificate.value and list(simple.common_tls_context.alpn_protocols) == ["h2"]
    files = gateway_server_tls(istio.ServerTLSSettings(mode=S.MUTUAL, server_certificate="/s.pem",
                                                       private_key="/k.pem", ca_certificates="/ca.pem"), MESH)
    assert files.require_client_certificate.value
    assert files.common_tls_context.tls_certificates[0].certificate_chain.filename == "/s.pem"
    assert files.common_tls_context.validation_context.trusted_ca.filename == "/ca.pem"
    optional = gateway_server_tls(istio.ServerTLSSettings(mode=S.OPTIONAL_MUTUAL, credential_name="gw"), MESH)
    assert optional.HasField("require_client_certificate") and not optional.require_client_certificate.value
    assert optional.common_tls_context.validation_context_sds_secret_config.name == "kubernetes://gw-cacert"
    mesh = gateway_server_tls(istio.ServerTLSSettings(mode=S.ISTIO_MUTUAL), MESH)
    assert mesh.require_client_certificate.value
    assert mesh.common_tls_context.validation_context_sds_secret_config.name == "ROOTCA"
    bare = gateway_server_tls(None, MESH)  # SIMPLE with nothing to present
    assert not bare.HasField("require_client_certificate") and bare.common_tls_context.ByteSize() == 0


def test_san_matchers_and_transport_socket() -> None:
    assert _sans(san_matchers(["spiffe://td/ns/a/sa/b", "a.example"])) == [
        (common_pb2.SubjectAltNameMatcher.URI, "spiffe://td/ns/a/sa/b"),
        (common_pb2.SubjectAltNameMatcher.DNS, "a.example")]
    ts = transport_socket(mesh_inbound_tls(MESH, http=False))
    back = tls_pb2.DownstreamTlsContext()
    assert ts.name == "envoy.transport_sockets.tls" and ts.typed_config.Unpack(back)
    assert back == mesh_inbound_tls(MESH, http=False)


def _hcm(**kw: bool) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    assert http_connection_manager("x", rds="r", **kw).typed_config.Unpack(hcm)
    return hcm


def test_forward_client_cert_by_role() -> None:
    """Istio's defaults: sidecar inbound APPEND_FORWARD (subject, URI, DNS), gateway SANITIZE_SET (also the
    certificate), sidecar outbound SANITIZE."""
    H = hcm_pb2.HttpConnectionManager
    inbound = _hcm(sidecar_inbound=True)
    assert inbound.forward_client_cert_details == H.APPEND_FORWARD
    d = inbound.set_current_client_cert_details
    assert (d.subject.value, d.uri, d.dns, d.cert, d.chain) == (True, True, True, False, False)
    gw = _hcm(gateway=True)
    assert gw.forward_client_cert_details == H.SANITIZE_SET
    d = gw.set_current_client_cert_details
    assert (d.subject.value, d.uri, d.dns, d.cert, d.chain) == (True, True, True, True, False)
    outbound = _hcm()
    assert outbound.forward_client_cert_details == H.SANITIZE and not outbound.HasField(
        "set_current_client_cert_details")
