"""Semantic validation of security.istio.io and telemetry.istio.io kinds on the typed spec, after Istio's webhook.

Authorization policies are where a typo silently opens or closes a door, so the rules here are strict about
what Istio rejects: empty sources and operations, unknown ``when`` keys, malformed IPs and ports, path wildcards
Envoy cannot express, and the action/provider combinations that do nothing. Each rule takes the object's metadata
and its decoded spec (:mod:`meshplane.model.spec`), the objects translation reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from meshplane.api import _common as c
from meshplane.api import _formats as fmt
from meshplane.api._report import Report
from meshplane.model.spec import (
    AuthorizationPolicy,
    ObjectMeta,
    Operation,
    PeerAuthentication,
    RequestAuthentication,
    Rule,
    Source,
    Telemetry,
)
from meshplane.model.telemetry import cel_to_format, code_filter

_SOURCE_FIELDS = ("principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces",
                  "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")
_TCP_SOURCE_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks",
                      "remoteIpBlocks", "notRemoteIpBlocks")
_OPERATION_FIELDS = ("hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths")
_IP_FIELDS = ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")

# The `when` keys Istio supports; the bracketed ones take a name: request.headers[User-Agent].
_PLAIN_KEYS = {"source.ip", "remote.ip", "source.namespace", "source.principal", "request.auth.principal",
               "request.auth.audiences", "request.auth.presenter", "destination.ip", "destination.port",
               "connection.sni"}
_MAP_KEYS = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")
_KEY_WITH_NAME = re.compile(r"^[^\[\]]+\[[^\[\]]+\]$")
_UNSUPPORTED_TEMPLATE = re.compile(r"/\{\w+=\*\*?\}|\{\w*\}|/\*\*?|\*\*?/")


def _source_fields(src: Source) -> dict[str, tuple[str, ...]]:
    """A source's fields by JSON name."""
    return {"principals": src.principals, "notPrincipals": src.not_principals,
            "requestPrincipals": src.request_principals, "notRequestPrincipals": src.not_request_principals,
            "namespaces": src.namespaces, "notNamespaces": src.not_namespaces, "ipBlocks": src.ip_blocks,
            "notIpBlocks": src.not_ip_blocks, "remoteIpBlocks": src.remote_ip_blocks,
            "notRemoteIpBlocks": src.not_remote_ip_blocks}


def _operation_fields(op: Operation) -> dict[str, tuple[str, ...]]:
    """An operation's fields by JSON name."""
    return {"hosts": op.hosts, "notHosts": op.not_hosts, "ports": op.ports, "notPorts": op.not_ports,
            "methods": op.methods, "notMethods": op.not_methods, "paths": op.paths, "notPaths": op.not_paths}


def _ports(values: Sequence[str], path: str, r: Report) -> None:
    for i, value in enumerate(values):
        if not value.isdigit() or int(value) > 65535:
            r.invalid(f"{path}[{i}]", value, "must be a port number between 0 and 65535")


def _paths(values: Sequence[str], path: str, r: Report) -> None:
    for i, value in enumerate(values):
        p = f"{path}[{i}]"
        if "{*}" in value or "{**}" in value:
            if _UNSUPPORTED_TEMPLATE.search(value):
                r.invalid(p, value, "invalid or unsupported path template: only {*} and {**} segments are allowed")
            continue
        if value == "*" or "*" not in value:
            continue
        stars = value.count("*")
        if stars > 1 or not (value.startswith("*") or value.endswith("*")):
            r.invalid(p, value, "'*' may only be used as a prefix or suffix of a path, or in {*} and {**} "
                      "templates")


