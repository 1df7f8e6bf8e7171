"""WasmPlugin in the HTTP filter chains (``translate.wasmplugin``): placement by phase and priority, match by mode
and port, the filter's module, configuration, root id, environment and failure policy; the result passes
``envoy --mode validate`` with a real module."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import bookinfo_registry, context, envoy_validate, hcm_of, listeners, sidecar
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as http_wasm_pb2
from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import wrappers_pb2

from meshplane.translate import PushContext

REVIEWS = sidecar("reviews", "v1", inbound="http:9080")
ROUTER = "envoy.filters.http.router"
WAT = Path(__file__).resolve().parents[2] / "data" / "wasm" / "add_header.wat"


def plugin(name: str, *, ns: str = "default", created: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"url": "file:///opt/p.wasm", "selector": {"matchLabels": {"app": "reviews"}}, **spec}}


def ctx_with(objs: list[dict[str, Any]]) -> PushContext:
    return context([*bookinfo_registry(), *objs])


def names(ctx: PushContext, listener: str) -> list[str]:
    h = hcm_of(listeners(REVIEWS, ctx)[listener].filter_chains[0])
    assert h is not None
    return [f.name for f in h.http_filters]


INBOUND = f"inbound_{REVIEWS.listen_address}_9080"
OUTBOUND = f"{REVIEWS.listen_address}_15001"


def test_phase_priority_mode_and_port() -> None:
    ctx = ctx_with([
        plugin("last", created="2026-01-02T00:00:00Z"),
        plugin("low", priority=1, phase="STATS"),
        plugin("high", priority=5, phase="STATS"),
        plugin("authn", phase="AUTHN", match=[{"mode": "SERVER"}]),
        plugin("client", match=[{"mode": "CLIENT"}]),
        plugin("other-port", match=[{"mode": "SERVER", "ports": [{"number": 1234}]}]),
        plugin("elsewhere", selector={"matchLabels": {"app": "ratings"}}),
        plugin("rootwide", ns="istio-system", selector={"matchLabels": {"app": "reviews"}}),
        plugin("other-ns", ns="other"),
    ])
    inbound = names(ctx, INBOUND)
    wasm = [n for n in inbound if n.startswith(("default.", "istio-system."))]
    # Security phases first (there are no security filters: before fault), a higher priority first, then older
    # objects first; no phase: just before the router.
    assert wasm == ["default.authn", "default.high", "default.low", "istio-system.rootwide", "default.last"], inbound
    assert inbound.index("default.low") < inbound.index("envoy.filters.http.fault")
    assert inbound[-3:] == ["istio-system.rootwide", "default.last", ROUTER]
    outbound = names(ctx, OUTBOUND)
    assert "default.client" in outbound and "default.authn" not in outbound and "default.client" not in inbound


def test_authz_phase_goes_before_rbac() -> None:
    deny = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "reviews"}}, "action": "DENY",
                     "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}}
    ctx = ctx_with([deny, plugin("authz", phase="AUTHZ"), plugin("stats", phase="STATS")])
    inbound = names(ctx, INBOUND)
    rbac = inbound.index("envoy.filters.http.rbac")
    assert inbound.index("default.authz") == rbac - 1 and inbound.index("default.stats") == rbac + 1, inbound


def test_filter_config() -> None:
    ctx = ctx_with([plugin("p", pluginConfig={"b": 1, "a": "x"}, pluginName="root", failStrategy="FAIL_OPEN",
                           vmConfig={"env": [{"name": "A", "value": "1"}, {"name": "HOSTNAME", "valueFrom": "HOST"}]})])
    h = hcm_of(listeners(REVIEWS, ctx)[INBOUND].filter_chains[0])
    assert h is not None
    f = next(f for f in h.http_filters if f.name == "default.p")
    cfg = http_wasm_pb2.Wasm()
    assert f.typed_config.Unpack(cfg)
    pc = cfg.config
    assert pc.root_id == "root" and pc.failure_policy == wasm_pb2.FAIL_OPEN
    assert pc.vm_config.runtime == "envoy.wasm.runtime.v8" and pc.vm_config.code.local.filename == "/opt/p.wasm"
    assert dict(pc.vm_config.environment_variables.key_values) == {"A": "1"}
    assert list(pc.vm_config.environment_variables.host_env_keys) == ["HOSTNAME"]
    value = wrappers_pb2.StringValue()
    assert pc.configuration.Unpack(value) and json.loads(value.value) == {"a": "x", "b": 1}


@pytest.mark.envoy
def test_config_with_a_real_module_validates(tmp_path: Path) -> None:
    tool = shutil.which("wat2wasm")
    if tool is None:
        pytest.skip("wat2wasm (Debian package wabt) is not on PATH")
    module = tmp_path / "p.wasm"
    subprocess.run([tool, str(WAT), "-o", str(module)], check=True, capture_output=True)
    ctx = ctx_with([plugin("p", url=module.as_uri(), pluginConfig={"x": 1}, phase="AUTHN")])
    envoy_validate(REVIEWS, ctx, tmp_path)
