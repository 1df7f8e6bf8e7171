"""agent.statsdecode: the 15090 Lua, run with LuaJIT (Envoy's Lua), on Envoy's Prometheus text of the stats that
translate.telemetry configures: back to Istio's names and labels, one family per metric."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest
from envoy.extensions.access_loggers.stats.v3 import stats_pb2

from meshplane.agent.bootstrap import build_bootstrap
from meshplane.agent.statsdecode import decoder_lua
from meshplane.model.proxy import Locality
from meshplane.model.statname import decode_name, encode_name, peer_value, request_value, split_request
from meshplane.translate import telemetry
from meshplane.translate.telemetryapi import DEFAULT, MetricRule, TelemetryPolicy
from tests.support.promtext import samples

lupa = pytest.importorskip("lupa.luajit21")

OWN = {"workload": "productpage-v1", "namespace": "default", "app": "productpage", "version": "v1",
       "cluster": "c1", "principal": "spiffe://cluster.local/ns/default/sa/productpage"}
REVIEWS = {"workload": "reviews-v2", "namespace": "default", "app": "reviews", "version": "v2", "cluster": "c2"}
SVC = telemetry.ServiceLabels("reviews.default.svc.cluster.local", "reviews", "default")


def _decode(text: str, own: Mapping[str, str] = OWN) -> str:
    lua = lupa.LuaRuntime()
    lua.execute(decoder_lua(own))
    return str(lua.globals().decode_stats(text))


def _quote(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_COMMAND = re.compile(r"%[A-Z_]+(?:\([^)]*\))?%")


def _format(fmt: str, formatted: Mapping[str, str]) -> str:
    """What Envoy's formatter makes of ``fmt`` when its commands give ``formatted`` (a command not listed gives
    nothing, as with the stats logger's omitted empty values)."""
    if fmt in formatted:
        return formatted[fmt]
    return _COMMAND.sub(lambda m: formatted.get(m.group(0), ""), fmt)


def _export(stat: stats_pb2.Config.Stat, formatted: Mapping[str, str], value: int = 1, *,
            histogram: bool = False) -> str:
    """Envoy's Prometheus text of one stat whose tags' format strings gave ``formatted``."""
    name = f"envoy_istio_{stat.name}"
    tags = ",".join(f'{t.name}="{_quote(_format(t.value_format, formatted))}"' for t in stat.tags)
    if not histogram:
        return f"# TYPE {name} counter\n{name}{{{tags}}} {value}\n"
    sep = "," if tags else ""
    return (f"# TYPE {name} histogram\n{name}_bucket{{{tags}{sep}le=\"0.5\"}} 0\n"
            f"{name}_bucket{{{tags}{sep}le=\"+Inf\"}} {value}\n{name}_sum{{{tags}}} {value}\n"
            f"{name}_count{{{tags}}} {value}\n")


def _config(logs: list[object]) -> stats_pb2.Config:
    cfg = stats_pb2.Config()
    for log in logs:
        if getattr(log, "name", "") == telemetry.STATS_LOGGER:
            cfg.MergeFrom(_unpack(log))
    return cfg


def _unpack(log: object) -> stats_pb2.Config:
    cfg = stats_pb2.Config()
    raw = log.typed_config.value  # type: ignore[attr-defined]
    cfg.MergeFromString(raw)  # the hand-written shared-scope field is an unknown field here
    return cfg


def _labels(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(lbls), v) for (n, lbls), v in samples(text).items() if n == name]


INBOUND = {"%RESPONSE_CODE%": "200", "%RESPONSE_FLAGS%": "-",
           "%DYNAMIC_METADATA(meshplane.peer:id)%": peer_value({**OWN, "workload": "productpage-v1"}),
           "%DOWNSTREAM_PEER_URI_SAN%": OWN["principal"]}


