"""What the lanes compiler generates: strict mode routes on the caller's lane, permissive mode on the lane header
with fallback to the base lane, the gateway enters lanes by header or by weight; every object is owned."""

from __future__ import annotations

from typing import Any

from lane_objects import compiled, group, lane, permissive_lanes

from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate
from meshplane.lanes import GENERATED_BY
from meshplane.lanes.compile import DESTINATION_RULES, VIRTUAL_SERVICES, Generated


def _by_name(out: list[Generated]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(g.gr.resource, g.obj["metadata"]["name"]): g.obj for g in out}


def test_permissive_routes_on_header_and_falls_back() -> None:
    objs = _by_name(compiled(group(permissive=True), permissive_lanes()))
    dr = objs[("destinationrules", "lanes-mock-mockb")]
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["v1", "v3"]  # mockb is not in lane v2
    vs = objs[("virtualservices", "lanes-mock-mockb")]["spec"]["http"]
    v2 = next(r for r in vs if r["name"] == "lane-v2")
    assert v2["match"] == [{"headers": {"x-asm-prefer-tag": {"exact": "v2"}}}]
    assert v2["route"][0]["destination"] == {"host": "mockb.default.svc.cluster.local", "subset": "v1"}
    v3 = next(r for r in vs if r["name"] == "lane-v3")
    assert v3["route"][0]["fallback"] == {"target": {"host": "mockb.default.svc.cluster.local", "subset": "v1"}}
    assert vs[-1]["route"][0]["destination"]["subset"] == "v1" and "match" not in vs[-1]
    mocka = objs[("virtualservices", "lanes-mock-mocka")]["spec"]["http"]
    assert next(r for r in mocka if r["name"] == "lane-v2")["route"][0]["destination"]["subset"] == "v2"


def test_strict_routes_on_source_labels() -> None:
    lanes = [lane("v1"), lane("v2"), lane("v3")]
    objs = _by_name(compiled(group(permissive=False), lanes))
    vs = objs[("virtualservices", "lanes-mock-mockc")]["spec"]["http"]
    assert [r["match"][0]["sourceLabels"] for r in vs[:3]] == [{"version": v} for v in ("v1", "v2", "v3")]
    assert all("fallback" not in d for r in vs for d in r["route"])


def test_ingress_weighted_split_sets_lane_header() -> None:
    objs = _by_name(compiled(group(permissive=True), permissive_lanes((80, 10, 10))))
    vs = objs[("virtualservices", "lanes-mock-ingress")]
    assert vs["metadata"]["namespace"] == "istio-system"
    assert vs["spec"]["gateways"] == ["istio-system/istio-ingressgateway"]
    split = vs["spec"]["http"][-1]
    assert [(d["destination"]["subset"], d["weight"]) for d in split["route"]] == [("v1", 80), ("v2", 10), ("v3", 10)]
    assert [d["headers"]["request"]["set"]["x-asm-prefer-tag"] for d in split["route"]] == ["v1", "v2", "v3"]


def test_trace_header_generates_propagation() -> None:
    out = _by_name(compiled(group(permissive=True, trace_header="baggage"), permissive_lanes()))
    assert out[("asmheaderpropagations", "lanes-mock")]["spec"] == {"headers": ["x-asm-prefer-tag"]}
    out = _by_name(compiled(group(permissive=True, trace_header="my-request-id"), permissive_lanes()))
    tl = out[("trafficlabels", "lanes-mock")]["spec"]["rules"][0]["labels"][0]
    assert tl["valueFrom"][-1] == "$getExternalInboundRequestHeader(x-asm-prefer-tag, my-request-id)"


def test_generated_objects_are_owned_labelled_and_valid() -> None:
    reg = default_registry()
    out = compiled(group(permissive=True, trace_header="baggage"), permissive_lanes((80, 10, 10)))
    assert {g.gr for g in out} >= {VIRTUAL_SERVICES, DESTINATION_RULES}
    for g in out:
        md = g.obj["metadata"]
        assert md["labels"][GENERATED_BY] == "lanes"
        assert md["ownerReferences"][0] == {"apiVersion": "istio.alibabacloud.com/v1", "kind": "ASMSwimLaneGroup",
                                            "name": "mock", "uid": "uid-mock", "controller": True}
        info = reg.by_kind(g.gr.group, g.obj["kind"])
        assert info is not None
        warnings = validate(info, {**g.obj, "spec": dict(g.obj["spec"])})
        assert all("fallback" in w for w in warnings), warnings  # only ASM's VirtualService extension is unknown