def _when(key: str, values: Sequence[str], not_values: Sequence[str], path: str, r: Report) -> None:
    """A ``when`` condition: a supported key, and values of the key's form (IPs, ports)."""
    if key in _PLAIN_KEYS:
        for name, vals in (("values", values), ("notValues", not_values)):
            vals = [v for v in vals if v]
            if key in ("source.ip", "remote.ip", "destination.ip"):
                c.ip_list(vals, f"{path}.{name}", r)
            elif key == "destination.port":
                _ports(vals, f"{path}.{name}", r)
        return
    if key.startswith(_MAP_KEYS):
        if not _KEY_WITH_NAME.match(key):
            r.invalid(f"{path}.key", key, "bad key: should have format a[b]")
        return
    if key == "destination.namespace":
        why = "attribute destination.namespace is replaced by the metadata.namespace"
    elif key.startswith("destination.labels"):
        why = "attribute destination.labels is replaced by the workload selector"
    elif key in ("destination.name", "destination.user"):
        why = f"deprecated attribute {key}: only supported in v1alpha1"
    else:
        supported = [*sorted(_PLAIN_KEYS), "request.headers[<name>]", "request.auth.claims[<name>]",
                     "experimental.envoy.filters.*[<name>]"]
        why = "unknown attribute; supported: " + ", ".join(supported)
    r.invalid(f"{path}.key", key, why)


def authorization_policy(meta: ObjectMeta, spec: AuthorizationPolicy, r: Report) -> None:
    c.selector_or_targets(spec.selector, spec.target_ref, spec.target_refs, r)
    action = spec.action or "ALLOW"
    has_rules = c.present(spec.rules, "spec.rules", r)
    provider = spec.provider
    if action == "CUSTOM":
        if not has_rules:
            r.required("spec.rules", "CUSTOM action without rules is never triggered; add an empty rule {} to "
                       "trigger it for every request")
        if provider is None or not provider.name:
            r.required("spec.provider.name", "CUSTOM action needs the name of an extension provider")
    elif provider is not None:
        r.forbidden("spec.provider", f"provider may only be set with action CUSTOM, found {action}")
    if action == "DENY" and not has_rules:
        r.required("spec.rules", "DENY action without rules is never triggered; add an empty rule {} to trigger it "
                   "for every request")
    dry_run = meta.annotations.get("istio.io/dry-run")
    if dry_run is not None:
        p = "metadata.annotations[istio.io/dry-run]"
        if action not in ("ALLOW", "DENY"):
            r.invalid(p, dry_run, f"dry-run only supports action ALLOW or DENY, found {action}")
        elif dry_run.lower() not in ("true", "false", "1", "0", "t", "f"):
            r.invalid(p, dry_run, "must be true or false")
    for i, rule in enumerate(spec.rules):
        _rule(rule, f"spec.rules[{i}]", r, action=action)


def _rule(rule: Rule, path: str, r: Report, *, action: str) -> None:
    if not rule.from_ and f"{path}.from" in r.empty:
        r.required(f"{path}.from", "from, if present, must not be empty")
    tcp_from = has_from = False
    for j, frm in enumerate(rule.from_):
        p = f"{path}.from[{j}]"
        fields = {} if frm.source is None else _source_fields(frm.source)
        if not any(fields.values()):
            r.required(f"{p}.source", "source must set at least one of " + ", ".join(_SOURCE_FIELDS))
            continue
        has_from = True
        tcp_from = tcp_from or any(fields[k] for k in _TCP_SOURCE_FIELDS)
        for key in _SOURCE_FIELDS:
            c.non_empty_strings(fields[key], f"{p}.source.{key}", r)
        for key in _IP_FIELDS:
            c.ip_list([v for v in fields[key] if v], f"{p}.source.{key}", r)
        if action == "CUSTOM":
            for key in ("principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces",
                        "notNamespaces"):
                if fields[key]:
                    r.forbidden(f"{p}.source.{key}", "not supported with CUSTOM action")
    if not rule.to and f"{path}.to" in r.empty:
        r.required(f"{path}.to", "to, if present, must not be empty")
    tcp_to = has_to = False
    for j, to in enumerate(rule.to):
        p = f"{path}.to[{j}]"
        op = to.operation
        ops = {} if op is None else _operation_fields(op)
        if op is None or not any(ops.values()):
            r.required(f"{p}.operation", "operation must set at least one of " + ", ".join(_OPERATION_FIELDS))
            continue
        has_to = True
        tcp_to = tcp_to or bool(op.ports or op.not_ports)
        for key in _OPERATION_FIELDS:
            c.non_empty_strings(ops[key], f"{p}.operation.{key}", r)
        _ports(op.ports, f"{p}.operation.ports", r)
        _ports(op.not_ports, f"{p}.operation.notPorts", r)
        _paths(op.paths, f"{p}.operation.paths", r)
        _paths(op.not_paths, f"{p}.operation.notPaths", r)
    for k, cond in enumerate(rule.when):
        p = f"{path}.when[{k}]"
        key = cond.key or ""
        if not key:
            r.required(f"{p}.key")
            continue
        values, not_values = cond.values, cond.not_values
        if not values and not not_values:
            r.required(f"{p}.values", f"at least one of values or notValues must be set for key {key}")
            continue
        c.non_empty_strings(values, f"{p}.values", r)
        c.non_empty_strings(not_values, f"{p}.notValues", r)
        _when(key, values, not_values, p, r)
        if action == "CUSTOM" and (key in ("source.namespace", "source.principal")
                                   or key.startswith("request.auth.")):
            r.forbidden(f"{p}.key", f"{key} is not supported with CUSTOM action")
    if action == "DENY" and ((has_from and not has_to and not tcp_from) or (has_to and not tcp_to)):
        r.warn(f"{path}: this DENY rule uses only HTTP attributes, so it denies all traffic to TCP ports in its "
               "scope; specify the port explicitly")


