"""Lane group + lanes -> the DestinationRules and VirtualServices (and TrafficLabels) that implement them. Pure.

Why this shape (ASM's, adapted to what the data plane here can do):

* one DestinationRule per service of the group, with one subset per lane that contains the service (subset name =
  lane name, labels = the lane's ``labelSelector``, plus ``topology.istio.io/cluster`` when the lane's reference
  to the service names a member cluster);
* one mesh VirtualService per service. Strict mode routes on the *caller's* lane (``sourceLabels`` = the lane's
  labelSelector): a request that entered lane X stays in X with no help from the applications, and costs nothing
  per request (the choice is compiled into each sidecar's routes). Permissive mode routes on the lane header
  (``routeHeader``): a lane that has the service gets its subset with a ``fallback`` to the base lane (an Envoy
  aggregate cluster: used when the subset has no healthy endpoint); a lane without it goes to the base lane, and
  since the header travels on, the next hop returns to the lane where it exists;
* one gateway VirtualService per group: per lane and ingress rule, requests carrying ``routeHeader: <lane>`` enter
  that lane; the others are split by the lanes' weights (or go to the base lane), and the gateway sets
  ``routeHeader`` to the chosen lane so the choice sticks along the chain (full-link canary);
* when the applications propagate another header than ``routeHeader`` (``traceHeader``): ``baggage`` -> an
  ASMHeaderPropagation lifting ``routeHeader`` out of W3C baggage at every sidecar (and the gateway writes the lane
  into baggage); any other header -> a TrafficLabel restoring ``routeHeader`` from the inbound request that shares
  the trace header (``$getExternalInboundRequestHeader``).

Every generated object carries the label ``meshplane.io/generated-by: lanes``, the group in
``meshplane.io/lane-group`` and ``ownerReferences`` to the group and its lanes; the controller deletes what the
compiler no longer produces.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshplane.model.resources import GroupResource

JSON = dict[str, Any]

ASM = "istio.alibabacloud.com"
NET = "networking.istio.io"
LANE_GROUPS = GroupResource(ASM, "asmswimlanegroups")
LANES = GroupResource(ASM, "asmswimlanes")
VIRTUAL_SERVICES = GroupResource(NET, "virtualservices")
DESTINATION_RULES = GroupResource(NET, "destinationrules")
TRAFFIC_LABELS = GroupResource(ASM, "trafficlabels")
HEADER_PROPAGATIONS = GroupResource(ASM, "asmheaderpropagations")
GENERATED_KINDS = (VIRTUAL_SERVICES, DESTINATION_RULES, TRAFFIC_LABELS, HEADER_PROPAGATIONS)

GENERATED_BY = "meshplane.io/generated-by"
LANE_GROUP_LABEL = "meshplane.io/lane-group"
GROUP_LINK_LABEL = "swimlane-group"  # how ASM links a lane to its group
CLUSTER_LABEL = "topology.istio.io/cluster"
DEFAULT_ROUTE_HEADER = "x-asm-prefer-tag"
_API_VERSIONS = {NET: f"{NET}/v1", ASM: f"{ASM}/v1"}
_KINDS = {VIRTUAL_SERVICES: "VirtualService", DESTINATION_RULES: "DestinationRule", TRAFFIC_LABELS: "TrafficLabel",
          HEADER_PROPAGATIONS: "ASMHeaderPropagation"}


@dataclass(frozen=True, slots=True)
class ServiceRef:
    name: str
    namespace: str
    cluster: str = ""

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True, slots=True)
class Generated:
    """One object the lanes want in the store."""

    gr: GroupResource
    obj: JSON

    @property
    def key(self) -> tuple[GroupResource, str, str]:
        md = self.obj["metadata"]
        return self.gr, str(md["namespace"]), str(md["name"])


def _refs(raw: Any, default_ns: str) -> list[ServiceRef]:
    out = []
    for s in raw or []:
        if isinstance(s, Mapping) and s.get("name"):
            cluster = (s.get("cluster") or {}).get("name") if isinstance(s.get("cluster"), Mapping) else ""
            out.append(ServiceRef(str(s["name"]), str(s.get("namespace") or default_ns), str(cluster or "")))
    return out


def _md(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    md = obj.get("metadata")
    return md if isinstance(md, Mapping) else {}


def group_key(group: Mapping[str, Any]) -> str:
    md = _md(group)
    return f"{md.get('namespace') or 'default'}.{md.get('name')}"


def lanes_of(group: Mapping[str, Any], lanes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The lanes linked to ``group`` (label ``swimlane-group``, same namespace), by name."""
    md = _md(group)
    ns, name = md.get("namespace") or "default", md.get("name")
    out = [lane for lane in lanes if (_md(lane).get("namespace") or "default") == ns
           and (_md(lane).get("labels") or {}).get(GROUP_LINK_LABEL) == name]
    return sorted(out, key=lambda lane: str(_md(lane).get("name")))


