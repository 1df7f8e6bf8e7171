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
