"""ASM's EnvoyFilterTemplate and EnvoyFilterTemplateBinding as the EnvoyFilters they stand for. Pure.

Why in translation rather than a controller writing EnvoyFilter objects: a binding is exactly an EnvoyFilter made
of a template's value, so reading it here keeps one source of truth (nothing generated to go stale, nothing to
garbage-collect when a template or binding goes) and a template change reaches every bound proxy with the next push.

What a binding stands for (ASM's "EnvoyFilterTemplate and EnvoyFilterTemplateBinding fields"):

* the template ``templateRef.name``, in the binding's namespace or else the config root namespace;
* of its ``templates``, the value whose ``istioVersion`` range holds ``templateRef.istioVersion``
  (``1.19``, ``1.19-1.21``, ``1.19-MAX_VERSION``, ``MIN_VERSION-1.18``; inclusive, by minor version);
* that value's EnvoyFilter spec, in the binding's namespace, with the binding's ``workloadSelector`` (when it has
  one), and every patch without a ``match.proxy.proxyVersion`` limited to proxies of ``templateRef.istioVersion``
  (``^1\\.20(\\.|$)``). Its source is ``EnvoyFilterTemplateBinding <namespace>/<name>``; it sorts among the
  EnvoyFilters by the binding's creation time and name.

A binding whose template (or version) is missing stands for nothing until it appears, as a route to a missing
host does; :func:`unresolved` says which and why, for ``meshplane analyze`` (MPL0005) and the binding's status.
Admission checks every template value as an EnvoyFilter.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from meshplane.model import spec as istio
from meshplane.model.spec import ConfigObject, DecodeError, decode_spec
from meshplane.model.templates import envoy_filter_spec, parse_range, parse_version

Template = ConfigObject[istio.EnvoyFilterTemplate]
Binding = ConfigObject[istio.EnvoyFilterTemplateBinding]
SOURCE_KIND = "EnvoyFilterTemplateBinding"
def _value_for(template: Template, version: tuple[int, int]) -> str | None:
    for tv in template.spec.templates:
        rng = parse_range(tv.istio_version or "")
        if rng is not None and rng[0] <= version <= rng[1]:
            return tv.value
    return None


def _limited(spec: istio.EnvoyFilter, version: str) -> istio.EnvoyFilter:
    regex = rf"^{re.escape(version)}(\.|$)"
    patches = []
    for cp in spec.config_patches:
        match = cp.match or istio.EnvoyFilterConfigPatchesMatch()
        proxy = match.proxy or istio.EnvoyFilterConfigPatchesMatchProxy()
        if not proxy.proxy_version:
            match = dataclasses.replace(match, proxy=dataclasses.replace(proxy, proxy_version=regex))
        patches.append(dataclasses.replace(cp, match=match))
    return dataclasses.replace(spec, config_patches=tuple(patches))


def _index(templates: Sequence[Template]) -> Mapping[tuple[str, str], Template]:
    return {(t.meta.namespace, t.meta.name): t for t in templates}


def _resolve(by_name: Mapping[tuple[str, str], Template], b: Binding, root: str) -> tuple[str | None, str]:
    """(the template value ``b`` stands for, "") or (None, why it stands for nothing)."""
    ref = b.spec.template_ref
    if ref is None or not ref.name or not ref.istio_version:
        return None, "spec.templateRef needs name and istioVersion"  # admission requires both
    version = parse_version(ref.istio_version)
    if version is None:
        return None, f"templateRef.istioVersion {ref.istio_version!r} is not a version"
    template = by_name.get((b.meta.namespace, ref.name)) or by_name.get((root, ref.name))
    if template is None:
        where = b.meta.namespace if b.meta.namespace == root else f"{b.meta.namespace} or {root}"
        return None, f"no EnvoyFilterTemplate {ref.name!r} in namespace {where}"
    value = _value_for(template, version)
    if value is None:
        ranges = [tv.istio_version or "" for tv in template.spec.templates]
        return None, (f"EnvoyFilterTemplate {template.meta.key} has no value for istioVersion "
                      f"{ref.istio_version} (its versions: {', '.join(ranges) or 'none'})")
    return value, ""


def unresolved(templates: Sequence[Template], bindings: Sequence[Binding], root: str) -> list[tuple[Binding, str]]:
    """(binding, why) of every binding that stands for nothing: its template or that template's version is missing
    (``meshplane analyze`` reports them; translation skips them until the template appears)."""
    by_name = _index(templates)
    return [(b, why) for b in bindings if (why := _resolve(by_name, b, root)[1])]


def bound_filters(templates: Sequence[Template], bindings: Sequence[Binding],
                  root: str) -> list[tuple[str, ConfigObject[istio.EnvoyFilter]]]:
    """(source, EnvoyFilter) of every binding whose template value exists and reads."""
    by_name = _index(templates)
    out = []
    for b in bindings:
        value, _ = _resolve(by_name, b, root)
        ref = b.spec.template_ref
        if value is None or ref is None or ref.istio_version is None:
            continue
        try:
            spec: istio.EnvoyFilter = decode_spec("networking.istio.io", "EnvoyFilter", envoy_filter_spec(value))
        except (ValueError, DecodeError):
            continue  # admission refused it: only a template stored by an older version
        if b.spec.workload_selector is not None and b.spec.workload_selector.labels:
            spec = dataclasses.replace(spec, workload_selector=istio.ServiceEntryWorkloadSelector(
                labels=dict(b.spec.workload_selector.labels)))
        spec = _limited(spec, ref.istio_version.strip())
        obj = ConfigObject("networking.istio.io", "EnvoyFilter", b.meta, spec, {})
        out.append((f"{SOURCE_KIND} {b.meta.key}", obj))
    return out


__all__ = ["SOURCE_KIND", "bound_filters", "unresolved"]
