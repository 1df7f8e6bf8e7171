"""Semantic validation of security.istio.io and telemetry.istio.io kinds, after Istio's webhook rules.

Authorization policies are where a typo silently opens or closes a door, so the rules here are strict about
what Istio rejects: empty sources and operations, unknown ``when`` keys, malformed IPs and ports, path wildcards
Envoy cannot express, and the action/provider combinations that do nothing.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from meshplane.api import _common_json as c
from meshplane.api import _formats as fmt
from meshplane.api._report import Report

J = dict[str, Any]

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


def _ports(values: list[str] | None, path: str, r: Report) -> None:
    for i, value in enumerate(values or []):
        if not value.isdigit() or int(value) > 65535:
            r.invalid(f"{path}[{i}]", value, "must be a port number between 0 and 65535")


def _paths(values: list[str] | None, path: str, r: Report) -> None:
    for i, value in enumerate(values or []):
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


def _when(key: str, values: list[str], not_values: list[str], path: str, r: Report) -> None:
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


def authorization_policy(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    c.selector_or_targets(spec, r)
    action = spec.get("action", "ALLOW")
    rules = spec.get("rules")
    provider = spec.get("provider")
    if action == "CUSTOM":
        if rules is None:
            r.required("spec.rules", "CUSTOM action without rules is never triggered; add an empty rule {} to "
                       "trigger it for every request")
        if not (provider or {}).get("name"):
            r.required("spec.provider.name", "CUSTOM action needs the name of an extension provider")
    elif provider is not None:
        r.forbidden("spec.provider", f"provider may only be set with action CUSTOM, found {action}")
    if action == "DENY" and rules is None:
        r.required("spec.rules", "DENY action without rules is never triggered; add an empty rule {} to trigger it "
                   "for every request")
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    dry_run = annotations.get("istio.io/dry-run")
    if dry_run is not None:
        p = "metadata.annotations[istio.io/dry-run]"
        if action not in ("ALLOW", "DENY"):
            r.invalid(p, dry_run, f"dry-run only supports action ALLOW or DENY, found {action}")
        elif dry_run.lower() not in ("true", "false", "1", "0", "t", "f"):
            r.invalid(p, dry_run, "must be true or false")
    for i, rule in enumerate(rules or []):
        p = f"spec.rules[{i}]"
        _rule(rule, p, r, action=action)


def _rule(rule: J, path: str, r: Report, *, action: str) -> None:
    sources = rule.get("from")
    if sources is not None and not sources:
        r.required(f"{path}.from", "from, if present, must not be empty")
    tcp_from = has_from = False
    for j, frm in enumerate(sources or []):
        p = f"{path}.from[{j}]"
        src = frm.get("source")
        if not src or not any(src.get(k) for k in _SOURCE_FIELDS):
            r.required(f"{p}.source", "source must set at least one of " + ", ".join(_SOURCE_FIELDS))
            continue
        has_from = True
        tcp_from = tcp_from or any(src.get(k) for k in _TCP_SOURCE_FIELDS)
        for key in _SOURCE_FIELDS:
            c.non_empty_strings(src.get(key), f"{p}.source.{key}", r)
        for key in _IP_FIELDS:
            c.ip_list([v for v in src.get(key) or [] if v], f"{p}.source.{key}", r)
        if action == "CUSTOM":
            for key in ("principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces",
                        "notNamespaces"):
                if src.get(key):
                    r.forbidden(f"{p}.source.{key}", "not supported with CUSTOM action")
    targets = rule.get("to")
    if targets is not None and not targets:
        r.required(f"{path}.to", "to, if present, must not be empty")
    tcp_to = has_to = False
    for j, to in enumerate(targets or []):
        p = f"{path}.to[{j}]"
        op = to.get("operation")
        if not op or not any(op.get(k) for k in _OPERATION_FIELDS):
            r.required(f"{p}.operation", "operation must set at least one of " + ", ".join(_OPERATION_FIELDS))
            continue
        has_to = True
        tcp_to = tcp_to or bool(op.get("ports") or op.get("notPorts"))
        for key in _OPERATION_FIELDS:
            c.non_empty_strings(op.get(key), f"{p}.operation.{key}", r)
        _ports(op.get("ports"), f"{p}.operation.ports", r)
        _ports(op.get("notPorts"), f"{p}.operation.notPorts", r)
        _paths(op.get("paths"), f"{p}.operation.paths", r)
        _paths(op.get("notPaths"), f"{p}.operation.notPaths", r)
    for k, cond in enumerate(rule.get("when") or []):
        p = f"{path}.when[{k}]"
        key = cond.get("key", "")
        if not key:
            r.required(f"{p}.key")
            continue
        values, not_values = cond.get("values") or [], cond.get("notValues") or []
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


def peer_authentication(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    selector = spec.get("selector")
    c.workload_selector(selector, "spec.selector", r)
    port_level = spec.get("portLevelMtls")
    if port_level is None:
        return
    if not port_level:
        r.required("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element")
    if not (selector or {}).get("matchLabels"):
        r.forbidden("spec.portLevelMtls", "port level mTLS needs a workload selector (spec.selector.matchLabels): "
                    "mesh- and namespace-wide policies cannot have it")
    for port in port_level:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            r.invalid(f"spec.portLevelMtls[{port}]", port, "port must be a number in range 1..65535")


def request_authentication(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    c.selector_or_targets(spec, r)
    for i, rule in enumerate(spec.get("jwtRules") or []):
        p = f"spec.jwtRules[{i}]"
        if not rule.get("issuer"):
            r.required(f"{p}.issuer", "issuer must be set")
        c.non_empty_strings(rule.get("audiences"), f"{p}.audiences", r)
        uri = rule.get("jwksUri") or rule.get("jwks_uri")
        if uri:
            key = "jwksUri" if rule.get("jwksUri") else "jwks_uri"
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                r.invalid(f"{p}.{key}", uri, "must be an http or https URL")
        jwks = rule.get("jwks")
        if jwks:
            if uri:
                r.forbidden(f"{p}.jwks", "may not be set together with jwksUri")
            try:
                keys = json.loads(jwks)
            except ValueError as e:
                r.invalid(f"{p}.jwks", "<jwks>", f"jwks parse error: {e}")
            else:
                if not isinstance(keys, dict) or not isinstance(keys.get("keys", keys.get("kty")), list | str):
                    r.invalid(f"{p}.jwks", "<jwks>", "jwks must be a JSON Web Key or Key Set")
        for j, header in enumerate(rule.get("fromHeaders") or []):
            if not header.get("name"):
                r.required(f"{p}.fromHeaders[{j}].name")
        c.non_empty_strings(rule.get("fromParams"), f"{p}.fromParams", r)
        c.non_empty_strings(rule.get("fromCookies"), f"{p}.fromCookies", r)
        for j, out in enumerate(rule.get("outputClaimToHeaders") or []):
            q = f"{p}.outputClaimToHeaders[{j}]"
            if not out.get("claim"):
                r.required(f"{q}.claim")
            err = fmt.header_name(out.get("header", ""))
            if err:
                r.invalid(f"{q}.header", out.get("header", ""), err)
        c.duration_at(rule, "timeout", p, r)


def telemetry(obj: J, r: Report) -> None:
    spec: J = obj.get("spec") or {}
    c.selector_or_targets(spec, r)
    for section in ("metrics", "accessLogging", "tracing"):
        for i, item in enumerate(spec.get(section) or []):
            for j, provider in enumerate(item.get("providers") or []):
                if not provider.get("name"):
                    r.required(f"spec.{section}[{i}].providers[{j}].name")
    tracing = spec.get("tracing") or []
    if len(tracing) > 1:
        r.warn("spec.tracing: multiple tracing configurations are not supported; only the first applies")
    for i, tr in enumerate(tracing):
        p = f"spec.tracing[{i}]"
        pct = tr.get("randomSamplingPercentage")
        if isinstance(pct, int | float) and not 0 <= pct <= 100:
            r.invalid(f"{p}.randomSamplingPercentage", pct, "must be in range [0.0, 100.0]")
        for name, tag in (tr.get("customTags") or {}).items():
            q = f"{p}.customTags[{name}]"
            kinds = [k for k in ("literal", "environment", "header") if tag.get(k) is not None]
            if len(kinds) != 1:
                r.invalid(q, tag, "exactly one of literal, environment or header must be set")
    for i, metrics in enumerate(spec.get("metrics") or []):
        p = f"spec.metrics[{i}]"
        c.duration_at(metrics, "reportingInterval", p, r)
        for j, override in enumerate(metrics.get("overrides") or []):
            for name, tag in (override.get("tagOverrides") or {}).items():
                q = f"{p}.overrides[{j}].tagOverrides[{name}]"
                op = tag.get("operation", "UPSERT")
                if op == "UPSERT" and not tag.get("value"):
                    r.required(f"{q}.value", "value must be set when operation is UPSERT")
                elif op == "REMOVE" and tag.get("value"):
                    r.forbidden(f"{q}.value", "value may only be set when operation is UPSERT")
