"""The security audit trail: certificate issuances and refusals, and authorization decisions (deny, shadow deny,
OPA deny), each with the identities involved.

Why a separate trail from the store's audit records: those record API changes (who changed which object); these
record decisions made at run time, at a much higher rate, so they live in a bounded in-memory ring (and an
optional sink, e.g. a log or a file) instead of the durable store. Events never carry key material: the fields
are identities, names and decisions only.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Kinds of events.
CERT_ISSUED = "certificate.issued"
CERT_REFUSED = "certificate.refused"
AUTHZ_DENY = "authz.deny"
AUTHZ_SHADOW_DENY = "authz.shadow_deny"
OPA_DENY = "opa.deny"
OPA_ALLOW = "opa.allow"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    kind: str
    # The identity that acted (a SPIFFE id, or what a caller claimed to be) and the one acted upon.
    subject: str = ""
    target: str = ""
    reason: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    timestamp: str = ""
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "timestamp": self.timestamp, "kind": self.kind, "subject": self.subject,
                "target": self.target, "reason": self.reason, "details": dict(self.details)}


class AuditTrail:
    """A bounded, thread-safe ring of :class:`AuditEvent` with a monotonically increasing ``seq``."""

    def __init__(self, capacity: int = 10_000, sink: Callable[[AuditEvent], None] | None = None) -> None:
        self._events: deque[AuditEvent] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._sink = sink

    def record(self, kind: str, *, subject: str = "", target: str = "", reason: str = "",
               details: Mapping[str, str] | None = None) -> AuditEvent:
        with self._lock:
            ev = AuditEvent(kind, subject, target, reason, dict(details or {}),
                            datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"), next(self._seq))
            self._events.append(ev)
        log.info("audit %s subject=%s target=%s %s", kind, subject, target, reason)
        if self._sink is not None:
            self._sink(ev)
        return ev

    def events(self, *, since: int = 0, kind: str | None = None, limit: int = 500) -> list[AuditEvent]:
        with self._lock:
            out = [e for e in self._events if e.seq > since and (kind is None or e.kind.startswith(kind))]
        return out[:limit]

    def to_json(self, *, since: int = 0, kind: str | None = None, limit: int = 500) -> dict[str, Any]:
        """The management API's ``SecurityAuditEventList``."""
        return {"kind": "SecurityAuditEventList", "apiVersion": "meshplane.io/v1",
                "items": [e.to_json() for e in self.events(since=since, kind=kind, limit=limit)]}
