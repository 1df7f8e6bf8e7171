"""The lanes sample's group and lanes as a user writes them (shared by unit tests and e2e tests)."""

from __future__ import annotations

from typing import Any

from meshplane.lanes.compile import LANE_GROUPS, LANES, Generated, compile_group
from meshplane.model.spec import decode_resource


def group(*, permissive: bool, trace_header: str = "", name: str = "mock") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ingress": {"gateway": {"name": "istio-ingressgateway", "namespace": "istio-system", "type": "ASM"}},
        "isPermissive": permissive,
        "services": [{"name": s, "namespace": "default"} for s in ("mocka", "mockb", "mockc")],
    }
    if permissive:
        spec["permissiveModeConfiguration"] = {"routeHeader": "x-asm-prefer-tag", "fallbackTarget": "v1",
                                               **({"traceHeader": trace_header} if trace_header else {})}
    return {"apiVersion": "istio.alibabacloud.com/v1", "kind": "ASMSwimLaneGroup",
            "metadata": {"name": name, "namespace": "istio-system", "uid": f"uid-{name}"}, "spec": spec}


def lane(version: str, services: tuple[str, ...] = ("mocka", "mockb", "mockc"), *, weight: int | None = None,
         group_name: str = "mock", label: str = "version") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "labelSelector": {label: version},
        "services": [{"name": s, "namespace": "default"} for s in services],
        "ingressRules": [{"name": f"r-{version}", "hosts": ["*"], "match": {"uri": {"prefix": "/"}},
                          "online": True, "route": {"destination": {"host": "mocka.default.svc.cluster.local"}}}],
    }
    if weight is not None:
        spec["ingressWeight"] = weight
    return {"apiVersion": "istio.alibabacloud.com/v1", "kind": "ASMSwimLane",
            "metadata": {"name": version, "namespace": "istio-system", "uid": f"uid-lane-{version}",
                         "labels": {"swimlane-group": group_name}}, "spec": spec}


def permissive_lanes(weights: tuple[int, int, int] | None = None) -> list[dict[str, Any]]:
    w = weights or (None, None, None)
    return [lane("v1", weight=w[0]), lane("v2", ("mocka", "mockc"), weight=w[1]), lane("v3", weight=w[2])]


def compiled(group_obj: dict[str, Any], lane_objs: list[dict[str, Any]]) -> list[Generated]:
    """What the compiler makes of a group and lanes as a user writes them (decoded as the controller does)."""
    return compile_group(decode_resource(LANE_GROUPS, group_obj), [decode_resource(LANES, o) for o in lane_objs])
