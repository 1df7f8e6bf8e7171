"""The CA: SPIFFE certificates from CSRs, refusals, persistence with 0600 keys, plugged-in roots, root rotation with
an overlap, bootstrap tokens, and that no key material leaks through repr or logs."""

from __future__ import annotations

import datetime
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshplane.security import (
    AuditTrail,
    CertificateAuthority,
    CsrRejected,
    InvalidIdentity,
    SpiffeId,
    TokenIssuer,
    TokenRejected,
    WorkloadKey,
)
from meshplane.security.ca import renewal_time


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


def _chain(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def _verifies(leaf: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(issuer)
        return True
    except Exception:
        return False


def test_identity_parse_and_format() -> None:
    sid = SpiffeId.parse("spiffe://cluster.local/ns/default/sa/sleep")
    assert sid == SpiffeId("cluster.local", "default", "sleep")
    assert sid.principal == "cluster.local/ns/default/sa/sleep"
    assert SpiffeId.parse(sid.principal) == sid
    for bad in ("spiffe://cluster.local/ns/default", "spiffe://x/ns/A/sa/b", "http://x/ns/a/sa/b/c"):
        with pytest.raises(InvalidIdentity):
            SpiffeId.parse(bad)


def test_sign_csr_issues_spiffe_certificate(tmp_path: Path) -> None:
    clock = FakeClock()
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", "cluster.local", clock=clock)
    sid = ca.identity("default", "sleep")
    key = WorkloadKey(sid)
    issued = ca.sign_csr(key.csr_pem(), sid)
    leaf, inter = _chain(issued.cert_chain_pem)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [sid.uri]
    assert leaf.not_valid_after_utc - clock.now == datetime.timedelta(hours=24)
    assert _verifies(leaf, inter) and _verifies(inter, _chain(issued.trust_bundle_pem)[0])
    assert key.public_key_matches(issued.cert_chain_pem)
    assert issued.renew_at == renewal_time(issued.not_before, issued.not_after)
    assert issued.not_before < issued.renew_at < issued.not_after
    short = ca.sign_csr(key.csr_pem(), sid, datetime.timedelta(seconds=30))
    assert short.not_after - clock.now == datetime.timedelta(seconds=30)


def test_csr_for_another_identity_is_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    victim = WorkloadKey(ca.identity("prod", "payments"))
    with pytest.raises(CsrRejected, match="payments"):
        ca.sign_csr(victim.csr_pem(), ca.identity("default", "sleep"))
    with pytest.raises(CsrRejected):
        ca.sign_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                    ca.identity("default", "sleep"))
    other_td = WorkloadKey(SpiffeId("evil.org", "default", "sleep"))
    with pytest.raises(CsrRejected):
        ca.sign_csr(other_td.csr_pem(), SpiffeId("evil.org", "default", "sleep"))


def test_persistence_keys_are_0600_and_reloaded(tmp_path: Path) -> None:
    d = tmp_path / "ca"
    ca = CertificateAuthority.load_or_create(d)
    for name in ("root-key.pem", "ca-key.pem"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    again = CertificateAuthority.load_or_create(d)
    assert again.root_pem == ca.root_pem and again.intermediate_pem == ca.intermediate_pem
    assert "PRIVATE" not in repr(ca)


def test_plugged_in_root_shared_by_two_control_planes(tmp_path: Path) -> None:
    shared = CertificateAuthority.load_or_create(tmp_path / "shared")
    cps = [CertificateAuthority.load_or_create(tmp_path / f"cp{i}", root_cert_file=tmp_path / "shared/root-cert.pem",
                                               root_key_file=tmp_path / "shared/root-key.pem") for i in (1, 2)]
    assert not (tmp_path / "cp1/root-key.pem").exists()
    assert cps[0].intermediate_pem != cps[1].intermediate_pem
    root = x509.load_pem_x509_certificate(shared.root_pem)
    for cp in cps:
        sid = cp.identity("default", "a")
        _, inter = _chain(cp.sign_csr(WorkloadKey(sid).csr_pem(), sid).cert_chain_pem)
        assert _verifies(inter, root)


def test_root_rotation_keeps_old_root_during_overlap(tmp_path: Path) -> None:
    clock = FakeClock()
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock)
    old_root = ca.root_pem
    ca.rotate_root(datetime.timedelta(hours=1))
    bundle = ca.trust_bundle_pem()
    assert ca.root_pem != old_root and old_root in bundle and ca.root_pem in bundle
    reloaded = CertificateAuthority.load_or_create(tmp_path / "ca", clock=clock)
    assert reloaded.trust_bundle_pem() == bundle
    sid = ca.identity("default", "a")
    _, inter = _chain(ca.sign_csr(WorkloadKey(sid).csr_pem(), sid).cert_chain_pem)
    assert _verifies(inter, x509.load_pem_x509_certificate(ca.root_pem))
    clock.now += datetime.timedelta(hours=2)
    assert ca.trust_bundle_pem() == ca.root_pem


def test_tokens_bind_namespace_and_service_account(tmp_path: Path) -> None:
    clock = FakeClock()
    issuer = TokenIssuer.load_or_create(tmp_path / "t", clock)
    assert stat.S_IMODE((tmp_path / "t/token-hmac.key").stat().st_mode) == 0o600
    tok = issuer.issue("default", "sleep", datetime.timedelta(minutes=5))
    assert issuer.verify(tok) == ("default", "sleep")
    head, payload, mac = tok.split(".")
    forged = payload.replace(payload[3], "A" if payload[3] != "A" else "B", 1)
    for bad in (f"{head}.{forged}.{mac}", "nonsense", tok + "x"):
        with pytest.raises(TokenRejected):
            issuer.verify(bad)
    other = TokenIssuer.load_or_create(tmp_path / "other", clock)
    with pytest.raises(TokenRejected):
        other.verify(tok)
    issuer.revoke(tok)
    with pytest.raises(TokenRejected, match="revoked"):
        issuer.verify(tok)
    tok2 = issuer.issue("default", "sleep", datetime.timedelta(minutes=5))
    clock.now += datetime.timedelta(minutes=6)
    with pytest.raises(TokenRejected, match="expired"):
        issuer.verify(tok2)


def test_keys_never_in_repr_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    trail = AuditTrail()
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    sid = ca.identity("default", "sleep")
    key = WorkloadKey(sid, ec.generate_private_key(ec.SECP256R1()))
    issued = ca.sign_csr(key.csr_pem(), sid)
    trail.record("certificate.issued", subject=str(sid), target=str(sid), details={"serial": str(issued.serial)})
    assert "PRIVATE" not in repr(key) and "PRIVATE" not in repr(issued) and "PRIVATE" not in repr(ca)
    secret = key.private_key_pem().decode().splitlines()[1]
    assert secret not in caplog.text and "PRIVATE KEY" not in caplog.text
    assert trail.to_json()["items"][0]["subject"] == sid.uri
