"""Semantic validation of the extension kinds: ASM's ASMLocalRateLimiter and Istio's WasmPlugin.

What the rules guard: every accepted field takes effect (docs/extensions.md). A limiter rule names the listener
port it limits and a bucket Envoy accepts (a fill interval of at least 50 ms); a header or query condition is one
well-formed matcher; ASM's deprecated ``route.header_match`` (it narrows the routes limited, which Envoy's route
match cannot express per filter) is refused with the replacement (``limit_overrides``) named. A WasmPlugin's
module is a ``file://`` URL Envoy reads itself: meshplane fetches nothing, so http, https and OCI URLs are refused,
and the fields about fetching (``sha256``, ``imagePullPolicy``, ``imagePullSecret``) are warned about as unused;
network plugins (``type: NETWORK``) are refused. An EnvoyFilterTemplate's every value is admitted as the EnvoyFilter
it holds (its causes named under ``spec.templates[i].value``), and its version ranges may not overlap.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import yaml

from meshplane.api import _common as c
from meshplane.api import _formats as fmt
from meshplane.api._report import Report
from meshplane.api.errors import InvalidObject
from meshplane.model.spec import (
    ASMLocalRateLimiter,
    ASMLocalRateLimiterConfigsLimitFillInterval,
    ASMLocalRateLimiterConfigsLimitOverridesRequestMatchQueryMatch,
    ASMLocalRateLimiterConfigsMatchVhostRouteHeaderMatch,
    EnvoyFilterTemplate,
    EnvoyFilterTemplateBinding,
    ObjectMeta,
    WasmPlugin,
)
from meshplane.model.templates import envoy_filter_spec, parse_range, parse_version
from meshplane.model.wasm import file_path

_MIN_FILL_NANOS = 50_000_000  # Envoy's minimum token bucket fill interval


def _fill_interval(fi: ASMLocalRateLimiterConfigsLimitFillInterval | None, path: str, r: Report) -> None:
    if fi is None:
        r.required(path)
        return
    if (fi.nanos or 0) >= 1_000_000_000:
        r.invalid(f"{path}.nanos", fi.nanos, "must be less than 1000000000")
    total = (fi.seconds or 0) * 1_000_000_000 + (fi.nanos or 0)
    if total < _MIN_FILL_NANOS:
        r.invalid(path, {"seconds": fi.seconds or 0, "nanos": fi.nanos or 0},
                  "must be at least 50ms (Envoy's minimum fill interval)")


def _matcher(m: ASMLocalRateLimiterConfigsMatchVhostRouteHeaderMatch
             | ASMLocalRateLimiterConfigsLimitOverridesRequestMatchQueryMatch, path: str, r: Report,
             *, header: bool) -> None:
    if header and m.name:
        err = fmt.header_name(m.name) if not m.name.startswith(":") else None
        if err:
            r.invalid(f"{path}.name", m.name, err)
    kinds = [k for k in ("exact_match", "prefix_match", "suffix_match", "regex_match", "present_match")
             if getattr(m, k) is not None]
    if len(kinds) > 1:
        r.forbidden(f"{path}.{kinds[1]}", f"may not be set together with {kinds[0]}")
    if m.regex_match is not None:
        err = fmt.re2(m.regex_match)
        if err:
            r.invalid(f"{path}.regex_match", m.regex_match, err)


def local_rate_limiter(meta: ObjectMeta, spec: ASMLocalRateLimiter, r: Report) -> None:
    del meta
    c.workload_selector(None if spec.workload_selector is None else spec.workload_selector.labels,
                        "spec.workloadSelector.labels", r)
    gateway = bool(spec.is_gateway)
    for i, rule in enumerate(spec.configs):
        p = f"spec.configs[{i}]"
        vh = rule.match.vhost if rule.match is not None else None
        if vh is not None:
            if gateway and not vh.name:
                r.required(f"{p}.match.vhost.name", "a gateway rule names the host whose routes it limits")
            if not gateway and vh.name not in (None, "", "*"):
                r.warn(f"{p}.match.vhost.name: {vh.name!r} is not used: a sidecar's inbound virtual host is "
                       f"matched by port only (use \"*\")")
            if vh.route is not None and vh.route.header_match:
                r.forbidden(f"{p}.match.vhost.route.header_match",
                            "deprecated by ASM and not supported: use limit_overrides[].request_match.header_match "
                            "for a bucket of their own for matching requests")
        if rule.limit is not None:
            _fill_interval(rule.limit.fill_interval, f"{p}.limit.fill_interval", r)
            for name in rule.limit.response_header_to_add:
                err = fmt.header_name(name)
                if err:
                    r.invalid(f"{p}.limit.response_header_to_add[{name}]", name, err)
        for j, ov in enumerate(rule.limit_overrides):
            q = f"{p}.limit_overrides[{j}]"
            rm = ov.request_match
            if rm is None or (not rm.header_match and not rm.query_match):
                r.required(f"{q}.request_match", "one of header_match or query_match is required")
            else:
                for k, hm in enumerate(rm.header_match):
                    _matcher(hm, f"{q}.request_match.header_match[{k}]", r, header=True)
                for k, qm in enumerate(rm.query_match):
                    _matcher(qm, f"{q}.request_match.query_match[{k}]", r, header=False)
            if ov.limit is not None:
                _fill_interval(ov.limit.fill_interval, f"{q}.limit.fill_interval", r)


_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def wasm_plugin(meta: ObjectMeta, spec: WasmPlugin, r: Report) -> None:
    del meta
    url = spec.url or ""
    if not url:
        r.required("spec.url")
    elif file_path(url) is None:
        scheme = urlparse(url).scheme
        if scheme in ("http", "https", "oci", ""):
            r.not_supported("spec.url", url, ["file:///<absolute path>"])
        else:
            r.invalid("spec.url", url, "must be file:///<absolute path> (on the proxies' host)")
    if spec.sha256:
        if not _SHA256.match(spec.sha256):
            r.invalid("spec.sha256", spec.sha256, "must be 64 hexadecimal digits")
        else:
            r.warn("spec.sha256: not checked: Envoy reads a file:// module itself")
    if spec.image_pull_policy is not None and spec.image_pull_policy.value != "UNSPECIFIED_POLICY":
        r.warn("spec.imagePullPolicy: not used: nothing is pulled for a file:// module")
    if spec.image_pull_secret:
        r.warn("spec.imagePullSecret: not used: nothing is pulled for a file:// module")
    if spec.verification_key:
        r.warn("spec.verificationKey: deprecated by Istio and not used")
    if spec.type is not None and spec.type.value == "NETWORK":
        r.forbidden("spec.type", "network Wasm plugins are not supported; use an HTTP plugin")
    refs = list(spec.target_refs)
    if spec.target_ref is not None:
        if refs:
            r.forbidden("spec.targetRef", "may not be set together with targetRefs")
        refs.append(spec.target_ref)
    if refs and spec.selector is not None and spec.selector.match_labels:
        r.forbidden("spec.selector", "may not be set together with targetRefs")
    for i, ref in enumerate(spec.target_refs):
        if ref.kind != "Gateway" or ref.group not in (None, "", "gateway.networking.k8s.io"):
            r.not_supported(f"spec.targetRefs[{i}].kind", ref.kind, ["Gateway (gateway.networking.k8s.io)"])
    if spec.target_ref is not None and (spec.target_ref.kind != "Gateway" or spec.target_ref.group not in (
            None, "", "gateway.networking.k8s.io")):
        r.not_supported("spec.targetRef.kind", spec.target_ref.kind, ["Gateway (gateway.networking.k8s.io)"])
    if spec.selector is not None:
        c.workload_selector(spec.selector.match_labels, "spec.selector.matchLabels", r)
    if spec.plugin_config is not None and not isinstance(spec.plugin_config, dict):
        r.invalid("spec.pluginConfig", spec.plugin_config, "must be an object")
    seen: set[str] = set()
    envs = spec.vm_config.env if spec.vm_config is not None else ()
    for i, e in enumerate(envs):
        p = f"spec.vmConfig.env[{i}]"
        if not e.name:
            r.required(f"{p}.name")
        elif e.name in seen:
            r.duplicate(f"{p}.name", e.name)
        seen.add(e.name or "")
        if e.value_from is not None and e.value_from.value == "HOST" and e.value:
            r.forbidden(f"{p}.value", "must be empty when valueFrom is HOST (the proxy's own value is used)")


def envoy_filter_template(meta: ObjectMeta, spec: EnvoyFilterTemplate, r: Report) -> None:
    """Each value must read as an EnvoyFilter that admission accepts (its causes reported under the value's
    path); the version ranges must parse and not overlap."""
    ranges: list[tuple[int, tuple[tuple[int, int], tuple[int, int]]]] = []
    for i, tv in enumerate(spec.templates):
        p = f"spec.templates[{i}]"
        rng = parse_range(tv.istio_version or "")
        if rng is None:
            r.invalid(f"{p}.istioVersion", tv.istio_version,
                      "must be MAJOR.MINOR, LOW-HIGH, LOW-MAX_VERSION or MIN_VERSION-HIGH (LOW <= HIGH)")
        else:
            for j, other in ranges:
                if rng[0] <= other[1] and other[0] <= rng[1]:
                    r.invalid(f"{p}.istioVersion", tv.istio_version,
                              f"overlaps spec.templates[{j}].istioVersion")
            ranges.append((i, rng))
        try:
            ef_spec = envoy_filter_spec(tv.value or "")
        except ValueError as e:
            r.invalid(f"{p}.value", "<EnvoyFilter>", str(e))
            continue
        if _has_metadata(tv.value or ""):
            r.warn(f"{p}.value: metadata is not used: the EnvoyFilter a binding makes has the binding's name and "
                   "namespace")
        _nested_envoy_filter(meta, ef_spec, f"{p}.value", r)


def _has_metadata(value: str) -> bool:
    doc = yaml.safe_load(value)
    return isinstance(doc, dict) and bool(doc.get("metadata"))


def _nested_envoy_filter(meta: ObjectMeta, ef_spec: dict[str, Any], path: str, r: Report) -> None:
    from meshplane.api.kinds import NETWORKING, default_registry  # validation imports this module
    from meshplane.api.validation import validate

    info = default_registry().by_kind(NETWORKING, "EnvoyFilter")
    assert info is not None
    obj = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
           "metadata": {"name": meta.name or "template", "namespace": meta.namespace or "default"}, "spec": ef_spec}
    try:
        warnings = validate(info, obj)
    except InvalidObject as e:
        for cause in e.causes:
            r.add(f"{path}: {cause.field}", cause.reason, cause.message)
        return
    r.warnings.extend(f"{path}: {w}" for w in warnings)


def envoy_filter_template_binding(meta: ObjectMeta, spec: EnvoyFilterTemplateBinding, r: Report) -> None:
    del meta
    ref = spec.template_ref
    if ref is not None and ref.istio_version is not None and parse_version(ref.istio_version) is None:
        r.invalid("spec.templateRef.istioVersion", ref.istio_version, "must be MAJOR.MINOR (1.20)")
    if spec.workload_selector is not None:
        c.workload_selector(spec.workload_selector.labels, "spec.workloadSelector.labels", r)


__all__ = ["envoy_filter_template", "envoy_filter_template_binding", "local_rate_limiter", "wasm_plugin"]