def peer_authentication(meta: ObjectMeta, spec: PeerAuthentication, r: Report) -> None:
    selector = spec.selector
    c.workload_selector(None if selector is None else selector.match_labels, "spec.selector.matchLabels", r)
    _root_namespace_selector(meta, spec, r)
    port_level = spec.port_level_mtls
    if not c.present(port_level, "spec.portLevelMtls", r):
        return
    if not port_level:
        r.required("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element")
    if selector is None or not selector.match_labels:
        r.forbidden("spec.portLevelMtls", "port level mTLS needs a workload selector (spec.selector.matchLabels): "
                    "mesh- and namespace-wide policies cannot have it")
    for port in port_level:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            r.invalid(f"spec.portLevelMtls[{port}]", port, "port must be a number in range 1..65535")


# The mesh's root namespace unless the mesh configuration's ``rootNamespace`` says otherwise (admission does not
# read the mesh configuration).
_DEFAULT_ROOT_NAMESPACE = "istio-system"


def _root_namespace_selector(meta: ObjectMeta, spec: PeerAuthentication, r: Report) -> None:
    """Istio ignores a PeerAuthentication with a workload selector in the root namespace (so does
    ``translate.peerauthn``): accepted, as Istio does, but said."""
    if spec.selector is not None and spec.selector.match_labels and meta.namespace == _DEFAULT_ROOT_NAMESPACE:
        r.warn(f"spec.selector: a PeerAuthentication with a workload selector in the root namespace "
               f"({_DEFAULT_ROOT_NAMESPACE} unless the mesh configuration's rootNamespace names another) applies "
               "to no workload, as in Istio; create it in the namespace of the workloads it selects")


def request_authentication(meta: ObjectMeta, spec: RequestAuthentication, r: Report) -> None:
    c.selector_or_targets(spec.selector, spec.target_ref, spec.target_refs, r)
    for i, rule in enumerate(spec.jwt_rules):
        p = f"spec.jwtRules[{i}]"
        if not rule.issuer:
            r.required(f"{p}.issuer", "issuer must be set")
        c.non_empty_strings(rule.audiences, f"{p}.audiences", r)
        uri = rule.jwks_uri
        if uri:
            key = "jwks_uri" if f"{p}.jwks_uri" in r.aliases else "jwksUri"
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                r.invalid(f"{p}.{key}", uri, "must be an http or https URL")
        if rule.jwks:
            if uri:
                r.forbidden(f"{p}.jwks", "may not be set together with jwksUri")
            try:
                keys = json.loads(rule.jwks)
            except ValueError as e:
                r.invalid(f"{p}.jwks", "<jwks>", f"jwks parse error: {e}")
            else:
                if not isinstance(keys, dict) or not isinstance(keys.get("keys", keys.get("kty")), list | str):
                    r.invalid(f"{p}.jwks", "<jwks>", "jwks must be a JSON Web Key or Key Set")
        for j, header in enumerate(rule.from_headers):
            if not header.name:
                r.required(f"{p}.fromHeaders[{j}].name")
        c.non_empty_strings(rule.from_params, f"{p}.fromParams", r)
        c.non_empty_strings(rule.from_cookies, f"{p}.fromCookies", r)
        for j, out in enumerate(rule.output_claim_to_headers):
            q = f"{p}.outputClaimToHeaders[{j}]"
            if not out.claim:
                r.required(f"{q}.claim")
            err = fmt.header_name(out.header or "")
            if err:
                r.invalid(f"{q}.header", out.header or "", err)
        c.duration(rule.timeout, f"{p}.timeout", r)