def _owner(obj: Mapping[str, Any], kind: str, controller: bool) -> JSON:
    md = _md(obj)
    ref: JSON = {"apiVersion": f"{ASM}/v1", "kind": kind, "name": str(md.get("name")), "uid": str(md.get("uid") or "")}
    if controller:
        ref["controller"] = True
    return ref


@dataclass(frozen=True, slots=True)
class _Lane:
    name: str
    selector: Mapping[str, str]
    services: frozenset[tuple[str, str]]  # (namespace, name); empty in strict mode = every service
    clusters: Mapping[tuple[str, str], str]  # (namespace, name) -> member cluster named by the lane
    rules: tuple[Mapping[str, Any], ...]
    weight: int


def _lane(obj: Mapping[str, Any], group_services: Sequence[ServiceRef]) -> _Lane:
    spec = obj.get("spec") or {}
    refs = _refs(spec.get("services"), str(_md(obj).get("namespace") or "default"))
    clusters = {(s.namespace, s.name): s.cluster for s in refs if s.cluster}
    for s in group_services:
        if s.cluster and (s.namespace, s.name) not in clusters:
            clusters[(s.namespace, s.name)] = s.cluster
    weight = spec.get("ingressWeight")
    return _Lane(
        name=str(_md(obj).get("name")),
        selector={str(k): str(v) for k, v in (spec.get("labelSelector") or {}).items()},
        services=frozenset((s.namespace, s.name) for s in refs),
        clusters=clusters,
        rules=tuple(r for r in spec.get("ingressRules") or [] if isinstance(r, Mapping) and r.get("online", True)),
        weight=int(weight) if weight is not None else -1,
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    group: Mapping[str, Any]
    lanes: tuple[_Lane, ...]
    services: tuple[ServiceRef, ...]
    permissive: bool
    route_header: str
    trace_header: str
    base: str

    def has(self, lane: _Lane, svc: ServiceRef) -> bool:
        return not self.permissive or not lane.services or (svc.namespace, svc.name) in lane.services

    @property
    def base_lane(self) -> _Lane | None:
        return next((lane for lane in self.lanes if lane.name == self.base), None)


def _plan(group: Mapping[str, Any], lane_objs: Sequence[Mapping[str, Any]]) -> _Plan:
    spec = group.get("spec") or {}
    ns = str(_md(group).get("namespace") or "default")
    services = tuple(_refs(spec.get("services"), ns))
    lanes = tuple(_lane(obj, services) for obj in lane_objs)
    pmc = spec.get("permissiveModeConfiguration") or {}
    permissive = bool(spec.get("isPermissive"))
    base = str(pmc.get("fallbackTarget") or "") if permissive else ""
    if not base or base not in {lane.name for lane in lanes}:
        base = str(pmc.get("fallbackTarget") or "") or (lanes[0].name if lanes else "")
    return _Plan(group, lanes, services, permissive, str(pmc.get("routeHeader") or DEFAULT_ROUTE_HEADER).lower(),
                 str(pmc.get("traceHeader") or "").lower() if permissive else "", base)


def _meta(plan: _Plan, name: str, namespace: str, lane_objs: Sequence[Mapping[str, Any]]) -> JSON:
    owners = [_owner(plan.group, "ASMSwimLaneGroup", True)] + [_owner(o, "ASMSwimLane", False) for o in lane_objs]
    return {"name": name, "namespace": namespace,
            "labels": {GENERATED_BY: "lanes", LANE_GROUP_LABEL: group_key(plan.group)},
            "ownerReferences": owners}


def _object(gr: GroupResource, meta: JSON, spec: JSON) -> Generated:
    return Generated(gr, {"apiVersion": _API_VERSIONS[gr.group], "kind": _KINDS[gr], "metadata": meta,
                          "spec": spec})


def _dest(svc: ServiceRef, subset: str) -> JSON:
    return {"host": svc.host, "subset": subset}


def _to_lane(plan: _Plan, svc: ServiceRef, lane: _Lane) -> JSON:
    """A route destination into ``lane`` (falling back to the base lane when the lane's subset is empty)."""
    dest: JSON = {"destination": _dest(svc, lane.name)}
    # Also on routes that go to the base lane itself: the translation then keeps an aggregate cluster for every
    # subset of the service with the base lane, so when a lane gains the service its route moves to an aggregate
    # cluster that proxies already have (no route ever races the creation of its cluster).
    if plan.permissive and plan.base_lane is not None and plan.has(plan.base_lane, svc):
        dest["fallback"] = {"target": _dest(svc, plan.base)}
    return dest


def _strip_route_header(plan: _Plan) -> bool:
    # With baggage propagation the lane travels in baggage only: the lifted header is used to route, then dropped.
    return plan.trace_header == "baggage"


def _with_headers(plan: _Plan, route: JSON) -> JSON:
    if _strip_route_header(plan):
        route["headers"] = {"request": {"remove": [plan.route_header]}}
    return route


def _service_objects(plan: _Plan, svc: ServiceRef, lane_objs: Sequence[Mapping[str, Any]]) -> list[Generated]:
    name = f"lanes-{_md(plan.group).get('name')}-{svc.name}"
    subsets = []
    for lane in plan.lanes:
        if not plan.has(lane, svc):
            continue
        labels = dict(lane.selector)
        cluster = lane.clusters.get((svc.namespace, svc.name))
        if cluster:
            labels[CLUSTER_LABEL] = cluster
        subsets.append({"name": lane.name, "labels": labels})
    if not subsets:
        return []
    out = [_object(DESTINATION_RULES, _meta(plan, name, svc.namespace, lane_objs),
                   {"host": svc.host, "subsets": subsets})]
    http: list[JSON] = []
    base = plan.base_lane
    for lane in plan.lanes:
        if plan.permissive:
            if lane.name == plan.base:
                continue
            target = lane if plan.has(lane, svc) else base
            if target is None:
                continue
            http.append(_with_headers(plan, {
                "name": f"lane-{lane.name}",
                "match": [{"headers": {plan.route_header: {"exact": lane.name}}}],
                "route": [_to_lane(plan, svc, target)]}))
        elif lane.selector:
            http.append({"name": f"lane-{lane.name}", "match": [{"sourceLabels": dict(lane.selector)}],
                         "route": [{"destination": _dest(svc, lane.name)}]})
    if base is not None and plan.has(base, svc):
        http.append(_with_headers(plan, {"name": f"lane-{base.name}-default", "route": [_to_lane(plan, svc, base)]}))
    out.append(_object(VIRTUAL_SERVICES, _meta(plan, name, svc.namespace, lane_objs),
                       {"hosts": [svc.host], "http": http}))
    return out


def _rule_matches(rule: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> list[JSON]:
    base: JSON = {}
    uri = (rule.get("match") or {}).get("uri")
    if isinstance(uri, Mapping) and uri:
        base["uri"] = dict(uri)
    if extra:
        base["headers"] = dict(extra)
    hosts = [str(h) for h in rule.get("hosts") or [] if str(h) != "*"]
    if not hosts:
        return [base]
    out = []
    for h in hosts:
        m = dict(base)
        if h.startswith("*."):
            m["authority"] = {"regex": r"^[^.]+" + h[1:].replace(".", r"\.") + r"(:\d+)?$"}
        else:
            m["authority"] = {"regex": h.replace(".", r"\.") + r"(:\d+)?"}
        out.append(m)
    return out


def _entry(plan: _Plan, rule: Mapping[str, Any]) -> ServiceRef | None:
    host = str(((rule.get("route") or {}).get("destination") or {}).get("host") or "")
    short = host.split(".")[0]
    for s in plan.services:
        if host in (s.name, s.host, f"{s.name}.{s.namespace}") or (short == s.name and "." not in host):
            return s
    return None


def _lane_headers(plan: _Plan, lane: str) -> JSON:
    if plan.trace_header == "baggage":
        # The lane travels in W3C baggage only; the sidecars lift it back into routeHeader (ASMHeaderPropagation).
        return {"request": {"add": {"baggage": f"{plan.route_header}={lane}"}, "remove": [plan.route_header]}}
    return {"request": {"set": {plan.route_header: lane}}}


def _ingress_objects(plan: _Plan, lane_objs: Sequence[Mapping[str, Any]]) -> list[Generated]:
    gw = ((plan.group.get("spec") or {}).get("ingress") or {}).get("gateway") or {}
    if not gw.get("name") or not plan.lanes:
        return []
    gw_ns = str(gw.get("namespace") or _md(plan.group).get("namespace") or "default")
    gw_ref = f"{gw_ns}/{gw['name']}"
    http: list[JSON] = []
    hosts: set[str] = set()
    # Rules that differ only by lane (same hosts, uri and entry service) form one weighted split.
    splits: dict[str, tuple[Mapping[str, Any], ServiceRef, list[tuple[_Lane, int]]]] = {}
    for lane in plan.lanes:
        for rule in lane.rules:
            svc = _entry(plan, rule)
            if svc is None:
                continue
            hosts.update(str(h) for h in rule.get("hosts") or ["*"])
            dest = _to_lane(plan, svc, lane)
            dest["headers"] = _lane_headers(plan, lane.name)
            http.append({"name": f"{lane.name}-{rule.get('name') or 'rule'}",
                         "match": _rule_matches(rule, {plan.route_header: {"exact": lane.name}}),
                         "route": [dest]})
            key = repr((sorted(str(h) for h in rule.get("hosts") or []), (rule.get("match") or {}).get("uri"),
                        svc.host))
            weight = int(rule["weight"]) if rule.get("weight") is not None else lane.weight
            entry = splits.setdefault(key, (rule, svc, []))
            entry[2].append((lane, weight))
    for rule, svc, members in splits.values():
        weighted = [(lane, w) for lane, w in members if w > 0]
        if not weighted:
            base = next((lane for lane, _ in members if lane.name == plan.base), members[0][0])
            weighted = [(base, 100)]
        route = []
        for lane, w in weighted:
            dest = _to_lane(plan, svc, lane)
            dest["headers"] = _lane_headers(plan, lane.name)
            if len(weighted) > 1:
                dest["weight"] = w
            route.append(dest)
        http.append({"name": f"split-{rule.get('name') or 'rule'}", "match": _rule_matches(rule), "route": route})
    if not http:
        return []
    name = f"lanes-{_md(plan.group).get('name')}-ingress"
    return [_object(VIRTUAL_SERVICES, _meta(plan, name, gw_ns, lane_objs),
                    {"hosts": sorted(hosts) or ["*"], "gateways": [gw_ref], "http": http})]


def _propagation_objects(plan: _Plan, lane_objs: Sequence[Mapping[str, Any]]) -> list[Generated]:
    if not plan.permissive or not plan.trace_header or plan.trace_header == plan.route_header:
        return []
    namespaces = sorted({s.namespace for s in plan.services})
    gw = ((plan.group.get("spec") or {}).get("ingress") or {}).get("gateway") or {}
    gw_ns = str(gw.get("namespace") or "")
    out = []
    name = f"lanes-{_md(plan.group).get('name')}"
    for ns in namespaces + ([gw_ns] if gw_ns and gw_ns not in namespaces else []):
        if plan.trace_header == "baggage":
            out.append(_object(HEADER_PROPAGATIONS, _meta(plan, name, ns, lane_objs),
                               {"headers": [plan.route_header]}))
        elif ns != gw_ns or ns in namespaces:
            source = f"$getExternalInboundRequestHeader({plan.route_header}, {plan.trace_header})"
            out.append(_object(TRAFFIC_LABELS, _meta(plan, name, ns, lane_objs), {"rules": [{"labels": [
                {"name": plan.route_header,
                 "valueFrom": [f"$getLocalOutboundRequestHeader({plan.route_header})", source]}]}]}))
    return out


def compile_group(group: Mapping[str, Any], lanes: Iterable[Mapping[str, Any]]) -> list[Generated]:
    """Every object one lane group needs (``lanes``: any lanes; those of other groups are ignored)."""
    lane_objs = lanes_of(group, lanes)
    plan = _plan(group, lane_objs)
    if not plan.lanes:
        return []
    out: list[Generated] = []
    for svc in plan.services:
        out.extend(_service_objects(plan, svc, lane_objs))
    out.extend(_ingress_objects(plan, lane_objs))
    out.extend(_propagation_objects(plan, lane_objs))
    return out


def compile_lanes(groups: Iterable[Mapping[str, Any]], lanes: Iterable[Mapping[str, Any]]) -> list[Generated]:
    """Every object every lane group needs; on a name clash the first group (by namespace/name) wins."""
    lanes = list(lanes)
    seen: set[tuple[GroupResource, str, str]] = set()
    out = []
    for group in sorted(groups, key=group_key):
        for g in compile_group(group, lanes):
            if g.key not in seen:
                seen.add(g.key)
                out.append(g)
    return out