def test_inbound_mtls_request_count_decodes_to_istio_labels_with_own_labels_from_the_name() -> None:
    reviews = {**REVIEWS, "principal": "spiffe://cluster.local/ns/default/sa/reviews"}
    cfg = _config(telemetry.inbound_http_logs(SVC, DEFAULT, mtls=True, identity=reviews))
    (count,) = [c for c in cfg.counters if (decode_name(c.stat.name) or ("",))[0] == "requests_total"]
    # per request one tag: the response code and flags, the peer's principal, the peer
    (tag,) = count.stat.tags
    assert tag.name == "meshplane" and split_request(tag.value_format) == {
        "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "service": "",
        "principal": "%DOWNSTREAM_PEER_URI_SAN%", "peer": "%DYNAMIC_METADATA(meshplane.peer:id)%"}
    text = _decode(_export(count.stat, INBOUND, 7), own={})  # the name carries all of this proxy's labels
    ((labels, value),) = _labels(text, "istio_requests_total")
    assert value == 7
    assert labels == {
        "reporter": "destination", "response_code": "200", "response_flags": "-", "request_protocol": "http",
        "connection_security_policy": "mutual_tls",
        "source_workload": "productpage-v1", "source_workload_namespace": "default", "source_app": "productpage",
        "source_version": "v1", "source_cluster": "c1", "source_principal": OWN["principal"],
        "destination_workload": "reviews-v2", "destination_workload_namespace": "default",
        "destination_app": "reviews", "destination_version": "v2", "destination_cluster": "c2",
        "destination_principal": "spiffe://cluster.local/ns/default/sa/reviews",
        "destination_service": SVC.host, "destination_service_name": "reviews",
        "destination_service_namespace": "default"}


def test_shared_outbound_listener_gets_its_own_labels_from_the_agent_and_the_service_from_one_tag() -> None:
    cfg = _config(telemetry.outbound_http_logs(DEFAULT))  # identity None: shared by a scope's proxies
    (count,) = [c for c in cfg.counters if (decode_name(c.stat.name) or ("",))[0] == "requests_total"]
    (tag,) = count.stat.tags
    assert tag.name == "meshplane" and split_request(tag.value_format) == {
        "code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
        "service": "%CLUSTER_METADATA(meshplane.telemetry:service)%", "principal": "%UPSTREAM_PEER_URI_SAN%",
        "peer": "%DYNAMIC_METADATA(meshplane.peer:id)%"}
    svc = "%CLUSTER_METADATA(meshplane.telemetry:service)%"
    mtls = {"%RESPONSE_CODE%": "503", "%RESPONSE_FLAGS%": "UF", "%DYNAMIC_METADATA(meshplane.peer:id)%":
            peer_value(REVIEWS), "%UPSTREAM_PEER_URI_SAN%": "spiffe://cluster.local/ns/default/sa/reviews",
            svc: "reviews_2edefault_2esvc_2ecluster_2elocal;reviews;default"}
    plain = {**mtls, "%DYNAMIC_METADATA(meshplane.peer:id)%": "-", "%UPSTREAM_PEER_URI_SAN%": "-", svc: "-",
             "%RESPONSE_CODE%": "200"}
    text = _decode(_export(count.stat, mtls, 2) + _export(count.stat, plain, 3))
    by_code = {lbls["response_code"]: lbls for lbls, _ in _labels(text, "istio_requests_total")}
    assert {k: by_code["503"][k] for k in ("reporter", "source_workload", "source_cluster", "source_principal",
                                           "destination_workload", "destination_cluster", "destination_service",
                                           "destination_service_name", "connection_security_policy")} == {
        "reporter": "source", "source_workload": "productpage-v1", "source_cluster": "c1",
        "source_principal": OWN["principal"], "destination_workload": "reviews-v2", "destination_cluster": "c2",
        "destination_service": SVC.host, "destination_service_name": "reviews",
        "connection_security_policy": "unknown"}
    assert by_code["503"]["destination_principal"] == "spiffe://cluster.local/ns/default/sa/reviews"
    # plaintext to something outside the mesh: no peer, no service, and no principal of ours either
    assert by_code["200"]["destination_workload"] == by_code["200"]["destination_service"] == "unknown"
    assert by_code["200"]["destination_principal"] == "unknown"
    assert by_code["200"]["source_principal"] == "unknown" and by_code["200"]["source_workload"] == "productpage-v1"