def telemetry(meta: ObjectMeta, spec: Telemetry, r: Report) -> None:
    c.selector_or_targets(spec.selector, spec.target_ref, spec.target_refs, r)
    providers = ([("metrics", i, m.providers) for i, m in enumerate(spec.metrics)]
                 + [("accessLogging", i, a.providers) for i, a in enumerate(spec.access_logging)]
                 + [("tracing", i, t.providers) for i, t in enumerate(spec.tracing)])
    for section, i, listed in providers:
        for j, provider in enumerate(listed):
            if not provider.name:
                r.required(f"spec.{section}[{i}].providers[{j}].name")
    if len(spec.tracing) > 1:
        r.warn("spec.tracing: multiple tracing configurations are not supported; only the first applies")
    for i, tr in enumerate(spec.tracing):
        p = f"spec.tracing[{i}]"
        pct = tr.random_sampling_percentage
        if pct is not None and not 0 <= pct <= 100:
            r.invalid(f"{p}.randomSamplingPercentage", pct, "must be in range [0.0, 100.0]")
        for name, tag in tr.custom_tags.items():
            kinds = [k for k, v in (("literal", tag.literal), ("environment", tag.environment),
                                    ("header", tag.header)) if v is not None]
            if len(kinds) != 1:
                r.invalid(f"{p}.customTags[{name}]", tag, "exactly one of literal, environment or header must be set")
    for i, metrics in enumerate(spec.metrics):
        p = f"spec.metrics[{i}]"
        c.duration(metrics.reporting_interval, f"{p}.reportingInterval", r)
        for j, override in enumerate(metrics.overrides):
            for name, tag_override in override.tag_overrides.items():
                q = f"{p}.overrides[{j}].tagOverrides[{name}]"
                op = tag_override.operation or "UPSERT"
                if op == "UPSERT" and not tag_override.value:
                    r.required(f"{q}.value", "value must be set when operation is UPSERT")
                elif op == "REMOVE" and tag_override.value:
                    r.forbidden(f"{q}.value", "value may only be set when operation is UPSERT")
    _telemetry_support(spec, r)


def _telemetry_support(spec: Telemetry, r: Report) -> None:
    """Warnings for what the mesh accepts (Istio does) but does not carry out, each naming its field: a stored
    object must not look as if it acted when part of it does not."""
    for i, metrics in enumerate(spec.metrics):
        p = f"spec.metrics[{i}]"
        for j, provider in enumerate(metrics.providers):
            if provider.name and provider.name != "prometheus":
                r.warn(f"{p}.providers[{j}]: '{provider.name}' is not applied (metrics are served to Prometheus only)")
        if metrics.reporting_interval is not None:
            r.warn(f"{p}.reportingInterval: not applied (proxies publish their metrics at each scrape)")
        for j, override in enumerate(metrics.overrides):
            if override.match is not None and override.match.custom_metric:
                r.warn(f"{p}.overrides[{j}].match.customMetric: custom metrics are not served; the override is ignored")
            for name, change in override.tag_overrides.items():
                if change.value and (change.operation or "UPSERT") == "UPSERT" and cel_to_format(change.value) is None:
                    r.warn(f"{p}.overrides[{j}].tagOverrides[{name}].value: {change.value!r} is not an attribute "
                           "meshplane translates (see docs/observability.md); the tag keeps its default value")
    for i, logging in enumerate(spec.access_logging):
        p = f"spec.accessLogging[{i}]"
        expr = logging.filter.expression if logging.filter is not None else None
        if expr and code_filter(expr) is None:
            r.warn(f"{p}.filter.expression: {expr!r} is not translated (only comparisons of response.code are); "
                   "every request is logged")
    for i, tr in enumerate(spec.tracing):
        if tr.use_request_id_for_trace_sampling is not None:
            r.warn(f"spec.tracing[{i}].useRequestIdForTraceSampling: not applied (sampling is random per request)")
        if len(tr.providers) > 1:
            r.warn(f"spec.tracing[{i}].providers: only the first provider receives spans")
