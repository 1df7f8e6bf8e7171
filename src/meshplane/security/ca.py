"""The mesh certificate authority: a root, an intermediate that signs workload certificates, and the trust bundle.

Why a root plus an intermediate: the root key can live elsewhere (plugged in from files, shared by several control
planes so their workloads trust each other) while each control plane signs with its own intermediate; rotating
the intermediate never touches what workloads trust. Workload certificates carry their SPIFFE id as the only URI
SAN (critical, empty subject, as Istio's), live ``default_ttl`` (24 h) and should be renewed at half life
(:func:`renewal_time`).

Root rotation: :meth:`CertificateAuthority.rotate_root` makes a new root and intermediate; the old root stays in
the trust bundle until the overlap ends, so certificates from either root verify while workloads move over.

On disk (``directory``, keys 0600)::

    root-cert.pem root-key.pem        the current root (root-key.pem absent when the root is plugged in)
    ca-cert.pem ca-key.pem            the intermediate that signs
    trust-bundle.json                 previous roots and until when they stay trusted

Issuance is verified here, not in the transport: :meth:`sign_csr` takes the identity the caller proved and
refuses a CSR that asks for anything else.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshplane.security.errors import CsrRejected, SecurityError
from meshplane.security.identity import SpiffeId

DEFAULT_TTL = datetime.timedelta(hours=24)
MAX_TTL = datetime.timedelta(days=7)
ROOT_TTL = datetime.timedelta(days=3650)
INTERMEDIATE_TTL = datetime.timedelta(days=365)
# The longest a previous root stays trusted after a rotation: its own lifetime (trusting it longer means nothing).
MAX_ROOT_OVERLAP = ROOT_TTL
# Certificates start a little in the past: clocks of workloads and control plane are never exactly equal.
BACKDATE = datetime.timedelta(minutes=1)

Clock = Callable[[], datetime.datetime]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def renewal_time(not_before: datetime.datetime, not_after: datetime.datetime) -> datetime.datetime:
    """When to renew: half way through the certificate's life."""
    return not_before + (not_after - not_before) / 2


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    identity: SpiffeId
    cert_chain_pem: bytes  # leaf, then intermediate
    trust_bundle_pem: bytes  # every root currently trusted
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def renew_at(self) -> datetime.datetime:
        return renewal_time(self.not_before, self.not_after)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SecurityError(f"{path}: only EC keys are supported")
    return key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca_cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
             issuer_key: ec.EllipticCurvePrivateKey, now: datetime.datetime, ttl: datetime.timedelta,
             path_length: int | None, trust_domain: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    not_after = now + ttl
    if issuer is not None:
        not_after = min(not_after, issuer.not_valid_after_utc)
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer.subject if issuer is not None else name)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class CertificateAuthority:
    """Signs workload CSRs for one trust domain. Create with :meth:`load_or_create`."""

    def __init__(self, directory: Path, trust_domain: str, root: x509.Certificate,
                 root_key: ec.EllipticCurvePrivateKey | None, intermediate: x509.Certificate,
                 intermediate_key: ec.EllipticCurvePrivateKey, previous_roots: list[tuple[x509.Certificate, str]],
                 clock: Clock = _utcnow, default_ttl: datetime.timedelta = DEFAULT_TTL) -> None:
        self.directory = directory
        self.trust_domain = trust_domain
        self.default_ttl = default_ttl
        self._root = root
        self._root_key = root_key
        self._intermediate = intermediate
        self._intermediate_key = intermediate_key
        self._previous = previous_roots  # (certificate, trusted until ISO time)
        self._clock = clock

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.trust_domain!r}, root={self._root.subject.rfc4514_string()!r})"

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, directory: Path, trust_domain: str = "cluster.local", *,
                       root_cert_file: Path | None = None, root_key_file: Path | None = None,
                       clock: Clock = _utcnow, default_ttl: datetime.timedelta = DEFAULT_TTL) -> CertificateAuthority:
        """Load the CA from ``directory``, or create it there. With ``root_cert_file``/``root_key_file`` the root
        is plugged in (shared across control planes) and only a new intermediate is made here; the root key is
        read from its file and never copied."""
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        now = clock()
        plugged = root_cert_file is not None
        if root_cert_file is not None:
            if root_key_file is None:
                raise SecurityError("a plugged-in root needs both root_cert_file and root_key_file")
            root = x509.load_pem_x509_certificate(root_cert_file.read_bytes())
            root_key: ec.EllipticCurvePrivateKey | None = _load_key(root_key_file)
            existing = directory / "root-cert.pem"
            if existing.exists() and x509.load_pem_x509_certificate(existing.read_bytes()) != root:
                (directory / "ca-cert.pem").unlink(missing_ok=True)  # a different root: new intermediate
            _write(existing, _pem(root))
        elif (directory / "root-cert.pem").exists():
            root = x509.load_pem_x509_certificate((directory / "root-cert.pem").read_bytes())
            kp = directory / "root-key.pem"
            root_key = _load_key(kp) if kp.exists() else None
        else:
            root_key = ec.generate_private_key(ec.SECP256R1())
            root = _ca_cert(f"meshplane root {now:%Y%m%d%H%M%S}", root_key, None, root_key, now, ROOT_TTL, None,
                            trust_domain)
            _write(directory / "root-key.pem", _key_pem(root_key), private=True)
            _write(directory / "root-cert.pem", _pem(root))
        ica_path, ikey_path = directory / "ca-cert.pem", directory / "ca-key.pem"
        if ica_path.exists() and ikey_path.exists():
            intermediate = x509.load_pem_x509_certificate(ica_path.read_bytes())
            intermediate_key = _load_key(ikey_path)
        else:
            if root_key is None:
                raise SecurityError(f"{directory}: no intermediate and no root key to make one")
            intermediate_key = ec.generate_private_key(ec.SECP256R1())
            intermediate = _ca_cert("meshplane intermediate", intermediate_key, root, root_key, now,
                                    INTERMEDIATE_TTL, 0, trust_domain)
            _write(ikey_path, _key_pem(intermediate_key), private=True)
            _write(ica_path, _pem(intermediate))
        previous: list[tuple[x509.Certificate, str]] = []
        bundle = directory / "trust-bundle.json"
        if bundle.exists():
            for entry in json.loads(bundle.read_text()):
                previous.append((x509.load_pem_x509_certificate(entry["pem"].encode()), str(entry["until"])))
        if plugged:
            root_key = None  # signing the intermediate was its only use; keep it out of memory
        return cls(directory, trust_domain, root, root_key, intermediate, intermediate_key, previous, clock,
                   default_ttl)

    # ---- trust ----------------------------------------------------------------------------------------------

    @property
    def root_pem(self) -> bytes:
        return _pem(self._root)

    @property
    def intermediate_pem(self) -> bytes:
        return _pem(self._intermediate)

    def trusted_roots(self) -> list[x509.Certificate]:
        now = self._clock()
        out = [self._root]
        out += [c for c, until in self._previous if datetime.datetime.fromisoformat(until) > now and c != self._root]
        return out

    def trust_bundle_pem(self) -> bytes:
        """Every root trusted now (the current one first): what workloads receive as ``ROOTCA``."""
        return b"".join(_pem(c) for c in self.trusted_roots())

    def rotate_root(self, overlap: datetime.timedelta) -> None:
        """Make a new root and intermediate; the old root stays trusted for ``overlap`` (0 to MAX_ROOT_OVERLAP,
        else ValueError before anything changes)."""
        if not datetime.timedelta(0) <= overlap <= MAX_ROOT_OVERLAP:
            raise ValueError(f"the overlap must be between 0 and {MAX_ROOT_OVERLAP.days} days, not {overlap}")
        now = self._clock()
        until = (now + overlap).isoformat()
        self._previous = [(c, u) for c, u in self._previous if datetime.datetime.fromisoformat(u) > now]
        self._previous.append((self._root, until))
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = _ca_cert(f"meshplane root {now:%Y%m%d%H%M%S%f}", root_key, None, root_key, now, ROOT_TTL, None,
                        self.trust_domain)
        ikey = ec.generate_private_key(ec.SECP256R1())
        ica = _ca_cert("meshplane intermediate", ikey, root, root_key, now, INTERMEDIATE_TTL, 0, self.trust_domain)
        # Write the bundle first: a crash after it leaves the old root trusted, never an untrusted new one.
        _write(self.directory / "trust-bundle.json", json.dumps(
            [{"pem": _pem(c).decode(), "until": u} for c, u in self._previous]).encode())
        _write(self.directory / "root-key.pem", _key_pem(root_key), private=True)
        _write(self.directory / "root-cert.pem", _pem(root))
        _write(self.directory / "ca-key.pem", _key_pem(ikey), private=True)
        _write(self.directory / "ca-cert.pem", _pem(ica))
        self._root, self._root_key, self._intermediate, self._intermediate_key = root, root_key, ica, ikey

    # ---- signing --------------------------------------------------------------------------------------------

    def identity(self, namespace: str, service_account: str) -> SpiffeId:
        return SpiffeId(self.trust_domain, namespace, service_account)

    def sign_csr(self, csr_pem: bytes, identity: SpiffeId, ttl: datetime.timedelta | None = None
                 ) -> IssuedCertificate:
        """Sign ``csr_pem`` for ``identity`` (the one the caller proved). Refuses (:class:`CsrRejected`) a CSR
        whose signature does not verify or whose SANs are anything but exactly ``identity``'s URI."""
        if identity.trust_domain != self.trust_domain:
            raise CsrRejected(f"identity {identity} is not in trust domain {self.trust_domain}")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CsrRejected("CSR is not a PEM certificate signing request") from None
        try:
            if not csr.is_signature_valid:
                raise CsrRejected("CSR signature does not verify")
        except InvalidSignature:
            raise CsrRejected("CSR signature does not verify") from None
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise CsrRejected(f"CSR has no subject alternative name; expected {identity}") from None
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        if uris != [identity.uri] or len(list(san)) != 1:
            asked = ", ".join(str(g.value) for g in san)
            raise CsrRejected(f"CSR asks for [{asked}] but the caller proved {identity}")
        pub = csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey):
            raise CsrRejected("CSR key must be an EC key")
        ttl = min(ttl or self.default_ttl, MAX_TTL)
        now = self._clock()
        not_before = now - BACKDATE
        not_after = min(now + ttl, self._intermediate.not_valid_after_utc)
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self._intermediate.subject)
                .public_key(pub)
                .serial_number(serial)
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
                               critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._intermediate_key.public_key()), critical=False)
                .sign(self._intermediate_key, hashes.SHA256()))
        return IssuedCertificate(identity, _pem(cert) + _pem(self._intermediate), self.trust_bundle_pem(), serial,
                                 not_before, not_after)


def csr_uris(csr_pem: bytes) -> list[str]:
    """The URI SANs a CSR asks for (best effort, for audit records of refused requests)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    except (ValueError, x509.ExtensionNotFound):
        return []