def test_families_are_merged_with_one_type_line_and_other_stats_pass_unchanged() -> None:
    cfg = _config(telemetry.inbound_http_logs(SVC, DEFAULT, mtls=True, identity=OWN))
    plain = _config(telemetry.inbound_http_logs(SVC, DEFAULT, mtls=False, identity=OWN))
    other = "# TYPE envoy_cluster_upstream_rq counter\nenvoy_cluster_upstream_rq{envoy_cluster_name=\"x\"} 4\n"
    text = other
    for c in (cfg, plain):
        for counter in c.counters:
            text += _export(counter.stat, {**INBOUND, "%DOWNSTREAM_PEER_URI_SAN%": "-"}, 1)
        for h in c.histograms:
            text += _export(h.stat, {**INBOUND, "%DOWNSTREAM_PEER_URI_SAN%": "-"}, 1, histogram=True)
    out = _decode(text)
    assert "envoy_istio_" not in out
    types = [line for line in out.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types)) == 5, types
    assert "# TYPE istio_request_duration_milliseconds histogram" in types
    assert other in out
    policies = {lbls["connection_security_policy"] for lbls, _ in _labels(out, "istio_requests_total")}
    assert policies == {"mutual_tls", "none"}
    buckets = _labels(out, "istio_request_duration_milliseconds_bucket")
    assert len(buckets) == 4 and all("le" in lbls and lbls["reporter"] == "destination" for lbls, _ in buckets)


def test_tag_overrides_and_unknown_labels_pass_through_and_removed_labels_stay_removed() -> None:
    policy = TelemetryPolicy(True, (MetricRule("REQUEST_COUNT", False, True, None, (
        ("request_host", "%REQ(:AUTHORITY)%"), ("request_protocol", None), ("source_version", None),
        ("destination_version", None), ("team", "blue"))),))
    cfg = _config(telemetry.inbound_http_logs(SVC, policy, mtls=True))  # own labels: $self, from the agent
    (count,) = [c for c in cfg.counters if (decode_name(c.stat.name) or ("",))[0] == "requests_total"]
    text = _decode(_export(count.stat, {**INBOUND, "%REQ(:AUTHORITY)%": 'odd "host"\\x'}))
    ((labels, _),) = _labels(text, "istio_requests_total")
    assert labels["request_host"] == 'odd "host"\\x' and labels["team"] == "blue"
    assert not {"request_protocol", "source_version", "destination_version"} & labels.keys()
    assert labels["destination_workload"] == "productpage-v1" and labels["destination_principal"] == OWN["principal"]


@pytest.mark.parametrize("value", ["", "a\"b\\c\nd", "ünï;code_5f", "__", "-"])
def test_odd_and_empty_values_in_names_and_peers_round_trip(value: str) -> None:
    stat = stats_pb2.Config.Stat(name=encode_name("requests_total", {"reporter": value, "source_app": "$peer",
                                                                    "odd label": value}))
    stat.tags.add(name="meshplane_peer", value_format="P")
    text = _decode(_export(stat, {"P": peer_value({"app": value or "x"})}))
    ((labels, _),) = _labels(text, "istio_requests_total")
    # a label name Prometheus would refuse is written as Envoy writes one (``_`` for each odd character)
    assert labels == {"reporter": value, "source_app": value or "x", "odd_label": value}


def test_a_forged_or_malformed_peer_value_gives_what_it_says_and_unknown_for_the_rest() -> None:
    stat = stats_pb2.Config.Stat(name=encode_name("requests_total", {"source_workload": "$peer",
                                                                    "source_workload_namespace": "$peer",
                                                                    "source_cluster": "$peer"}))
    stat.tags.add(name="meshplane_peer", value_format="P")
    text = _decode(_export(stat, {"P": 'admin-tool;kube"system'}))
    ((labels, _),) = _labels(text, "istio_requests_total")
    assert labels == {"source_workload": "admin-tool", "source_workload_namespace": 'kube"system',
                      "source_cluster": "unknown"}


def _request_stat(**labels: str) -> stats_pb2.Config.Stat:
    stat = stats_pb2.Config.Stat(name=encode_name("requests_total", labels))
    stat.tags.add(name="meshplane", value_format="R")
    return stat


