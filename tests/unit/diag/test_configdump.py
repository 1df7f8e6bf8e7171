"""istioctl's proxy-config tables over a real Envoy's config dump: the demo's productpage sidecar (captured from
``/config_dump`` and ``/clusters?format=json`` of a running demo, paths replaced)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from meshplane.diag import ConfigDump, ConfigDumpError, configdump, render_table

DATA = Path(__file__).resolve().parents[2] / "data" / "diag"
# The dump's certificate was issued on 2026-12-03 for a day; the tables compare against a given time.
DURING = datetime.datetime(2026, 12, 3, 12, tzinfo=datetime.UTC)
AFTER = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def dump() -> ConfigDump:
    return ConfigDump(json.loads((DATA / "productpage-config-dump.json").read_text()),
                      json.loads((DATA / "productpage-clusters.json").read_text()))


def test_clusters_parse_istio_names(dump: ConfigDump) -> None:
    rows = configdump.cluster_rows(dump)
    assert ["reviews.default.svc.cluster.local", "9080", "-", "outbound", "EDS"] in rows
    assert ["-", "9080", "-", "inbound", "STATIC"] in rows
    assert ["BlackHoleCluster", "-", "-", "-", "STATIC"] in rows
    only = configdump.cluster_rows(dump, fqdn="ratings", direction="outbound")
    assert [r[0] for r in only] == ["ratings.default.svc.cluster.local"]
    assert configdump.cluster_rows(dump, port=1234) == []


def test_listeners_show_each_filter_chain(dump: ConfigDump) -> None:
    rows = configdump.listener_rows(dump)
    assert ["127.223.1.2", "15001", "ALL", "Route: http_proxy"] in rows
    inbound = configdump.listener_rows(dump, port=9080)
    assert {r[2] for r in inbound} == {"Trans: tls", "Trans: raw_buffer"}  # mTLS and plaintext (PERMISSIVE)
    assert [int(r[1]) for r in rows] == sorted(int(r[1]) for r in rows)


def test_routes_name_the_cluster_each_route_reaches(dump: ConfigDump) -> None:
    rows = configdump.route_rows(dump, name="http_proxy")
    reviews = [r for r in rows if r[1] == "reviews.default.svc.cluster.local:9080"]
    assert reviews == [["http_proxy", "reviews.default.svc.cluster.local:9080",
                        "reviews.default.svc.cluster.local, reviews.default.svc + 2 more...", "/*",
                        "outbound|9080||reviews.default.svc.cluster.local"]]
    table = render_table(configdump.ROUTE_HEADER, rows)
    assert table.splitlines()[0].split() == ["NAME", "VHOST", "NAME", "DOMAINS", "MATCH", "DESTINATION"]


def test_route_matches_and_destinations() -> None:
    rc = {"name": "9080", "virtual_hosts": [{"name": "reviews:9080", "domains": ["reviews"], "routes": [
        {"match": {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
         "route": {"cluster": "outbound|9080|v2|reviews.default.svc.cluster.local"}},
        {"match": {"path": "/ratings"}, "route": {"weighted_clusters": {"clusters": [
            {"name": "outbound|9080|v1|r", "weight": 80}, {"name": "outbound|9080|v3|r", "weight": 20}]}}},
        {"match": {"safe_regex": {"regex": "/x.*"}}, "direct_response": {"status": 503}},
        {"match": {"connect_matcher": {}}, "route": {"cluster": "PassthroughCluster"}}]},
        {"name": "empty", "domains": ["a", "b:80"], "routes": []}]}
    d = ConfigDump({"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                                 "dynamic_route_configs": [{"route_config": rc}]}]})
    assert [r[3:] for r in configdump.route_rows(d)] == [
        ["/* [end-user exact=jason]", "outbound|9080|v2|reviews.default.svc.cluster.local"],
        ["/ratings", "outbound|9080|v1|r 80%, outbound|9080|v3|r 20%"],
        ["~/x.*", "direct response 503"],
        ["CONNECT", "PassthroughCluster"],
        ["/*", "404"]]
    assert configdump.route_rows(d)[4][2] == "a"  # the domain with a port is the same host


def test_endpoints_come_with_their_health(dump: ConfigDump) -> None:
    rows = configdump.endpoint_rows(dump, cluster="reviews")
    assert len(rows) == 4 and {r[1] for r in rows} == {"HEALTHY"} and {r[2] for r in rows} == {"OK"}
    assert all(r[3] == "outbound|9080||reviews.default.svc.cluster.local" for r in rows)
    status: dict[str, Any] = {"cluster_statuses": [{"name": "c", "host_statuses": [
        {"address": {"socket_address": {"address": "127.0.0.9", "port_value": 80}},
         "health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": True}}]}]}
    d = ConfigDump({"configs": []}, status)
    assert configdump.endpoint_rows(d) == [["127.0.0.9:80", "UNHEALTHY", "FAILED", "c"]]
    assert configdump.endpoint_rows(d, status="healthy") == []


def test_secrets_show_certificates_not_keys(dump: ConfigDump) -> None:
    rows = configdump.secret_rows(dump, DURING)
    assert [r[:4] for r in rows] == [["default", "Cert Chain", "ACTIVE", "true"], ["ROOTCA", "CA", "ACTIVE", "true"]]
    assert rows[0][5] == "2026-12-04T08:38:00Z" and rows[0][4] == "8cac5f957a2487b75a4afb2a99f75e46d5356be"
    assert configdump.secret_rows(dump, AFTER)[0][3] == "false"
    assert "PRIVATE KEY" not in json.dumps(dump.of("secret"))


def test_json_parts_and_bootstrap(dump: ConfigDump) -> None:
    assert dump.bootstrap()["node"]["id"].startswith("sidecar~127.223.1.2~productpage-v1-cluster-1-0.default~")
    assert {c["name"] for c in dump.of("clusters")} >= {"xds-grpc", "outbound|9080||reviews.default.svc.cluster.local"}
    assert len(dump.of("endpoints")) == len(dump.clusters())


def test_not_a_config_dump() -> None:
    with pytest.raises(ConfigDumpError, match="not an Envoy config dump"):
        ConfigDump({"kind": "Status"})
