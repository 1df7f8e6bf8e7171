"""Istio's "External Authorization" task on real Envoys: a CUSTOM AuthorizationPolicy calling an ext-authz server
declared in the mesh config's ``extensionProviders``, over gRPC and over HTTP.

What is real: meshplane's xDS server and ``DefaultTranslator`` following the ``istio`` ConfigMap as the server
does (``cli.meshconfig_sync``: the task's ConfigMap, tests/data/authz-custom, unchanged, is stored mid-test and
hot-reloaded into a full push), the CA signing the workloads' certificates (mesh-wide STRICT mTLS),
Envoy sidecars for ``httpbin`` and ``sleep`` in namespace ``foo``, and our own sample authorizer
(tests/support/extauthz_sample.py: ``x-ext-authz: allow`` is allowed, anything else 403 with a body) reached as the
mesh service ``ext-authz.foo.svc.cluster.local`` (ports 9000 gRPC, 8000 HTTP), as in the task.

Why: before extension providers were read from a mesh config, ``provider: {name: sample-ext-authz-grpc}`` named
nothing (the CUSTOM rules denied every ``/headers`` request, whatever the header). Istio's documented outcomes:
``/headers`` with ``x-ext-authz: deny`` -> 403 with the authorizer's body, with ``allow`` -> 200, ``/ip`` is not
checked -> 200; the same with the HTTP provider, which receives ``x-ext-authz`` because the provider's
``includeRequestHeadersInCheck`` names it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from envoy_harness import Harness, loopback_host, wait_until
from security_mesh import AP, PA, SE, SecurityMesh

from meshplane.cli.meshconfig_sync import MeshConfigSync
from meshplane.model.mesh import MeshSettings
from meshplane.model.resources import CONFIGMAPS
from meshplane.store import MemoryStore
from meshplane.xds.default_translator import DefaultTranslator
from tests.support.extauthz_sample import DENY_BODY, ExtAuthzSample

pytestmark = pytest.mark.envoy

DATA = Path(__file__).resolve().parents[1] / "data" / "authz-custom"
NS = "foo"
HTTPBIN = f"httpbin.{NS}.svc.cluster.local"


@pytest.fixture
async def authorizer() -> AsyncIterator[ExtAuthzSample]:
    sample = await ExtAuthzSample(loopback_host()).start()
    yield sample
    await sample.stop()


@pytest.fixture
async def sec(store: MemoryStore, harness: Harness, xds, tmp_path: Path) -> AsyncIterator[SecurityMesh]:  # type: ignore[no-untyped-def]
    """A mesh whose translator follows the ``istio`` ConfigMap (the server's own wiring, ``cli.serverproc``)."""
    translator = DefaultTranslator(MeshSettings())
    server, address = await xds(translator)

    def apply(settings: MeshSettings) -> None:
        translator.set_mesh(settings)
        server.config_changed("mesh config")

    sync = MeshConfigSync(store, MeshSettings(), apply)
    await sync.start()
    m = await SecurityMesh(store, harness, server, address, tmp_path).start()
    await m.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, namespace="istio-system")
    yield m
    await m.close()
    await sync.stop()


async def _get(sec: SecurityMesh, path: str, header: str | None) -> tuple[int, str]:
    """``curl http://httpbin.foo:8000{path} -H "x-ext-authz: {header}"`` from sleep: status and body."""
    e = sec.workloads["sleep"].envoy
    session = await sec.h.http()
    headers = {"Host": HTTPBIN, **({"x-ext-authz": header} if header is not None else {})}
    async with session.get(f"http://{e.listen_host}:15001{path}", headers=headers) as r:
        return r.status, await r.text()


async def _policy(sec: SecurityMesh, provider: str) -> None:
    doc = yaml.safe_load((DATA / "ext-authz-policy.yaml").read_text())
    doc["spec"]["provider"]["name"] = provider
    current = sec.store.get(AP, NS, "ext-authz")
    if current is None:
        await sec.store.create(AP, doc, actor="test")
    else:
        await sec.store.update(AP, {**doc, "metadata": current["metadata"]}, actor="test")
    await sec.synced()


async def _task(sec: SecurityMesh, authorizer: ExtAuthzSample, protocol: str) -> None:
    async def checked() -> bool:
        return (await _get(sec, "/headers", "deny"))[0] == 403 and (await _get(sec, "/headers", "allow"))[0] == 200

    await wait_until(checked, what=f"the {protocol} authorizer decides /headers")
    status, body = await _get(sec, "/headers", "deny")
    assert (status, body) == (403, DENY_BODY)
    assert (await _get(sec, "/headers", "allow"))[0] == 200
    assert (await _get(sec, "/headers", None))[0] == 403
    before = len(authorizer.checks)
    assert (await _get(sec, "/ip", "deny"))[0] == 200  # the rule covers /headers only
    assert len(authorizer.checks) == before
    mine = [c for c in authorizer.checks if c.protocol == protocol]
    assert mine and all(c.path.endswith("/headers") for c in mine)
    assert {c.headers.get("x-ext-authz") for c in mine} >= {"allow", "deny"}


async def test_external_authorization_task(sec: SecurityMesh, authorizer: ExtAuthzSample) -> None:
    await sec.store.create(SE, {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "ext-authz",
                                                                                     "namespace": NS},
        "spec": {"hosts": [f"ext-authz.{NS}.svc.cluster.local"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                 "ports": [{"number": 8000, "name": "http", "protocol": "HTTP"},
                           {"number": 9000, "name": "grpc", "protocol": "GRPC"}],
                 "endpoints": [{"address": authorizer.host}]}}, actor="test")
    await sec.workload("httpbin", namespace=NS)
    await sec.workload("sleep", namespace=NS, serve=False)
    await sec.synced()
    await sec.eventually("sleep", "/headers", 200, host=HTTPBIN)  # no policy yet

    await _policy(sec, "sample-ext-authz-grpc")
    # No mesh config yet: the provider is unknown, so the CUSTOM rule denies (fail closed), whatever the header.
    await sec.eventually("sleep", "/headers", 403, host=HTTPBIN, headers={"x-ext-authz": "allow"})
    assert await sec.call("sleep", "/ip", host=HTTPBIN) == 200
    assert authorizer.checks == []

    # The task's `kubectl edit configmap istio -n istio-system`: hot-reloaded into a full push.
    await sec.store.create(CONFIGMAPS, yaml.safe_load((DATA / "istio-configmap.yaml").read_text()), actor="test")
    await _task(sec, authorizer, "grpc")

    await _policy(sec, "sample-ext-authz-http")
    await _task(sec, authorizer, "http")
