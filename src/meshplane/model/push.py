"""What triggers a push: the change a PushRequest carries through debounce to the per-proxy queues.

A request is either full (config changed: regenerate everything each affected proxy sees) or endpoint-only
(``full=False``: only the ClusterLoadAssignments of ``endpoints_updated`` hosts are regenerated and sent).
Requests merge while they wait in debounce and in each proxy's queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshplane.model.config import ConfigKey
from meshplane.model.names import Hostname


@dataclass(frozen=True, slots=True)
class PushRequest:
    full: bool
    config_updated: frozenset[ConfigKey] = field(default_factory=frozenset)
    endpoints_updated: frozenset[Hostname] = field(default_factory=frozenset)  # service host names
    reasons: tuple[str, ...] = ()
    # When the oldest change this request carries arrived (the event loop's clock), for the convergence-time
    # metric; None when unknown. Not part of what the request asks for, so not compared.
    started: float | None = field(default=None, compare=False)

    def merge(self, other: PushRequest) -> PushRequest:
        starts = [t for t in (self.started, other.started) if t is not None]
        return PushRequest(
            full=self.full or other.full,
            config_updated=self.config_updated | other.config_updated,
            endpoints_updated=self.endpoints_updated | other.endpoints_updated,
            reasons=self.reasons + tuple(r for r in other.reasons if r not in self.reasons),
            started=min(starts) if starts else None,
        )
