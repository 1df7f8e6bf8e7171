"""DestinationRule traffic policies: Istio's merge order (top level, subset, port-level) in one place.

Istio resolves the policy of a cluster (``MergeTrafficPolicy``) as: the rule's trafficPolicy, overridden field group
by field group (connectionPool, loadBalancer, outlierDetection, tls) by its portLevelSettings for the port, then by
the subset's trafficPolicy (those groups and tunnel, proxyProtocol) and that policy's portLevelSettings. A group
is taken whole from the most specific level that sets it: its fields are never merged with a less specific one's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeVar

from meshplane.model import spec as istio
from meshplane.translate.context import DestinationRuleRec

T = TypeVar("T")

_EMPTY = istio.TrafficPolicy()


def _pick(override: T | None, base: T | None) -> T | None:
    return override if override is not None else base


def _port_level(policy: istio.TrafficPolicy, port: int) -> istio.PortTrafficPolicy | None:
    for pls in policy.port_level_settings:
        if pls.port is not None and pls.port.number == port:
            return pls
    return None


def _overlay_port(base: istio.TrafficPolicy, pls: istio.PortTrafficPolicy | None) -> istio.TrafficPolicy:
    if pls is None:
        return base
    return dataclasses.replace(
        base,
        connection_pool=_pick(pls.connection_pool, base.connection_pool),
        load_balancer=_pick(pls.load_balancer, base.load_balancer),
        outlier_detection=_pick(pls.outlier_detection, base.outlier_detection),
        tls=_pick(pls.tls, base.tls),
    )


def _overlay(base: istio.TrafficPolicy, policy: istio.TrafficPolicy | None, port: int) -> istio.TrafficPolicy:
    if policy is None:
        return base
    merged = istio.TrafficPolicy(
        connection_pool=_pick(policy.connection_pool, base.connection_pool),
        load_balancer=_pick(policy.load_balancer, base.load_balancer),
        outlier_detection=_pick(policy.outlier_detection, base.outlier_detection),
        tls=_pick(policy.tls, base.tls),
        tunnel=_pick(policy.tunnel, base.tunnel),
        proxy_protocol=_pick(policy.proxy_protocol, base.proxy_protocol),
    )
    return _overlay_port(merged, _port_level(policy, port))


def effective_policy(dr: DestinationRuleRec | None, port: int, subset: str = "") -> istio.TrafficPolicy:
    """The policy of the cluster ``outbound|port|subset|host``; never has ``port_level_settings`` (they are
    resolved for ``port``). Without a rule, or an unknown subset, what the rule says (or an empty policy)."""
    if dr is None:
        return _EMPTY
    out = _overlay(_EMPTY, dr.spec.traffic_policy, port)
    s = dr.subset(subset) if subset else None
    if s is not None:
        out = _overlay(out, s.traffic_policy, port)
    return out


def subset_labels(dr: DestinationRuleRec | None, subset: str) -> Mapping[str, str] | None:
    """The subset's labels, or None when the rule has no such subset."""
    if dr is None:
        return None
    s = dr.subset(subset)
    return s.labels if s is not None else None


def consistent_hash(policy: istio.TrafficPolicy) -> istio.ConsistentHashLB | None:
    lb = policy.load_balancer
    return lb.consistent_hash if lb is not None else None
