"""EnvoyFilterTemplate and EnvoyFilterTemplateBinding as EnvoyFilters (``translate.envoyfiltertemplate``): which
template and value a binding takes, its namespace, selector and proxy version; the patches reach the proxies."""

from __future__ import annotations

from typing import Any

from _translate_helpers import bookinfo_registry, context, hcm_of, listeners, sidecar

from meshplane.model.resources import ENVOY_FILTER_TEMPLATE_BINDINGS, ENVOY_FILTER_TEMPLATES
from meshplane.model.spec import decode_resource
from meshplane.translate.envoyfilter import patches_for
from meshplane.translate.envoyfiltertemplate import bound_filters, unresolved

ASM = "istio.alibabacloud.com/v1"


def value(name: str) -> str:
    return f"""apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter:
              name: envoy.filters.http.router
    patch:
      operation: INSERT_BEFORE
      value:
        name: {name}
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          inlineCode: "function envoy_on_request(h) end"
"""


def template(name: str, ns: str = "istio-system") -> dict[str, Any]:
    return {"apiVersion": ASM, "kind": "EnvoyFilterTemplate", "metadata": {"name": name, "namespace": ns},
            "spec": {"templates": [{"istioVersion": "MIN_VERSION-1.19", "value": value(f"{name}-old")},
                                   {"istioVersion": "1.20-1.40", "value": value(f"{name}-new")}]}}


def binding(name: str, version: str, *, ns: str = "default", ref: str = "t",
            labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"templateRef": {"name": ref, "istioVersion": version}}
    if labels is not None:
        spec["workloadSelector"] = {"labels": labels}
    return {"apiVersion": ASM, "kind": "EnvoyFilterTemplateBinding", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def test_bindings_that_stand_for_nothing_say_why() -> None:
    templates = [decode_resource(ENVOY_FILTER_TEMPLATES, template("t"))]
    bindings = [decode_resource(ENVOY_FILTER_TEMPLATE_BINDINGS, b) for b in (
        binding("new", "1.40"), binding("none", "1.41"), binding("missing", "1.40", ref="nope"),
        binding("root", "1.40", ns="istio-system", ref="nope"))]
    why = {b.meta.name: reason for b, reason in unresolved(templates, bindings, "istio-system")}
    assert why == {
        "none": "EnvoyFilterTemplate istio-system/t has no value for istioVersion 1.41 "
                "(its versions: MIN_VERSION-1.19, 1.20-1.40)",
        "missing": "no EnvoyFilterTemplate 'nope' in namespace default or istio-system",
        "root": "no EnvoyFilterTemplate 'nope' in namespace istio-system",
    }
    # exactly the bindings that bound_filters skips
    assert {s.split("/")[1] for s, _ in bound_filters(templates, bindings, "istio-system")} == {"new"}


def test_binding_takes_the_value_of_its_version_and_limits_it_to_that_version() -> None:
    templates = [decode_resource(ENVOY_FILTER_TEMPLATES, template("t"))]
    bindings = [decode_resource(ENVOY_FILTER_TEMPLATE_BINDINGS, b) for b in (
        binding("new", "1.40", labels={"app": "reviews"}), binding("old", "1.18"), binding("none", "1.41"),
        binding("missing", "1.40", ref="nope"))]
    out = dict(bound_filters(templates, bindings, "istio-system"))
    assert set(out) == {"EnvoyFilterTemplateBinding default/new", "EnvoyFilterTemplateBinding default/old"}
    new = out["EnvoyFilterTemplateBinding default/new"]
    assert new.meta.namespace == "default" and new.spec.workload_selector is not None
    assert dict(new.spec.workload_selector.labels) == {"app": "reviews"}
    (cp,) = new.spec.config_patches
    assert cp.match is not None and cp.match.proxy is not None and cp.match.proxy.proxy_version == r"^1\.40(\.|$)"
    assert cp.patch is not None and cp.patch.value["name"] == "t-new"
    old = out["EnvoyFilterTemplateBinding default/old"]
    assert old.spec.config_patches[0].patch.value["name"] == "t-old"  # type: ignore[union-attr]


def test_bound_filter_patches_the_selected_proxy_of_that_version() -> None:
    reviews = sidecar("reviews", "v1", inbound="http:9080", ISTIO_VERSION="1.40.2")
    ratings = sidecar("ratings", "v1", inbound="http:9080", ISTIO_VERSION="1.40.2")
    ctx = context([*bookinfo_registry(), template("t"), binding("b", "1.40", labels={"app": "reviews"})])

    def inbound(proxy: Any) -> list[str]:
        h = hcm_of(listeners(proxy, ctx)[f"inbound_{proxy.listen_address}_9080"].filter_chains[0])
        assert h is not None
        return [f.name for f in h.http_filters]

    assert "t-new" in inbound(reviews) and "t-new" not in inbound(ratings)
    assert patches_for(reviews, ctx).sources == ("EnvoyFilterTemplateBinding default/b",)
    older = sidecar("reviews", "v1", inbound="http:9080", ISTIO_VERSION="1.39.0")
    assert "t-new" not in inbound(older)
