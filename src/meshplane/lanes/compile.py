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
from dataclasses import dataclass, field
from typing import Any

from meshplane.model.resources import GroupResource
from meshplane.model.spec import (
    ASMSwimLane,
    ASMSwimLaneGroup,
    ASMSwimLaneGroupIngressGateway,
    ASMSwimLaneGroupServices,
    ConfigObject,
    StringMatch,
    SwimLaneIngressRule,
)

JSON = dict[str, Any]
Group = ConfigObject[ASMSwimLaneGroup]
Lane = ConfigObject[ASMSwimLane]

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


def _refs(services: Sequence[ASMSwimLaneGroupServices], default_ns: str) -> list[ServiceRef]:
    return [ServiceRef(s.name, s.namespace or default_ns, (s.cluster.name if s.cluster else None) or "")
            for s in services if s.name]


def group_key(group: Group) -> str:
    return f"{group.meta.namespace}.{group.meta.name}"


def lanes_of(group: Group, lanes: Iterable[Lane]) -> list[Lane]:
    """The lanes linked to ``group`` (label ``swimlane-group``, same namespace), by name."""
    ns, name = group.meta.namespace, group.meta.name
    out = [lane for lane in lanes if lane.meta.namespace == ns and lane.meta.labels.get(GROUP_LINK_LABEL) == name]
    return sorted(out, key=lambda lane: lane.meta.name)


def _owner(obj: ConfigObject[Any], controller: bool) -> JSON:
    ref: JSON = {"apiVersion": f"{ASM}/v1", "kind": obj.kind, "name": obj.meta.name, "uid": obj.meta.uid}
    if controller:
        ref["controller"] = True
    return ref


def subset(name: str, labels: Mapping[str, str]) -> JSON:
    """A DestinationRule subset as the lanes write it."""
    return {"name": name, "labels": dict(labels)}


@dataclass(frozen=True, slots=True)
class _Lane:
    name: str
    selector: Mapping[str, str]
    services: frozenset[tuple[str, str]]  # (namespace, name); empty in strict mode = every service
    clusters: Mapping[tuple[str, str], str]  # (namespace, name) -> member cluster named by the lane
    rules: tuple[SwimLaneIngressRule, ...]  # the rules that are online
    weight: int  # -1: the lane sets no ingressWeight


