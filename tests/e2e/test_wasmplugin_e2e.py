"""WasmPlugin through real Envoys: a proxy-wasm filter we write in WAT (tests/data/wasm/add_header.wat, assembled
here with wabt's wat2wasm) served from a ``file://`` URL adds headers on a real Envoy, with the plugin's
``pluginConfig`` as the value; a changed pluginConfig rolls out; ``match.mode`` keeps a CLIENT plugin off inbound;
a module Envoy cannot load is rejected by the proxy, which keeps its last good listeners, and names the plugin.

One mesh (a ``reviews`` server sidecar, a ``sleep`` client sidecar, mTLS). Objects pass admission
(``api.validation``) before they are stored.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from envoy_harness import wait_until
from security_mesh import REVIEWS, SecurityMesh

from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate
from meshplane.model.resources import WASM_PLUGINS
from meshplane.xds.filterstatus import rejection_messages

pytestmark = pytest.mark.envoy

WAT = Path(__file__).resolve().parent.parent / "data" / "wasm" / "add_header.wat"


@pytest.fixture
def module(tmp_path: Path) -> Path:
    tool = shutil.which("wat2wasm")
    if tool is None:
        pytest.skip("wat2wasm (Debian package wabt, installed by scripts/setup) is not on PATH")
    out = tmp_path / "add_header.wasm"
    subprocess.run([tool, str(WAT), "-o", str(out)], check=True, capture_output=True)
    return out


def plugin(name: str, url: str, config: dict[str, Any], **spec: Any) -> dict[str, Any]:
    obj = {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"app": "reviews"}}, "url": url, "pluginConfig": config, **spec}}
    info = default_registry().by_kind("extensions.istio.io", "WasmPlugin")
    assert info is not None
    assert validate(info, obj) == []
    return obj


async def test_wasm_plugin_from_a_local_file_adds_headers(sec: SecurityMesh, module: Path) -> None:
    reviews = await sec.workload("reviews")
    await sec.workload("sleep", serve=False)
    await sec.synced()
    await sec.eventually("sleep", "/", 200)
    sleep = sec.workloads["sleep"].envoy
    url = f"http://{sleep.listen_host}:15001/wasm"

    async def header() -> str | None:
        status, _, headers = await sec.h.get(url, host=REVIEWS)
        return headers.get("x-wasm-plugin") if status == 200 else None

    assert await header() is None
    await sec.store.create(WASM_PLUGINS, plugin("add-header", module.as_uri(), {"greeting": "hello"},
                                                phase="AUTHZ", match=[{"mode": "SERVER"}]), actor="test")
    await sec.synced()

    async def has(value: str) -> bool:
        return await header() == value

    await wait_until(lambda: has('{"greeting":"hello"}'), what="the plugin's response header")
    assert reviews.backend is not None
    assert reviews.backend.requests[-1][2].get("x-wasm-request") == "1", "the app sees the plugin's request header"

    # A new pluginConfig rolls out to the proxy.
    stored = sec.store.get(WASM_PLUGINS, "default", "add-header")
    assert stored is not None
    obj = copy.deepcopy(stored)  # the memory store hands out what it holds
    obj["spec"]["pluginConfig"] = {"greeting": "again"}
    await sec.store.update(WASM_PLUGINS, obj, actor="test")
    await sec.synced()
    await wait_until(lambda: has('{"greeting":"again"}'), what="the new pluginConfig")

    # A CLIENT plugin on the server's workload does not run on its inbound side; deleting the plugins ends it.
    await sec.store.delete(WASM_PLUGINS, "default", "add-header", actor="test")
    await sec.store.create(WASM_PLUGINS, plugin("client-only", module.as_uri(), {"side": "client"},
                                                match=[{"mode": "CLIENT"}]), actor="test")
    await sec.synced()
    await wait_until(lambda: _is_none(header()), what="no plugin on the inbound side")
    assert reviews.backend.requests[-1][2].get("x-wasm-request") is None

    # A module Envoy cannot load: the proxy rejects its listeners, keeps the last good ones, and the rejection
    # names the plugin (its Applied-like status is meshplane analyze's MPL0101).
    missing = plugin("missing", (module.parent / "missing.wasm").as_uri(), {}, match=[{"mode": "SERVER"}])
    await sec.store.create(WASM_PLUGINS, missing, actor="test")
    await sec.server.wait_idle()

    async def rejected() -> bool:
        return any("WasmPlugin default/missing" in r.sources for r in sec.server.rejections())

    await wait_until(rejected, what="the proxy rejects the listener with the missing module")
    assert await sec.call("sleep", "/") == 200
    (msg,) = [m for m in rejection_messages(sec.server.rejections()) if m.resource.friendly == (
        "WasmPlugin default/missing")]
    assert "rejected the LDS" in msg.text and "Invalid path" in msg.text, msg.text  # Envoy's own words
    await sec.store.delete(WASM_PLUGINS, "default", "missing", actor="test")
    await sec.server.wait_idle()

    async def accepted() -> bool:
        return not sec.server.rejections()

    await wait_until(accepted, what="the proxy accepts its listeners again")


async def _is_none(coro: Any) -> bool:
    return await coro is None
