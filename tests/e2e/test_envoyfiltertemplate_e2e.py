"""ASM's EnvoyFilterTemplate and EnvoyFilterTemplateBinding through real Envoys: a versioned template bound to a
workload changes what its proxy does; a template change rolls out to it; a binding for another proxy version or
its removal takes the change away.

One mesh (a ``reviews`` server sidecar and a ``sleep`` client). The proxies announce no ISTIO_VERSION, so their
version is their Envoy's (1.40.x): the binding asks for ``1.40``. Objects pass admission before they are stored.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from envoy_harness import wait_until
from security_mesh import REVIEWS, SecurityMesh

from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate
from meshplane.model.resources import ENVOY_FILTER_TEMPLATE_BINDINGS, ENVOY_FILTER_TEMPLATES

pytestmark = pytest.mark.envoy

ASM = "istio.alibabacloud.com"


def lua_filter(value: str) -> str:
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
        name: envoy.lua
        typed_config:
          '@type': type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          inlineCode: |
            function envoy_on_response(h)
              h:headers():add("x-template", "{value}")
            end
"""


def admitted(obj: dict[str, Any]) -> dict[str, Any]:
    info = default_registry().by_kind(ASM, obj["kind"])
    assert info is not None
    assert validate(info, obj) == []
    return obj


def template(value: str) -> dict[str, Any]:
    return admitted({"apiVersion": f"{ASM}/v1", "kind": "EnvoyFilterTemplate",
                     "metadata": {"name": "response-header", "namespace": "istio-system"},
                     "spec": {"templates": [{"istioVersion": "1.19-MAX_VERSION", "value": lua_filter(value)},
                                            {"istioVersion": "MIN_VERSION-1.18", "value": lua_filter("old")}]}})


def binding(name: str, version: str) -> dict[str, Any]:
    return admitted({"apiVersion": f"{ASM}/v1", "kind": "EnvoyFilterTemplateBinding",
                     "metadata": {"name": name, "namespace": "default"},
                     "spec": {"templateRef": {"name": "response-header", "istioVersion": version},
                              "workloadSelector": {"labels": {"app": "reviews"}}}})


async def test_bound_template_changes_envoy_and_rolls_out(sec: SecurityMesh) -> None:
    await sec.workload("reviews")
    await sec.workload("sleep", serve=False)
    await sec.synced()
    await sec.eventually("sleep", "/", 200)
    sleep = sec.workloads["sleep"].envoy

    async def header() -> str | None:
        status, _, headers = await sec.h.get(f"http://{sleep.listen_host}:15001/t", host=REVIEWS)
        return headers.get("x-template") if status == 200 else "failed"

    async def is_(value: str | None) -> bool:
        return await header() == value

    await sec.store.create(ENVOY_FILTER_TEMPLATES, template("v1"), actor="test")
    await sec.store.create(ENVOY_FILTER_TEMPLATE_BINDINGS, binding("other-version", "1.20"), actor="test")
    await sec.synced()
    assert await header() is None, "a binding for proxies of 1.20 leaves these (1.40) alone"

    await sec.store.create(ENVOY_FILTER_TEMPLATE_BINDINGS, binding("reviews", "1.40"), actor="test")
    await sec.synced()
    await wait_until(lambda: is_("v1"), what="the bound template's header")

    stored = sec.store.get(ENVOY_FILTER_TEMPLATES, "istio-system", "response-header")
    assert stored is not None
    changed = copy.deepcopy(stored)
    changed["spec"] = template("v2")["spec"]
    await sec.store.update(ENVOY_FILTER_TEMPLATES, changed, actor="test")
    await sec.synced()
    await wait_until(lambda: is_("v2"), what="the changed template rolled out")

    await sec.store.delete(ENVOY_FILTER_TEMPLATE_BINDINGS, "default", "reviews", actor="test")
    await sec.synced()
    await wait_until(lambda: is_(None), what="the unbound workload without the header")
