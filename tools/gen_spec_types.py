"""Generate ``src/meshplane/model/spec/_types.py``: typed, frozen spec classes of every kind meshplane serves.

Why generated: the served schemas (``api/schemas/istio.json`` for Istio's kinds, ``api/asm_schemas.py`` for ASM's and
meshplane's) are the one description of each field. This script turns each object schema into a frozen dataclass
with snake_case attributes and a field table for :func:`meshplane.model.spec.decode`, each string enum into a
:class:`~meshplane.model.spec.SpecEnum`, and each duration field into :data:`~meshplane.model.spec.Duration`.

- Object schemas with the same structure (descriptions aside) become one class, named after Istio's proto message
  where ``NAMES`` gives it (``HTTPRoute``, ``StringMatch``, ``TrafficPolicy``), else after the first path.
- Duration fields: Istio's protos declare them ``google.protobuf.Duration``, but the CRD schema says only
  ``string``; ``DURATION_FIELDS`` lists their names, and the script fails if a listed name is not a string.
- Free-form values (``x-kubernetes-preserve-unknown-fields``) stay JSON (``Json``).

Run from the repository root:  python tools/gen_spec_types.py [--check]
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "meshplane" / "model" / "spec" / "_types.py"
sys.path.insert(0, str(ROOT / "src"))

from meshplane.api.kinds import CORE, default_registry  # noqa: E402
from meshplane.api.schemas import spec_schema  # noqa: E402

# String fields that Istio's protos type as google.protobuf.Duration.
DURATION_FIELDS = frozenset({
    "timeout", "perTryTimeout", "fixedDelay", "exponentialDelay", "maxAge", "ttl", "warmupDurationSecs",
    "duration", "baseEjectionTime", "interval", "idleTimeout", "connectTimeout", "maxConnectionDuration", "time",
    "reportingInterval",
})

# Istio's message names, by the first (kind, path) at which the structure appears.
NAMES = {
    ("VirtualService", ".http[]"): "HTTPRoute",
    ("VirtualService", ".http[].match[]"): "HTTPMatchRequest",
    ("VirtualService", ".http[].match[].uri"): "StringMatch",
    ("VirtualService", ".http[].route[]"): "HTTPRouteDestination",
    ("VirtualService", ".http[].route[].destination"): "Destination",
    ("VirtualService", ".http[].route[].destination.port"): "PortSelector",
    ("VirtualService", ".http[].route[].headers"): "Headers",
    ("VirtualService", ".http[].route[].headers.request"): "HeaderOperations",
    ("VirtualService", ".http[].redirect"): "HTTPRedirect",
    ("VirtualService", ".http[].directResponse"): "HTTPDirectResponse",
    ("VirtualService", ".http[].directResponse.body"): "HTTPBody",
    ("VirtualService", ".http[].delegate"): "Delegate",
    ("VirtualService", ".http[].rewrite"): "HTTPRewrite",
    ("VirtualService", ".http[].rewrite.uriRegexRewrite"): "RegexRewrite",
    ("VirtualService", ".http[].retries"): "HTTPRetry",
    ("VirtualService", ".http[].fault"): "HTTPFaultInjection",
    ("VirtualService", ".http[].fault.delay"): "HTTPFaultInjectionDelay",
    ("VirtualService", ".http[].fault.abort"): "HTTPFaultInjectionAbort",
    ("VirtualService", ".http[].fault.delay.percentage"): "Percent",
    ("VirtualService", ".http[].mirrors[]"): "HTTPMirrorPolicy",
    ("VirtualService", ".http[].corsPolicy"): "CorsPolicy",
    ("VirtualService", ".tls[]"): "TLSRoute",
    ("VirtualService", ".tls[].match[]"): "TLSMatchAttributes",
    ("VirtualService", ".tls[].route[]"): "RouteDestination",
    ("VirtualService", ".tcp[]"): "TCPRoute",
    ("VirtualService", ".tcp[].match[]"): "L4MatchAttributes",
    ("DestinationRule", ".trafficPolicy"): "TrafficPolicy",
    ("DestinationRule", ".subsets[]"): "Subset",
    ("DestinationRule", ".trafficPolicy.loadBalancer"): "LoadBalancerSettings",
    ("DestinationRule", ".trafficPolicy.loadBalancer.consistentHash"): "ConsistentHashLB",
    ("DestinationRule", ".trafficPolicy.loadBalancer.consistentHash.httpCookie"): "HTTPCookie",
    ("DestinationRule", ".trafficPolicy.loadBalancer.localityLbSetting"): "LocalityLoadBalancerSetting",
    ("DestinationRule", ".trafficPolicy.loadBalancer.warmup"): "WarmupConfiguration",
    ("DestinationRule", ".trafficPolicy.connectionPool"): "ConnectionPoolSettings",
    ("DestinationRule", ".trafficPolicy.connectionPool.tcp"): "TCPSettings",
    ("DestinationRule", ".trafficPolicy.connectionPool.tcp.tcpKeepalive"): "TcpKeepalive",
    ("DestinationRule", ".trafficPolicy.connectionPool.http"): "HTTPSettings",
    ("DestinationRule", ".trafficPolicy.outlierDetection"): "OutlierDetection",
    ("DestinationRule", ".trafficPolicy.tls"): "ClientTLSSettings",
    ("DestinationRule", ".trafficPolicy.portLevelSettings[]"): "PortTrafficPolicy",
    ("DestinationRule", ".trafficPolicy.proxyProtocol"): "ProxyProtocol",
    ("DestinationRule", ".trafficPolicy.tunnel"): "TunnelSettings",
    ("DestinationRule", ".workloadSelector"): "WorkloadSelector",
    ("Gateway", ".servers[]"): "Server",
    ("Gateway", ".servers[].port"): "Port",
    ("Gateway", ".servers[].tls"): "ServerTLSSettings",
    ("ServiceEntry", ".ports[]"): "ServicePort",
    ("ServiceEntry", ".endpoints[]"): "WorkloadEntry",
    ("Sidecar", ".egress[]"): "IstioEgressListener",
    ("Sidecar", ".egress[].port"): "SidecarPort",
    ("Sidecar", ".ingress[]"): "IstioIngressListener",
    ("Sidecar", ".outboundTrafficPolicy"): "OutboundTrafficPolicy",
    ("AuthorizationPolicy", ".rules[]"): "Rule",
    ("AuthorizationPolicy", ".rules[].from[]"): "RuleFrom",
    ("AuthorizationPolicy", ".rules[].from[].source"): "Source",
    ("AuthorizationPolicy", ".rules[].to[]"): "RuleTo",
    ("AuthorizationPolicy", ".rules[].to[].operation"): "Operation",
    ("AuthorizationPolicy", ".rules[].when[]"): "Condition",
    ("AuthorizationPolicy", ".provider"): "NameRef",
    ("AuthorizationPolicy", ".targetRef"): "PolicyTargetReference",
    ("PeerAuthentication", ".mtls"): "PeerAuthenticationMutualTLS",
    ("RequestAuthentication", ".jwtRules[]"): "JWTRule",
    ("RequestAuthentication", ".jwtRules[].fromHeaders[]"): "JWTHeader",
    ("RequestAuthentication", ".jwtRules[].outputClaimToHeaders[]"): "ClaimToHeader",
    ("ASMSwimLaneGroup", ".weightedIngressRule"): "SwimLaneIngressRule",
    ("ASMSwimLaneGroup", ".weightedIngressRule.match"): "SwimLaneIngressRuleMatch",
    ("ASMSwimLaneGroup", ".weightedIngressRule.route"): "SwimLaneIngressRuleRoute",
    ("ASMSwimLaneGroup", ".weightedIngressRule.route.destination"): "SwimLaneIngressRuleDestination",
}

ENUM_NAMES = {
    ("ClientTLSSettings", "mode"): "ClientTLSMode",
    ("ServerTLSSettings", "mode"): "ServerTLSMode",
    ("PeerAuthenticationMutualTLS", "mode"): "MutualTLSMode",
    ("LoadBalancerSettings", "simple"): "SimpleLB",
    ("AuthorizationPolicy", "action"): "AuthorizationAction",
    ("ServiceEntry", "resolution"): "Resolution",
    ("ServiceEntry", "location"): "Location",
    ("OutboundTrafficPolicy", "mode"): "OutboundTrafficPolicyMode",
}

HEADER = '''"""Typed spec classes of every served kind, GENERATED by tools/gen_spec_types.py: do not edit.

