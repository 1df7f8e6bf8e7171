"""SPIFFE ids of mesh workloads: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``.

Why one small type: the same identity is written into certificates (URI SAN), matched by Envoy (RBAC principals
without the ``spiffe://`` scheme, as Istio writes them in AuthorizationPolicy), bound to bootstrap tokens and
recorded in the audit trail. Parsing in one place keeps every consumer strict about the same format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshplane.security.errors import InvalidIdentity

SCHEME = "spiffe://"
# Kubernetes names (DNS-1123 labels/subdomains) for namespaces and service accounts; trust domains are DNS names.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True, order=True)
class SpiffeId:
    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _DOMAIN.match(self.trust_domain) or len(self.trust_domain) > 255:
            raise InvalidIdentity(f"trust domain {self.trust_domain!r} is not a DNS name")
        for what, value in (("namespace", self.namespace), ("service account", self.service_account)):
            if not _NAME.match(value) or len(value) > 253:
                raise InvalidIdentity(f"{what} {value!r} is not a Kubernetes name")

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy ``principals`` use: the URI without ``spiffe://``."""
        return self.uri[len(SCHEME):]

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse ``spiffe://td/ns/NS/sa/SA`` (or the principal form ``td/ns/NS/sa/SA``)."""
        rest = text[len(SCHEME):] if text.startswith(SCHEME) else text
        parts = rest.split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise InvalidIdentity(f"{text!r} is not a mesh SPIFFE id (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)")
        return cls(parts[0], parts[2], parts[4])
