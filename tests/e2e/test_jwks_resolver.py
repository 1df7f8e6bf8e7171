"""JWKS fetched by the control plane, fail closed: the real ``meshplane server`` (``--jwks-ca-bundle`` with a test
CA of our own, a short ``--jwks-refresh-interval``), a real gateway Envoy, and an HTTPS JWKS server on loopback.

Istio's "Authentication Policy" RequestAuthentication on the ingress gateway (tests/data/jwt/jwt-example.yaml), its
``jwksUri`` pointed at our JWKS server (nothing else changed):

* keys served: a token signed by the served key is accepted, a malformed or foreign one refused (401), and the
  object's status says ``JwksResolved: True``;
* the JWKS server unreachable from the start: every token is refused (401, never let through unverified), the
  status says ``JwksResolved: False`` / ``FetchFailed`` naming the URI, and ``/metrics`` counts the failures by issuer;
* keys rotated at the JWKS server: after a refresh the new key's tokens are accepted and the old key's refused.
"""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from envoy_harness import Envoy, Harness, free_port, wait_until
from test_jwt_gateway import ISSUER, task_objects

from meshplane.client.aio import Client
from tests.support.jwks_server import JwksServer, LoopbackCA
from tests.support.jwt import Issuer
from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.envoy

NET = "networking.istio.io/v1"


@dataclass
class Plane:
    server: ServerProcess
    client: Client
    gw: Envoy
    port: int
    h: Harness

    async def status(self, token: str | None = None) -> int:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        status, _, _ = await self.h.get(f"http://{self.gw.listen_host}:{self.port}/headers",
                                        host="httpbin.example.com", headers=headers)
        return status

    async def eventually(self, want: int, token: str | None = None, timeout: float = 30.0) -> None:
        async def check() -> bool:
            return await self.status(token) == want

        await wait_until(check, timeout=timeout, what=f"/headers -> {want}")

    async def request_authentication(self, uri: str) -> None:
        [ra] = task_objects("jwt-example.yaml")
        ra["spec"]["jwtRules"][0]["jwksUri"] = uri
        await self.client.apply(ra)

    async def condition(self) -> dict[str, Any]:
        ra = await self.client.get("security.istio.io/v1", "RequestAuthentication", "jwt-example", "istio-system")
        conds = [c for c in (ra.get("status") or {}).get("conditions") or [] if c.get("type") == "JwksResolved"]
        return conds[0] if conds else {}

    def metrics(self) -> str:
        with urllib.request.urlopen(self.server.url + "/metrics", timeout=5) as r:
            return str(r.read().decode())


@pytest.fixture
def ca(tmp_path: Path) -> LoopbackCA:
    return LoopbackCA(tmp_path / "jwks-ca")


@pytest.fixture
async def plane(tmp_path: Path, harness: Harness, ca: LoopbackCA) -> AsyncIterator[Plane]:
    server = await asyncio.to_thread(start_server, tmp_path / "server", "--jwks-ca-bundle", str(ca.ca_file),
                                     "--jwks-refresh-interval", "1s")
    client = Client(server.url)
    try:
        httpbin = await harness.backend("httpbin")
        await client.create({"apiVersion": NET, "kind": "ServiceEntry", "metadata": {
            "name": "httpbin", "namespace": "foo"}, "spec": {
            "hosts": ["httpbin.foo.svc.cluster.local"], "location": "MESH_INTERNAL", "resolution": "STATIC",
            "ports": [{"number": 8000, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": httpbin.host, "ports": {"http": httpbin.port}}]}})
        for doc in task_objects("httpbin-gateway.yaml"):
            await client.create(doc)
        port = free_port("127.0.0.1")
        gw = await harness.envoy("ingressgateway", server.xds, namespace="istio-system",
                                 workload="istio-ingressgateway", router=True,
                                 metadata={"LABELS": {"istio": "ingressgateway"}, "GATEWAY_PORTS": {"80": port}})
        p = Plane(server, client, gw, port, harness)
        await p.eventually(200)
        yield p
    finally:
        await client.close()
        await asyncio.to_thread(server.stop)


async def test_keys_fetched_over_https_and_rotated(plane: Plane, ca: LoopbackCA) -> None:
    k1, k2 = Issuer(ISSUER, kid="k1"), Issuer(ISSUER, kid="k2")
    jwks = await JwksServer([k1], ca=ca).start()
    try:
        await plane.request_authentication(jwks.url)
        await plane.eventually(401, "deadbeef")  # the gateway has the RequestAuthentication
        await plane.eventually(200, k1.token(ISSUER))  # and the keys the control plane fetched
        assert await plane.status(Issuer(ISSUER).token(ISSUER)) == 401  # a key the JWKS does not hold
        assert await plane.status() == 200  # no token: no policy requires one
        cond = await plane.condition()
        assert (cond.get("status"), cond.get("reason")) == ("True", "Resolved"), cond
        # Rotation: the server now serves k2 only; after a refresh k2's tokens verify and k1's no longer do.
        jwks.set_keys([k2])
        await plane.eventually(200, k2.token(ISSUER))
        assert await plane.status(k1.token(ISSUER)) == 401
    finally:
        await jwks.stop()


async def test_unreachable_jwks_fails_closed(plane: Plane) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        uri = f"https://127.0.0.1:{s.getsockname()[1]}/jwks.json"
    await plane.request_authentication(uri)
    await plane.eventually(401, "deadbeef")
    assert await plane.status(Issuer(ISSUER).token(ISSUER)) == 401  # valid-looking, keys unknown: refused

    async def failed() -> bool:
        c = await plane.condition()
        return (c.get("status"), c.get("reason")) == ("False", "FetchFailed") and uri in str(c.get("message"))

    await wait_until(failed, what="JwksResolved False/FetchFailed")
    line = next((ln for ln in plane.metrics().splitlines()
                 if ln.startswith("meshplane_jwks_fetch_failures_total{") and f'issuer="{ISSUER}"' in ln), "")
    assert line and float(line.rsplit(" ", 1)[1]) >= 1, plane.metrics()


async def test_untrusted_https_server_fails_closed(plane: Plane, tmp_path: Path) -> None:
    """A JWKS server whose certificate is not from the configured CA bundle is not trusted: no keys, 401."""
    other_ca = LoopbackCA(tmp_path / "other-ca")
    key = Issuer(ISSUER)
    jwks = await JwksServer([key], ca=other_ca).start()
    try:
        await plane.request_authentication(jwks.url)

        async def failed() -> bool:
            c = await plane.condition()
            return (c.get("status"), c.get("reason")) == ("False", "FetchFailed")

        await wait_until(failed, what="JwksResolved False/FetchFailed")
        await plane.eventually(401, "deadbeef")
        assert await plane.status(key.token(ISSUER)) == 401
    finally:
        await jwks.stop()