Regenerate after a schema change:  python tools/gen_spec_types.py
"""

# ruff: noqa: E501, RUF022

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshplane.model.resources import GroupResource
from meshplane.model.spec._base import Duration, SpecEnum, register

'''


def pascal(text: str) -> str:
    parts = re.split(r"[^0-9A-Za-z]+", text)
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def snake(name: str) -> str:
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"[^0-9A-Za-z_]", "_", s).lower()
    if keyword.iskeyword(s) or s in ("field", "register"):
        s += "_"
    return s


def _camel(attr: str) -> str:
    head, *rest = attr.rstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def shape(schema: Any) -> Any:
    """The schema without descriptions: what decides whether two paths share a class."""
    if isinstance(schema, dict):
        return {k: shape(v) for k, v in sorted(schema.items()) if k not in ("description", "example")}
    if isinstance(schema, list):
        return [shape(v) for v in schema]
    return schema


@dataclass
class Klass:
    name: str
    fields: list[tuple[str, str, str, str]] = field(default_factory=list)  # json, attr, annotation, table entry
    doc: str = ""


@dataclass
class Enum:
    name: str
    values: tuple[str, ...]


class Generator:
    def __init__(self) -> None:
        self.classes: dict[str, Klass] = {}
        self.by_shape: dict[str, str] = {}
        self.enums: dict[str, Enum] = {}
        self.enum_by_values: dict[tuple[str, ...], str] = {}
        self.order: list[str] = []
        self.named: dict[str, str] = {}  # shape -> Istio's name, from NAMES

    def learn_names(self, kind: str, path: str, schema: Any) -> None:
        """Find the shape at each path ``NAMES`` lists, so a class gets Istio's name wherever it appears first."""
        if not isinstance(schema, dict):
            return
        if schema.get("type") == "array":
            self.learn_names(kind, f"{path}[]", schema.get("items"))
            return
        if (kind, path) in NAMES and schema.get("properties"):
            self.named.setdefault(json.dumps(shape(schema), sort_keys=True), NAMES[(kind, path)])
        for prop, sub in (schema.get("properties") or {}).items():
            self.learn_names(kind, f"{path}.{prop}", sub)
        if isinstance(schema.get("additionalProperties"), dict):
            self.learn_names(kind, f"{path}{{}}", schema["additionalProperties"])

    def unique(self, name: str, taken: dict[str, Any]) -> str:
        if name not in taken:
            return name
        i = 2
        while f"{name}{i}" in taken:
            i += 1
        return f"{name}{i}"

    def enum(self, owner: str, prop: str, values: tuple[str, ...]) -> str:
        key = values
        if key in self.enum_by_values:
            return self.enum_by_values[key]
        name = self.unique(ENUM_NAMES.get((owner, prop), owner + pascal(prop)), {**self.enums, **self.classes})
        self.enums[name] = Enum(name, values)
        self.enum_by_values[key] = name
        return name

    def klass(self, kind: str, path: str, schema: dict[str, Any], default_name: str) -> str:
        key = json.dumps(shape(schema), sort_keys=True)
        if key in self.by_shape:
            return self.by_shape[key]
        name = self.unique(self.named.get(key) or NAMES.get((kind, path), default_name),
                           {**self.classes, **self.enums})
        self.by_shape[key] = name
        k = Klass(name, doc=str(schema.get("description") or "").split("\n")[0][:110])
        self.classes[name] = k
        for prop, sub in (schema.get("properties") or {}).items():
            ann, entry = self.field_type(kind, f"{path}.{prop}", prop, sub, name)
            k.fields.append((prop, snake(prop), ann, entry))
        # protobuf JSON accepts a field's proto name beside its JSON name, and Istio's schemas list some of both
        # (jwksUri and jwks_uri, mirrorPercent and mirror_percent): one attribute, the JSON name read first.
        k.fields.sort(key=lambda f: (f[1], f[0] != _camel(f[1]) and "_" in f[0]))
        for (j1, a1, t1, _e1), (j2, a2, t2, _e2) in zip(k.fields, k.fields[1:], strict=False):
            if a1 == a2 and t1 != t2:
                raise SystemExit(f"{name}: {j1} and {j2} are one field with two types ({t1}, {t2})")
        self.order.append(name)
        return name

    def field_type(self, kind: str, path: str, prop: str, s: dict[str, Any], owner: str) -> tuple[str, str]:
        if s.get("x-kubernetes-int-or-string"):
            return "int | str", '("is",)'
        if s.get("x-kubernetes-preserve-unknown-fields") and not s.get("properties"):
            return "Any", '("j",)'
        t = s.get("type")
        if t == "string":
            if prop in DURATION_FIELDS:
                return "Duration", '("d",)'
            if s.get("enum"):
                values = tuple(str(v) for v in s["enum"])
                name = self.enum(owner, prop, values)
                return name, f'("e", {name})'
            return "str", '("s",)'
        if prop in DURATION_FIELDS and kind != "WorkloadGroup" and t is not None:
            raise SystemExit(f"{kind} {path}: listed as a duration but has type {t}")
        if t == "integer":
            return "int", '("i",)'
        if t == "number":
            return "float", '("f",)'
        if t == "boolean":
            return "bool", '("b",)'
        if t == "array":
            items = s.get("items") or {}
            ann, entry = self.field_type(kind, f"{path}[]", prop, items, owner)
            return f"tuple[{ann}, ...]", f'("l", {entry})'
        if t == "object" or t is None:
            if s.get("properties"):
                name = self.klass(kind, path, s, owner + pascal(prop))
                return name, f'("m", {name})'
            ap = s.get("additionalProperties")
            if isinstance(ap, dict):
                ann, entry = self.field_type(kind, f"{path}{{}}", prop, ap, owner)
                return f"Mapping[str, {ann}]", f'("M", {entry})'
            return "Any", '("j",)'
        raise SystemExit(f"{kind} {path}: unsupported schema type {t!r}")

    def render(self) -> str:
        out = [HEADER]
        for e in self.enums.values():
            out.append(f"class {e.name}(SpecEnum):")
            for v in e.values:
                member = re.sub(r"[^0-9A-Za-z_]", "_", v) or "EMPTY"
                if member[0].isdigit() or keyword.iskeyword(member):
                    member = "V_" + member
                out.append(f"    {member} = {v!r}")
            out.append("\n")
        for name in self.order:
            k = self.classes[name]
            out.append("@dataclass(frozen=True, slots=True, kw_only=True)")
            out.append(f"class {name}:")
            if k.doc:
                out.append(f"    {json.dumps(k.doc, ensure_ascii=False)}")
                out.append("")
            if not k.fields:
                out.append("    pass")
            for i, (_json, attr, ann, _entry) in enumerate(k.fields):
                if i and k.fields[i - 1][1] == attr:
                    continue  # the proto-name alias of the field before
                if ann.startswith("tuple["):
                    out.append(f"    {attr}: {ann} = ()")
                elif ann.startswith("Mapping["):
                    out.append(f"    {attr}: {ann} = field(default_factory=dict)")
                else:
                    out.append(f"    {attr}: {ann} | None = None")
            out.append("\n")
        for name in self.order:
            k = self.classes[name]
            rows = "".join(f"\n    ({j!r}, {a!r}, {e})," for j, a, _ann, e in k.fields)
            out.append(f"register({name}, ({rows}\n))" if rows else f"register({name}, ())")
        out.append("")
        out.append("KINDS: Mapping[tuple[str, str], type] = {")
        for (group, kind), name in self.kinds.items():
            out.append(f"    ({group!r}, {kind!r}): {name},")
        out.append("}")
        out.append('"""The spec class of each served kind, by (API group, kind)."""')
        out.append("")
        out.append("RESOURCES: Mapping[GroupResource, tuple[str, type]] = {")
        for (group, kind), (plural, name) in self.resources.items():
            out.append(f"    GroupResource({group!r}, {plural!r}): ({kind!r}, {name}),")
        out.append("}")
        out.append('"""(kind, spec class) of each served collection, by its GroupResource."""')
        out.append("")
        names = sorted([*self.enums, *self.order, "KINDS", "RESOURCES"])
        out.append("__all__ = [")
        out.extend(f"    {n!r}," for n in names)
        out.append("]")
        out.append("")
        return "\n".join(out).replace("\n\n\n\n", "\n\n\n")

    kinds: dict[tuple[str, str], str]
    resources: dict[tuple[str, str], tuple[str, str]]


def generate() -> str:
    g = Generator()
    g.kinds = {}
    g.resources = {}
    infos = [info for info in default_registry() if info.group != CORE]
    for info in infos:
        g.learn_names(info.kind, "", spec_schema(info))
    for info in default_registry():
        if info.group == CORE:
            continue
        schema = spec_schema(info)
        g.kinds[(info.group, info.kind)] = g.klass(info.kind, "", schema, info.kind)
        g.resources[(info.group, info.kind)] = (info.plural, g.kinds[(info.group, info.kind)])
    return g.render()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the generated file is not up to date")
    args = parser.parse_args()
    text = generate()
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run python tools/gen_spec_types.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