def _lane(obj: Lane, group_services: Sequence[ServiceRef]) -> _Lane:
    spec = obj.spec
    refs = _refs(spec.services, obj.meta.namespace)
    clusters = {(s.namespace, s.name): s.cluster for s in refs if s.cluster}
    for s in group_services:
        if s.cluster and (s.namespace, s.name) not in clusters:
            clusters[(s.namespace, s.name)] = s.cluster
    return _Lane(
        name=obj.meta.name,
        selector=dict(spec.label_selector),
        services=frozenset((s.namespace, s.name) for s in refs),
        clusters=clusters,
        rules=tuple(r for r in spec.ingress_rules if r.online is not False),
        weight=spec.ingress_weight if spec.ingress_weight is not None else -1,
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    group: Group
    lanes: tuple[_Lane, ...]
    services: tuple[ServiceRef, ...]
    permissive: bool
    route_header: str
    trace_header: str
    base: str
    owners: tuple[JSON, ...] = field(default=())  # the group (controller), then its lanes

    def has(self, lane: _Lane, svc: ServiceRef) -> bool:
        return not self.permissive or not lane.services or (svc.namespace, svc.name) in lane.services

    @property
    def base_lane(self) -> _Lane | None:
        return next((lane for lane in self.lanes if lane.name == self.base), None)

    @property
    def weighted_rule(self) -> SwimLaneIngressRule | None:
        """The group's one ingress rule under ``ingressRoutingStrategy: weighted`` (None: each lane's rules)."""
        spec = self.group.spec
        return spec.weighted_ingress_rule if spec.ingress_routing_strategy == "weighted" else None

    @property
    def gateway(self) -> ASMSwimLaneGroupIngressGateway | None:
        ingress = self.group.spec.ingress
        return ingress.gateway if ingress is not None else None


def _plan(group: Group, lane_objs: Sequence[Lane]) -> _Plan:
    spec = group.spec
    services = tuple(_refs(spec.services, group.meta.namespace))
    lanes = tuple(_lane(obj, services) for obj in lane_objs)
    pmc = spec.permissive_mode_configuration
    fallback = (pmc.fallback_target if pmc else None) or ""
    route_header = (pmc.route_header if pmc else None) or DEFAULT_ROUTE_HEADER
    trace_header = (pmc.trace_header if pmc else None) or ""
    permissive = bool(spec.is_permissive)
    base = fallback if permissive else ""
    if not base or base not in {lane.name for lane in lanes}:
        base = fallback or (lanes[0].name if lanes else "")
    owners = (_owner(group, True), *(_owner(o, False) for o in lane_objs))
    return _Plan(group, lanes, services, permissive, route_header.lower(),
                 trace_header.lower() if permissive else "", base, owners)


def _meta(plan: _Plan, name: str, namespace: str) -> JSON:
    return {"name": name, "namespace": namespace,
            "labels": {GENERATED_BY: "lanes", LANE_GROUP_LABEL: group_key(plan.group)},
            "ownerReferences": list(plan.owners)}


def _object(gr: GroupResource, plan: _Plan, name: str, namespace: str, spec: JSON) -> Generated:
    return Generated(gr, {"apiVersion": _API_VERSIONS[gr.group], "kind": _KINDS[gr],
                          "metadata": _meta(plan, name, namespace), "spec": spec})


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


def _subsets(plan: _Plan, svc: ServiceRef) -> list[JSON]:
    out = []
    for lane in plan.lanes:
        if not plan.has(lane, svc):
            continue
        labels = dict(lane.selector)
        cluster = lane.clusters.get((svc.namespace, svc.name))
        if cluster:
            labels[CLUSTER_LABEL] = cluster
        out.append(subset(lane.name, labels))
    return out


def _service_routes(plan: _Plan, svc: ServiceRef) -> list[JSON]:
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
    return http


def _service_objects(plan: _Plan, svc: ServiceRef) -> list[Generated]:
    subsets = _subsets(plan, svc)
    if not subsets:
        return []
    name = f"lanes-{plan.group.meta.name}-{svc.name}"
    return [_object(DESTINATION_RULES, plan, name, svc.namespace, {"host": svc.host, "subsets": subsets}),
            _object(VIRTUAL_SERVICES, plan, name, svc.namespace,
                    {"hosts": [svc.host], "http": _service_routes(plan, svc)})]


def _string_match(sm: StringMatch | None) -> JSON:
    if sm is None:
        return {}
    return {k: v for k, v in (("exact", sm.exact), ("prefix", sm.prefix), ("regex", sm.regex)) if v is not None}


def _uri(rule: SwimLaneIngressRule) -> StringMatch | None:
    return rule.match.uri if rule.match is not None else None


def _headers(rule: SwimLaneIngressRule) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """The rule's header matches, lower-cased names, in a hashable form (a split's key)."""
    headers = rule.match.headers if rule.match is not None else {}
    return tuple(sorted((k.lower(), tuple(sorted(_string_match(v).items()))) for k, v in headers.items()))


def _rule_matches(rule: SwimLaneIngressRule, extra: Mapping[str, Any] | None = None) -> list[JSON]:
    base: JSON = {}
    uri = _string_match(_uri(rule))
    if uri:
        base["uri"] = uri
    headers: JSON = {name: dict(match) for name, match in _headers(rule)}
    headers.update(extra or {})
    if headers:
        base["headers"] = headers
    hosts = [h for h in rule.hosts if h != "*"]
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


def _entry(plan: _Plan, rule: SwimLaneIngressRule) -> ServiceRef | None:
    dest = rule.route.destination if rule.route is not None else None
    host = (dest.host if dest is not None else None) or ""
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


def _lane_dest(plan: _Plan, svc: ServiceRef, lane: _Lane) -> JSON:
    """A gateway destination into ``lane``: it also writes the lane into the request, so the choice sticks."""
    dest = _to_lane(plan, svc, lane)
    dest["headers"] = _lane_headers(plan, lane.name)
    return dest


_Split = tuple[SwimLaneIngressRule, ServiceRef, list[tuple[_Lane, int]]]


def _split_route(plan: _Plan, split: _Split) -> JSON:
    rule, svc, members = split
    weighted = [(lane, w) for lane, w in members if w > 0]
    if not weighted:
        base = next((lane for lane, _ in members if lane.name == plan.base), members[0][0])
        weighted = [(base, 100)]
    route = []
    for lane, w in weighted:
        dest = _lane_dest(plan, svc, lane)
        if len(weighted) > 1:
            dest["weight"] = w
        route.append(dest)
    return {"name": f"split-{rule.name or 'rule'}", "match": _rule_matches(rule), "route": route}


def _ingress_objects(plan: _Plan) -> list[Generated]:
    gw = plan.gateway
    if gw is None or not gw.name or not plan.lanes:
        return []
    gw_ns = gw.namespace or plan.group.meta.namespace
    http: list[JSON] = []
    hosts: set[str] = set()
    # Rules that differ only by lane (same hosts, uri, headers and entry service) form one weighted split.
    splits: dict[tuple[Any, ...], _Split] = {}
    weighted = plan.weighted_rule
    # Weighted: the group's one rule for every lane, each lane's share its ingressWeight.
    per_lane = ([(lane, (weighted,)) for lane in plan.lanes] if weighted is not None and weighted.online is not False
                else [] if weighted is not None else [(lane, lane.rules) for lane in plan.lanes])
    for lane, rules in per_lane:
        for rule in rules:
            svc = _entry(plan, rule)
            if svc is None:
                continue
            hosts.update(rule.hosts or ("*",))
            http.append({"name": f"{lane.name}-{rule.name or 'rule'}",
                         "match": _rule_matches(rule, {plan.route_header: {"exact": lane.name}}),
                         "route": [_lane_dest(plan, svc, lane)]})
            weight = rule.weight if rule.weight is not None and weighted is None else lane.weight
            key = (tuple(sorted(rule.hosts)), _uri(rule), _headers(rule), svc.host)
            entry = splits.setdefault(key, (rule, svc, []))
            entry[2].append((lane, weight))
    # A split whose rule also matches headers goes first: it is more specific than one with the same uri only.
    ordered = sorted(splits.items(), key=lambda kv: not kv[0][2])
    http.extend(_split_route(plan, split) for _, split in ordered)
    if not http:
        return []
    return [_object(VIRTUAL_SERVICES, plan, f"lanes-{plan.group.meta.name}-ingress", gw_ns,
                    {"hosts": sorted(hosts) or ["*"], "gateways": [f"{gw_ns}/{gw.name}"], "http": http})]


def _propagation_objects(plan: _Plan) -> list[Generated]:
    if not plan.permissive or not plan.trace_header or plan.trace_header == plan.route_header:
        return []
    namespaces = sorted({s.namespace for s in plan.services})
    gw = plan.gateway
    gw_ns = (gw.namespace if gw is not None else None) or ""
    out = []
    name = f"lanes-{plan.group.meta.name}"
    for ns in namespaces + ([gw_ns] if gw_ns and gw_ns not in namespaces else []):
        if plan.trace_header == "baggage":
            out.append(_object(HEADER_PROPAGATIONS, plan, name, ns, {"headers": [plan.route_header]}))
        elif ns != gw_ns or ns in namespaces:
            source = f"$getExternalInboundRequestHeader({plan.route_header}, {plan.trace_header})"
            out.append(_object(TRAFFIC_LABELS, plan, name, ns, {"rules": [{"labels": [
                {"name": plan.route_header,
                 "valueFrom": [f"$getLocalOutboundRequestHeader({plan.route_header})", source]}]}]}))
    return out


def compile_group(group: Group, lanes: Iterable[Lane]) -> list[Generated]:
    """Every object one lane group needs (``lanes``: any lanes; those of other groups are ignored)."""
    plan = _plan(group, lanes_of(group, lanes))
    if not plan.lanes:
        return []
    out: list[Generated] = []
    for svc in plan.services:
        out.extend(_service_objects(plan, svc))
    out.extend(_ingress_objects(plan))
    out.extend(_propagation_objects(plan))
    return out


def compile_groups(groups: Iterable[Group], lanes: Iterable[Lane]) -> list[tuple[Group, list[Generated]]]:
    """Each lane group (by namespace/name) with the objects it needs; on a name clash the first group wins."""
    lanes = list(lanes)
    seen: set[tuple[GroupResource, str, str]] = set()
    out = []
    for group in sorted(groups, key=group_key):
        mine = []
        for g in compile_group(group, lanes):
            if g.key not in seen:
                seen.add(g.key)
                mine.append(g)
        out.append((group, mine))
    return out


def compile_lanes(groups: Iterable[Group], lanes: Iterable[Lane]) -> list[Generated]:
    """Every object every lane group needs; on a name clash the first group (by namespace/name) wins."""
    return [g for _, mine in compile_groups(groups, lanes) for g in mine]