def test_no_lanes_no_objects() -> None:
    assert compiled(group(permissive=True), []) == []
    assert compiled(group(permissive=True), [lane("v1", group_name="other")]) == []


def _asm_yaml(name: str) -> list[dict[str, Any]]:
    import pathlib

    import yaml

    path = pathlib.Path(__file__).resolve().parents[2] / "data" / "asm" / name
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_weighted_strategy_splits_one_rule_by_lane_weight() -> None:
    """ingressRoutingStrategy weighted: the group's one rule (with its header match) for every lane; requests
    naming a lane enter it, the rest are split 50/50 and the gateway writes the chosen lane."""
    docs = _asm_yaml("lanes-weighted.yaml")
    kinds = default_registry()
    for d in docs:
        info = kinds.by_kind(d["apiVersion"].split("/")[0], d["kind"])
        assert info is not None
        validate(info, d, field_validation="Strict")
    objs = _by_name(compiled(docs[0], docs[1:]))
    http = objs[("virtualservices", "lanes-mock-ingress")]["spec"]["http"]
    assert [r["name"] for r in http] == ["v1-r1", "v3-r1", "split-r1"]
    want_match = {"uri": {"exact": "/mock"}, "headers": {"test": {"exact": "yes"}}}
    assert http[1]["match"] == [{**want_match, "headers": {"test": {"exact": "yes"},
                                                            "x-asm-prefer-tag": {"exact": "v3"}}}]
    split = http[2]
    assert split["match"] == [want_match]
    assert [(d["destination"]["subset"], d["weight"], d["headers"]["request"]["set"]) for d in split["route"]] == [
        ("v1", 50, {"x-asm-prefer-tag": "v1"}), ("v3", 50, {"x-asm-prefer-tag": "v3"})]


def test_weighted_strategy_ignores_lane_rules_and_rule_weights() -> None:
    g = group(permissive=True)
    g["spec"]["ingressRoutingStrategy"] = "weighted"
    g["spec"]["weightedIngressRule"] = {"name": "all", "hosts": ["*"], "match": {"uri": {"prefix": "/"}},
                                        "route": {"destination": {"host": "mocka"}}}
    lanes = [lane("v1", weight=90), lane("v3", weight=10)]
    lanes[0]["spec"]["ingressRules"][0]["weight"] = 5
    http = _by_name(compiled(g, lanes))[("virtualservices", "lanes-mock-ingress")]["spec"]["http"]
    assert [r["name"] for r in http] == ["v1-all", "v3-all", "split-all"]
    assert [d["weight"] for d in http[-1]["route"]] == [90, 10]
    g["spec"]["weightedIngressRule"]["online"] = False  # the rule is off: the gateway routes nothing
    assert ("virtualservices", "lanes-mock-ingress") not in _by_name(compiled(g, lanes))


def test_lane_ingress_rules_match_headers() -> None:
    lanes = [lane("v1"), lane("v3")]
    lanes[1]["spec"]["ingressRules"][0]["match"]["headers"] = {"x-user": {"prefix": "beta-"}}
    http = _by_name(compiled(group(permissive=True), lanes))[("virtualservices", "lanes-mock-ingress")]["spec"]["http"]
    v3 = next(r for r in http if r["name"] == "v3-r-v3")
    assert v3["match"] == [{"uri": {"prefix": "/"}, "headers": {"x-user": {"prefix": "beta-"},
                                                                "x-asm-prefer-tag": {"exact": "v3"}}}]
    # A rule with a header match is its own split (only lane v3 has it), before the one without: matching
    # requests all enter v3, the others the base lane.
    splits = [r for r in http if r["name"].startswith("split-")]
    assert [[d["destination"]["subset"] for d in r["route"]] for r in splits] == [["v3"], ["v1"]]
    assert splits[0]["match"][0]["headers"] == {"x-user": {"prefix": "beta-"}}