@pytest.mark.parametrize(("fields", "principal", "peer_workload"), [
    # a principal with the separator in it (any certificate may carry one) still decodes
    ({"code": "200", "flags": "-", "principal": "spiffe://x/a|b", "peer": peer_value(REVIEWS)},
     "spiffe://x/a|b", "reviews-v2"),
    # a forged peer value with separators damages only its own labels, and shows in the principal
    ({"code": "200", "flags": "-", "principal": "spiffe://x/sa/p", "peer": "evil|admin;kube-system"},
     "spiffe://x/sa/p|evil", "admin"),
    ({"code": "503", "flags": "UF,URX", "principal": "", "peer": ""}, "unknown", "unknown"),
])
def test_request_tag_fields_decode_as_the_python_reference_splits_them(
        fields: dict[str, str], principal: str, peer_workload: str) -> None:
    value = request_value(fields)
    assert split_request(value)["principal"] == (principal if principal != "unknown" else "")
    stat = _request_stat(response_code="$code", response_flags="$flags", source_principal="$principal",
                         source_workload="$peer", destination_principal="$mtls")
    ((labels, _),) = _labels(_decode(_export(stat, {"R": value})), "istio_requests_total")
    assert labels == {"response_code": fields["code"], "response_flags": fields["flags"],
                      "source_principal": principal, "source_workload": peer_workload,
                      "destination_principal": OWN["principal"] if principal != "unknown" else "unknown"}


def test_a_tag_override_with_another_format_stays_a_tag_and_mtls_still_reads_a_removed_principal() -> None:
    policy = TelemetryPolicy(True, (MetricRule("REQUEST_COUNT", True, False, None, (
        ("response_code", "%REQ(x-code)%"), ("destination_principal", None))),))
    cfg = _config(telemetry.outbound_http_logs(policy))
    (count,) = [c for c in cfg.counters if (decode_name(c.stat.name) or ("",))[0] == "requests_total"]
    tags = {t.name: t.value_format for t in count.stat.tags}
    assert tags["response_code"] == "%REQ(x-code)%"
    assert split_request(tags["meshplane"])["code"] == ""  # not formatted for nothing
    assert split_request(tags["meshplane"])["principal"] == "%UPSTREAM_PEER_URI_SAN%"  # for source_principal
    text = _decode(_export(count.stat, {"%REQ(x-code)%": "teapot", "%RESPONSE_FLAGS%": "-",
                                        "%UPSTREAM_PEER_URI_SAN%": "spiffe://cluster.local/ns/default/sa/reviews"}))
    ((labels, _),) = _labels(text, "istio_requests_total")
    assert labels["response_code"] == "teapot" and "destination_principal" not in labels
    assert labels["source_principal"] == OWN["principal"]


def test_names_from_before_the_encoding_are_renamed_and_merged() -> None:
    stat = stats_pb2.Config.Stat(name=encode_name("requests_total", {"reporter": "source"}))
    text = ("# TYPE envoy_istio_requests_total counter\nenvoy_istio_requests_total{reporter=\"destination\"} 1\n"
            + _export(stat, {}))
    out = _decode(text)
    assert out.count("# TYPE istio_requests_total counter") == 1
    assert sorted(lbls["reporter"] for lbls, _ in _labels(out, "istio_requests_total")) == ["destination", "source"]


def test_the_bootstrap_writes_the_proxy_identity_into_its_decoder() -> None:
    md = {"WORKLOAD_NAME": "productpage-v1", "NAMESPACE": "default", "SERVICE_ACCOUNT": "productpage",
          "LABELS": {"app": "productpage", "version": "v1"}, "CLUSTER_ID": "c1"}
    doc = build_bootstrap("sidecar~127.0.0.9~pp.default~default.svc.cluster.local", md, Locality(), "127.0.0.1:1",
                          "127.0.0.9:15000", stats_address="127.0.0.9:15090", trust_domain="example.org")
    (lst,) = doc["static_resources"]["listeners"]
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    source = hcm["http_filters"][0]["typed_config"]["default_source_code"]["inline_string"]
    lua = lupa.LuaRuntime()
    lua.execute(source)
    stat = stats_pb2.Config.Stat(name=encode_name("requests_total", {"source_workload": "$self",
                                                                    "source_principal": "$self"}))
    ((labels, _),) = _labels(str(lua.globals().decode_stats(_export(stat, {}))), "istio_requests_total")
    assert labels == {"source_workload": "productpage-v1",
                      "source_principal": "spiffe://example.org/ns/default/sa/productpage"}
