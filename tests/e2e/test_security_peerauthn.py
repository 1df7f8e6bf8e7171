"""PeerAuthentication precedence and auto mTLS through real Envoys: mesh < namespace < workload < port, UNSET
inheriting, with a plaintext client (straight to the server's inbound port) and a mesh client (``sleep``, through its
sidecar, auto mTLS) for every combination. Istio's task YAML is used unchanged where the task has one
(tests/data/security/).

Whether a mesh client's request arrived over mTLS is read from what the server's application got: a sidecar's
inbound chain sets ``x-forwarded-client-cert`` for mTLS requests only.

Every test but the PERMISSIVE one fails on the code before PeerAuthentication composed per endpoint: the client
originated mTLS to a port whose server had only a plaintext chain (503), or a port-level key was matched on the
application's port.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_harness import Harness, wait_until
from security_mesh import PA, SecurityMesh

from meshplane.store import MemoryStore
from meshplane.translate import MeshSettings
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy

DATA = Path(__file__).resolve().parents[1] / "data" / "security"
ROOT = "istio-system"
XFCC = "x-forwarded-client-cert"
_ids = itertools.count()


@pytest.fixture
async def sec(store: MemoryStore, harness: Harness, xds, tmp_path: Path) -> AsyncIterator[SecurityMesh]:  # type: ignore[no-untyped-def]
    # Istio's default: without any PeerAuthentication, PERMISSIVE.
    server, address = await xds(DefaultTranslator(MeshSettings(inbound_mtls=True)))
    m = await SecurityMesh(store, harness, server, address, tmp_path).start()
    yield m
    await m.close()


async def apply_file(store: MemoryStore, name: str) -> None:
    """Istio's YAML as kubectl would send it (JSON: map keys such as portLevelMtls' ports are strings)."""
    for doc in yaml.safe_load_all((DATA / name).read_text()):
        await store.create(PA, json.loads(json.dumps(doc)), actor="test")


async def pa(sec: SecurityMesh, name: str, namespace: str, mode: str | None, **spec: Any) -> None:
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    await sec.apply(PA, "PeerAuthentication", name, spec, namespace=namespace)


def host(name: str, namespace: str, port: int = 80) -> str:
    h = f"{name}.{namespace}.svc.cluster.local"
    return h if port == 80 else f"{h}:{port}"


async def mesh(sec: SecurityMesh, server: str, namespace: str, port: int = 80) -> tuple[int, str]:
    """A request of the mesh client ``sleep`` to ``server``: (status, "mtls" | "plaintext" | "not received")."""
    path = f"/probe/{next(_ids)}"
    status = await sec.call("sleep", path, host=host(server, namespace, port))
    backend = sec.workloads[server].backend
    assert backend is not None
    got = [h for _, p, h in backend.requests if p == path]
    if not got:
        return status, "not received"
    return status, "mtls" if XFCC in got[0] else "plaintext"


async def eventually_mesh(sec: SecurityMesh, server: str, namespace: str, want: tuple[int, str],
                          port: int = 80) -> None:
    """Polls until the mesh client gets ``want`` (the push reaches both sidecars), then checks it holds."""
    last: list[tuple[int, str]] = []

    async def check() -> bool:
        last.append(await mesh(sec, server, namespace, port))
        return last[-1] == want

    try:
        await wait_until(check, what=f"sleep -> {server}.{namespace}:{port} {want}")
    except TimeoutError:
        raise AssertionError(f"sleep -> {server}.{namespace}:{port}: {last[-3:]}, want {want}") from None
    for _ in range(3):
        assert await mesh(sec, server, namespace, port) == want


async def start(sec: SecurityMesh, *servers: tuple[str, str], ports: dict[int, int] | None = None) -> None:
    for name, namespace in servers:
        await sec.workload(name, namespace=namespace, ports=ports)
    await sec.workload("sleep", namespace="foo", serve=False)
    await sec.synced()


async def test_namespace_strict_workload_disable_istio_overwrite_example(sec: SecurityMesh,
                                                                         store: MemoryStore) -> None:
    """Istio's "Policy precedence" example: both plaintext and mesh clients reach httpbin again; the namespace's
    other workloads stay STRICT."""
    await apply_file(store, "peerauthn-overwrite.yaml")
    await start(sec, ("httpbin", "foo"), ("other", "foo"))
    await eventually_mesh(sec, "httpbin", "foo", (200, "plaintext"))
    assert await sec.plaintext("httpbin") == 200
    await eventually_mesh(sec, "other", "foo", (200, "mtls"))
    assert await sec.plaintext("other") == 0  # the namespace's STRICT: the handshake fails


async def test_workload_strict_with_port_level_disable_istio_example(sec: SecurityMesh, store: MemoryStore) -> None:
    """portLevelMtls is keyed by the workload port: 8080 (service port 80) is plaintext, 9090 (service port 90)
    STRICT; the mesh client follows each port."""
    await apply_file(store, "peerauthn-port-level.yaml")
    await start(sec, ("httpbin", "bar"), ports={80: 8080, 90: 9090})
    await eventually_mesh(sec, "httpbin", "bar", (200, "plaintext"), port=80)
    await eventually_mesh(sec, "httpbin", "bar", (200, "mtls"), port=90)
    assert await sec.plaintext("httpbin", port=8080) == 200
    assert await sec.plaintext("httpbin", port=9090) == 0


async def test_service_port_is_not_a_port_level_key(sec: SecurityMesh) -> None:
    """A portLevelMtls key naming the service port (80) and not the workload port (8080) changes nothing."""
    await pa(sec, "httpbin", "bar", "STRICT", selector={"matchLabels": {"app": "httpbin"}},
             portLevelMtls={"80": {"mode": "DISABLE"}})
    await start(sec, ("httpbin", "bar"))
    await eventually_mesh(sec, "httpbin", "bar", (200, "mtls"))
    assert await sec.plaintext("httpbin") == 0


async def test_mesh_strict_namespace_permissive(sec: SecurityMesh) -> None:
    await pa(sec, "default", ROOT, "STRICT")
    await pa(sec, "default", "bar", "PERMISSIVE")
    await start(sec, ("httpbin", "bar"), ("strict", "foo"))
    await eventually_mesh(sec, "httpbin", "bar", (200, "mtls"))  # PERMISSIVE: the mesh client still uses mTLS
    assert await sec.plaintext("httpbin") == 200
    await eventually_mesh(sec, "strict", "foo", (200, "mtls"))
    assert await sec.plaintext("strict") == 0


async def test_mesh_disable_namespace_strict(sec: SecurityMesh) -> None:
    await pa(sec, "default", ROOT, "DISABLE")
    await pa(sec, "default", "foo", "STRICT")
    await start(sec, ("httpbin", "foo"), ("legacy", "bar"))
    await eventually_mesh(sec, "httpbin", "foo", (200, "mtls"))
    assert await sec.plaintext("httpbin") == 0
    await eventually_mesh(sec, "legacy", "bar", (200, "plaintext"))  # the mesh's DISABLE
    assert await sec.plaintext("legacy") == 200


async def test_unset_inherits_from_each_level_above(sec: SecurityMesh) -> None:
    """mesh DISABLE; foo UNSET (inherits DISABLE); httpbin.foo UNSET with port 8080 UNSET (DISABLE too);
    bar STRICT with httpbin.bar UNSET (inherits STRICT)."""
    await pa(sec, "default", ROOT, "DISABLE")
    await pa(sec, "default", "foo", "UNSET")
    await pa(sec, "httpbin", "foo", "UNSET", selector={"matchLabels": {"app": "httpbin"}},
             portLevelMtls={"8080": {"mode": "UNSET"}})
    await pa(sec, "default", "bar", "STRICT")
    await pa(sec, "httpbin", "bar", None, selector={"matchLabels": {"app": "httpbin-bar"}})
    await start(sec, ("httpbin", "foo"), ("httpbin-bar", "bar"))
    await eventually_mesh(sec, "httpbin", "foo", (200, "plaintext"))
    assert await sec.plaintext("httpbin") == 200
    await eventually_mesh(sec, "httpbin-bar", "bar", (200, "mtls"))
    assert await sec.plaintext("httpbin-bar") == 0


async def test_policy_change_moves_clients_and_server_together(sec: SecurityMesh) -> None:
    """Adding then deleting a workload DISABLE under a STRICT namespace: the mesh client follows each change."""
    await pa(sec, "default", "foo", "STRICT")
    await start(sec, ("httpbin", "foo"))
    await eventually_mesh(sec, "httpbin", "foo", (200, "mtls"))
    await pa(sec, "httpbin", "foo", "DISABLE", selector={"matchLabels": {"app": "httpbin"}})
    await eventually_mesh(sec, "httpbin", "foo", (200, "plaintext"))
    assert await sec.plaintext("httpbin") == 200
    await sec.store.delete(PA, "foo", "httpbin", actor="test")
    await eventually_mesh(sec, "httpbin", "foo", (200, "mtls"))
    # The plaintext client's kept-alive connection may still be on the replaced (draining) chain for a moment.
    async def refused() -> bool:
        return await sec.plaintext("httpbin") == 0

    await wait_until(refused, what="plaintext to httpbin refused")
    assert await refused()
