"""DestinationRule traffic policies: Istio's merge order (top level, subset, port-level) in one place.

Istio resolves the policy of a cluster as: the rule's trafficPolicy, overridden field group by field group
(loadBalancer, connectionPool, outlierDetection, tls) by its portLevelSettings for the port, then by the subset's
trafficPolicy and that policy's portLevelSettings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshplane.translate.context import DestinationRuleRec

_GROUPS = ("loadBalancer", "connectionPool", "outlierDetection", "tls", "tunnel", "proxyProtocol")


def _port_level(policy: Mapping[str, Any], port: int) -> Mapping[str, Any] | None:
    for pls in policy.get("portLevelSettings") or []:
        if isinstance(pls, Mapping) and int((pls.get("port") or {}).get("number") or 0) == port:
            return pls
    return None


def _overlay(base: dict[str, Any], policy: Mapping[str, Any] | None, port: int) -> None:
    if not policy:
        return
    for g in _GROUPS:
        if policy.get(g) is not None:
            base[g] = policy[g]
    pls = _port_level(policy, port)
    if pls:
        for g in _GROUPS:
            if pls.get(g) is not None:
                base[g] = pls[g]


def effective_policy(dr: DestinationRuleRec | None, port: int, subset: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if dr is None:
        return out
    _overlay(out, dr.raw_spec.get("trafficPolicy"), port)
    if subset:
        s = dr.raw_subset(subset)
        if s is not None:
            _overlay(out, s.get("trafficPolicy"), port)
    return out


def subset_labels(dr: DestinationRuleRec | None, subset: str) -> dict[str, str] | None:
    """The subset's labels, or None when the rule has no such subset."""
    if dr is None:
        return None
    s = dr.raw_subset(subset)
    if s is None:
        return None
    return {str(k): str(v) for k, v in (s.get("labels") or {}).items()}


def consistent_hash(policy: Mapping[str, Any]) -> Mapping[str, Any] | None:
    lb = policy.get("loadBalancer") or {}
    ch = lb.get("consistentHash")
    return ch if isinstance(ch, Mapping) else None
