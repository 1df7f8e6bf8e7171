"""DestinationRule policy resolution (``policy``): Istio's merge of the top level, its port-level settings, the
subset and the subset's port-level settings, field group by field group, on the typed model."""

from __future__ import annotations

from typing import Any

from _feature_corpus import dr
from _translate_helpers import context, fqdn, service_entry

from meshplane.model import spec as istio
from meshplane.translate.context import DestinationRuleRec
from meshplane.translate.policy import consistent_hash, effective_policy, subset_labels

_TOP = {
    "loadBalancer": {"simple": "ROUND_ROBIN"},
    "connectionPool": {"tcp": {"maxConnections": 10}, "http": {"maxRetries": 1}},
    "outlierDetection": {"consecutive5xxErrors": 7, "interval": ".5s"},
    "tls": {"mode": "ISTIO_MUTUAL"},
    "tunnel": {"targetHost": "top.example", "targetPort": 1},
    "portLevelSettings": [
        {"port": {"number": 8000}, "loadBalancer": {"simple": "RANDOM"}, "tls": {"mode": "SIMPLE"}},
        {"port": {"number": 9000}, "outlierDetection": {"consecutive5xxErrors": 1}},
    ],
}
_SUBSETS = [
    {"name": "plain", "labels": {"version": "v1"}},
    {"name": "tuned", "labels": {"version": "v2", "track": "b"}, "trafficPolicy": {
        "connectionPool": {"http": {"maxRetries": 9}},  # replaces the top level's pool whole (tcp too)
        "proxyProtocol": {"version": "V2"},
        "portLevelSettings": [{"port": {"number": 8000}, "loadBalancer": {"consistentHash": {"httpHeaderName": "x"}}}],
    }},
]


def _rule(spec: dict[str, Any] | None = None) -> DestinationRuleRec:
    spec = spec or {"host": "svc", "trafficPolicy": _TOP, "subsets": _SUBSETS}
    ctx = context([service_entry("svc", ports=[{"number": 8000, "name": "http", "protocol": "HTTP"}]),
                   dr("svc", spec)])
    rule = ctx.destination_rule(fqdn("svc"), "default", {})
    assert rule is not None
    return rule


def test_top_level_and_its_port_level_settings() -> None:
    rule = _rule()
    other = effective_policy(rule, 7000)
    assert other.load_balancer == istio.LoadBalancerSettings(simple=istio.SimpleLB.ROUND_ROBIN)
    assert other.outlier_detection is not None and other.outlier_detection.interval == 500_000_000
    assert other.tunnel is not None and other.tunnel.target_host == "top.example"
    assert other.port_level_settings == ()  # resolved for the port, never handed on
    port = effective_policy(rule, 8000)
    assert port.load_balancer is not None and port.load_balancer.simple is istio.SimpleLB.RANDOM
    assert port.tls is not None and port.tls.mode is istio.ClientTLSMode.SIMPLE
    assert port.connection_pool == other.connection_pool  # a group the port does not set is inherited
    # A port-level group replaces the top level's whole: its interval is not inherited.
    assert effective_policy(rule, 9000).outlier_detection == istio.OutlierDetection(consecutive5xx_errors=1)


def test_subset_over_top_level_and_subset_port_level_over_all() -> None:
    rule = _rule()
    tuned = effective_policy(rule, 7000, "tuned")
    pool = tuned.connection_pool
    assert pool is not None and pool.tcp is None and pool.http == istio.HTTPSettings(max_retries=9)
    assert tuned.proxy_protocol == istio.ProxyProtocol(version=istio.ProxyProtocolVersion.V2)
    assert tuned.tunnel is not None and tuned.tls is not None  # kept from the top level
    on_port = effective_policy(rule, 8000, "tuned")
    assert consistent_hash(on_port) == istio.ConsistentHashLB(http_header_name="x")
    assert on_port.tls is not None and on_port.tls.mode is istio.ClientTLSMode.SIMPLE  # top level's port-level
    assert effective_policy(rule, 8000, "plain") == effective_policy(rule, 8000)  # a subset without a policy
    assert effective_policy(rule, 8000, "nosuch") == effective_policy(rule, 8000)


def test_no_rule_or_no_policy_is_empty() -> None:
    assert effective_policy(None, 8000) == istio.TrafficPolicy()
    assert effective_policy(_rule({"host": "svc"}), 8000, "x") == istio.TrafficPolicy()
    assert consistent_hash(istio.TrafficPolicy()) is None
    assert consistent_hash(effective_policy(_rule(), 7000)) is None


def test_subset_labels() -> None:
    rule = _rule()
    assert subset_labels(rule, "tuned") == {"version": "v2", "track": "b"}
    assert subset_labels(rule, "nosuch") is None
    assert subset_labels(None, "tuned") is None
