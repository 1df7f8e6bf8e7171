"""The agent's pure parts: its configuration, the node metadata the control plane parses back, the WorkloadEntry
it registers, readiness thresholds, and the Prometheus target its status port is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshplane.agent.config import AgentConfig, AgentConfigError, PortSpec, Readiness
from meshplane.agent.health import ProbeResult, ReadinessTracker
from meshplane.agent.registration import workload_entry
from meshplane.model.proxy import Locality, ProxyType, proxy_from_node
from meshplane.runtime import prometheus


def config(**kw: object) -> AgentConfig:
    base: dict[str, object] = dict(
        name="reviews-v1-c1-0", namespace="default", workload="reviews-v1", address="127.9.1.4",
        xds="127.9.0.1:15010", api="http://127.9.0.1:8080", cluster="c1", network="n1", region="r1", zone="za",
        labels={"app": "reviews", "version": "v1"}, service_account="bookinfo-reviews",
        ports=(PortSpec(9080, 19080, "http", "HTTP"),))
    base.update(kw)
    return AgentConfig(**base)  # type: ignore[arg-type]


def test_metadata_round_trips_through_the_control_planes_parser() -> None:
    cfg = config()
    proxy = proxy_from_node(cfg.node_id, cfg.metadata(), Locality(cfg.region, cfg.zone))
    assert proxy.type is ProxyType.SIDECAR
    assert (proxy.namespace, proxy.workload_name, proxy.service_account) == ("default", "reviews-v1",
                                                                              "bookinfo-reviews")
    assert proxy.cluster_id == "c1" and proxy.network == "n1"
    assert proxy.listen_address == "127.9.1.4" and proxy.app_address == "127.9.1.4"
    assert [(p.port, p.app_port, p.protocol) for p in proxy.inbound_ports] == [(9080, 19080, "HTTP")]
    assert proxy.interception_mode == "NONE" and proxy.outbound_port == 15001
    assert dict(proxy.labels) == {"app": "reviews", "version": "v1"}


def test_gateway_metadata() -> None:
    cfg = config(gateway=True, ports=(), gateway_ports={80: 8080, 443: 8443}, namespace="istio-system")
    proxy = proxy_from_node(cfg.node_id, cfg.metadata(), Locality())
    assert proxy.type is ProxyType.ROUTER
    assert proxy.listen_address == "127.9.1.4"  # never 0.0.0.0: servers bind loopback only
    assert proxy.gateway_listen_port(80) == 8080 and proxy.gateway_listen_port(443) == 8443


def test_json_round_trip_and_errors(tmp_path: Path) -> None:
    cfg = config(readiness=Readiness(http_path="/healthz", period_s=1.0))
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(cfg.to_json()))
    assert AgentConfig.load(path) == cfg
    with pytest.raises(AgentConfigError, match="unknown field 'adress'"):
        AgentConfig.from_json({**cfg.to_json(), "adress": "x"})
    raw = cfg.to_json()
    del raw["xds"]
    with pytest.raises(AgentConfigError, match="'xds' is required"):
        AgentConfig.from_json(raw)


def test_workload_entry() -> None:
    we = workload_entry(config())
    assert we["metadata"]["name"] == "reviews-v1-c1-0" and we["metadata"]["namespace"] == "default"
    spec = we["spec"]
    assert spec["address"] == "127.9.1.4" and spec["ports"] == {"http": 9080}
    assert spec["labels"] == {"app": "reviews", "version": "v1", "topology.istio.io/cluster": "c1",
                              "meshplane.io/workload": "reviews-v1"}
    assert spec["locality"] == "r1/za" and spec["network"] == "n1" and spec["serviceAccount"] == "bookinfo-reviews"
    assert workload_entry(config(subzone="s1"))["spec"]["locality"] == "r1/za/s1"


def test_readiness_thresholds() -> None:
    t = ReadinessTracker(Readiness(failure_threshold=2, success_threshold=2))
    assert not t.observe(ProbeResult(True))
    assert t.observe(ProbeResult(True))
    assert t.observe(ProbeResult(False, "HTTP 503"))  # one failure is tolerated
    assert not t.observe(ProbeResult(False, "HTTP 503"))
    assert t.message == "HTTP 503"
    assert not t.observe(ProbeResult(True))
    assert t.observe(ProbeResult(True)) and t.message == ""


def test_status_port_defaults_to_istios_and_prometheus_scrapes_it_alone() -> None:
    cfg = config()
    assert cfg.status_port == 15020 and cfg.stats_port == 15090
    assert AgentConfig.from_json({**cfg.to_json(), "status_port": 0}).status_port == 0
    doc = prometheus.targets_document([prometheus.Target("127.9.1.4", {"pod": "reviews-v1-c1-0"})])
    # One target per instance, the agent's merged metrics (Envoy's inside): 15090 as well would count them twice.
    assert doc == [{"targets": ["127.9.1.4:15020"], "labels": {"pod": "reviews-v1-c1-0"}}]
