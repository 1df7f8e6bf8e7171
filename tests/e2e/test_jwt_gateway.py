"""RequestAuthentication and AuthorizationPolicy on an ingress gateway, with Istio's task YAML (tests/data/jwt):
a real gateway Envoy in ``istio-system`` (``istio: ingressgateway``) in front of httpbin in ``foo``.

Istio's "Authentication Policy" task, end-user authentication: with the RequestAuthentication on the gateway a
malformed token (``Bearer deadbeef``) is refused with 401, a valid token passes and so does a request without a
token; the DENY policy with ``notRequestPrincipals: ["*"]`` then refuses requests without a token (403), and its
per-path variant only on ``/headers``. The issuer's keys are the test's own (no Internet here): the task's
``jwksUri`` is replaced by the inline JWKS of that key, nothing else is changed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_objects import service_entry, workload_entry
from envoy_harness import Backend, Envoy, Harness, free_port, wait_until

from meshplane.store import GroupResource, MemoryStore
from meshplane.xds import SyncState, XdsServer
from meshplane.xds.default_translator import DefaultTranslator
from tests.support.jwt import Issuer

pytestmark = pytest.mark.envoy

DATA = Path(__file__).resolve().parents[1] / "data" / "jwt"
ISSUER = "testing@secure.istio.io"
_PLURALS = {"Gateway": ("networking.istio.io", "gateways"), "VirtualService": ("networking.istio.io",
                                                                               "virtualservices"),
            "RequestAuthentication": ("security.istio.io", "requestauthentications"),
            "AuthorizationPolicy": ("security.istio.io", "authorizationpolicies")}
SE, WE = GroupResource("networking.istio.io", "serviceentries"), GroupResource("networking.istio.io",
                                                                               "workloadentries")


def task_objects(name: str, namespace: str = "foo") -> list[dict[str, Any]]:
    """The documents of one task file, each in ``namespace`` unless it names its own (``kubectl apply -n``)."""
    docs = [d for d in yaml.safe_load_all((DATA / name).read_text()) if d]
    for d in docs:
        d["metadata"].setdefault("namespace", namespace)
    return docs


def with_jwks(doc: dict[str, Any], jwks: str) -> dict[str, Any]:
    """The RequestAuthentication with every rule's ``jwksUri`` replaced by the inline ``jwks`` (our key)."""
    for rule in doc["spec"]["jwtRules"]:
        rule.pop("jwksUri", None)
        rule["jwks"] = jwks
    return doc


@dataclass
class Ingress:
    store: MemoryStore
    h: Harness
    server: XdsServer
    gw: Envoy
    port: int
    httpbin: Backend

    async def apply(self, doc: dict[str, Any]) -> None:
        """Create or replace (as ``kubectl apply`` would) one object."""
        gr = GroupResource(*_PLURALS[doc["kind"]])
        if self.store.get(gr, doc["metadata"]["namespace"], doc["metadata"]["name"]) is None:
            await self.store.create(gr, doc, actor="test")
        else:
            await self.store.update(gr, doc, actor="test")

    async def synced(self) -> None:
        await self.server.wait_idle()

        async def check() -> bool:
            st = [s for s in self.server.proxy_status() if s.node_id == self.gw.node_id]
            return bool(st) and len(st[0].types) >= 3 and st[0].state is SyncState.SYNCED

        await wait_until(check, what="gateway SYNCED")
        for t in next(s for s in self.server.proxy_status() if s.node_id == self.gw.node_id).types:
            assert t.nacks == 0, f"{t.short_name} NACKed: {t.last_nack}"

    async def get(self, path: str, token: str | None = None,
                  headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["authorization"] = f"Bearer {token}"
        status, body, _ = await self.h.get(f"http://{self.gw.listen_host}:{self.port}{path}",
                                           host="httpbin.example.com", headers=hdrs)
        return status, body

    async def status(self, path: str, token: str | None = None) -> int:
        return (await self.get(path, token))[0]

    async def eventually(self, path: str, want: int, token: str | None = None) -> None:
        async def check() -> bool:
            return await self.status(path, token) == want

        await wait_until(check, what=f"{path} -> {want}")


@pytest.fixture
async def ingress(store: MemoryStore, harness: Harness, xds) -> AsyncIterator[Ingress]:  # type: ignore[no-untyped-def]
    server, address = await xds(DefaultTranslator())
    httpbin = await harness.backend("httpbin")
    await store.create(SE, service_entry("httpbin", "httpbin.foo.svc.cluster.local", port=8000, namespace="foo",
                                         selector={"app": "httpbin"}), actor="test")
    await store.create(WE, workload_entry("httpbin", httpbin.host, {"app": "httpbin"},
                                          ports={"http-8000": httpbin.port}, namespace="foo"), actor="test")
    port = free_port("127.0.0.1")
    gw = await harness.envoy("ingressgateway", address, namespace="istio-system", workload="istio-ingressgateway",
                             router=True, metadata={"LABELS": {"istio": "ingressgateway"},
                                                    "GATEWAY_PORTS": {"80": port}})
    ing = Ingress(store, harness, server, gw, port, httpbin)
    for doc in task_objects("httpbin-gateway.yaml"):
        await ing.apply(doc)
    await ing.synced()
    await ing.eventually("/headers", 200)
    yield ing


async def test_request_authentication_and_deny_without_token_on_gateway(ingress: Ingress) -> None:
    issuer = Issuer(ISSUER)
    token = issuer.token(ISSUER, foo="bar")
    [ra] = task_objects("jwt-example.yaml")
    await ingress.apply(with_jwks(ra, issuer.jwks()))
    await ingress.synced()
    await ingress.eventually("/headers", 401, "deadbeef")
    forged = Issuer(ISSUER).token(ISSUER)  # right issuer, another key
    assert await ingress.status("/headers", forged) == 401
    assert await ingress.status("/headers", token) == 200
    assert await ingress.status("/headers") == 200  # no token: allowed until a policy requires one

    [deny] = task_objects("frontend-ingress.yaml")
    await ingress.apply(deny)
    await ingress.synced()
    await ingress.eventually("/headers", 403)
    assert await ingress.status("/ip") == 403
    assert await ingress.status("/headers", token) == 200
    assert await ingress.status("/headers", "deadbeef") == 401

    [per_path] = task_objects("frontend-ingress-headers.yaml")
    await ingress.apply(per_path)
    await ingress.synced()
    await ingress.eventually("/ip", 200)
    assert await ingress.status("/headers") == 403
    assert await ingress.status("/headers", token) == 200
    assert await ingress.status("/ip", "deadbeef") == 401


async def test_gateway_filter_order_jwt_before_rbac(ingress: Ingress) -> None:
    """What Envoy runs: jwt_authn, then RBAC, then the router, on the gateway's HTTP chain."""
    issuer = Issuer(ISSUER)
    [ra] = task_objects("jwt-example.yaml")
    await ingress.apply(with_jwks(ra, issuer.jwks()))
    [deny] = task_objects("frontend-ingress.yaml")
    await ingress.apply(deny)
    await ingress.synced()
    await ingress.eventually("/headers", 403)
    dump = await ingress.gw.config_dump()
    names: list[str] = []
    for cfg in dump["configs"]:
        for lst in cfg.get("dynamic_listeners", []):
            for chain in lst.get("active_state", {}).get("listener", {}).get("filter_chains", []):
                for f in chain.get("filters", []):
                    names = [h["name"] for h in f.get("typed_config", {}).get("http_filters", [])]
    assert names.index("envoy.filters.http.jwt_authn") < names.index("envoy.filters.http.rbac") \
        < names.index("envoy.filters.http.router"), names


async def test_jwt_claim_based_routing(ingress: Ingress) -> None:
    """Istio's "JWT claim based routing": ``/headers`` is routed only for a verified token whose ``groups`` claim
    holds ``group1``; anything else finds no route (404); an invalid token is refused (401)."""
    issuer = Issuer(ISSUER)
    for doc in task_objects("jwt-claim-routing.yaml"):
        await ingress.apply(doc)
    [ra] = task_objects("ingress-jwt.yaml")
    await ingress.apply(with_jwks(ra, issuer.jwks()))
    await ingress.synced()
    await ingress.eventually("/headers", 404)
    groups = issuer.token(ISSUER, groups=["group1", "group2"], scope=["scope1", "scope2"])
    await ingress.eventually("/headers", 200, groups)
    assert ingress.httpbin.requests[-1][1] == "/headers"
    assert await ingress.status("/headers", issuer.token(ISSUER, foo="bar")) == 404  # no groups claim
    assert await ingress.status("/headers", issuer.token(ISSUER, groups=["group2"])) == 404
    assert await ingress.status("/headers", "deadbeef") == 401
    # The claim must be verified: the same payload signed by another key is refused, a forged header is no claim.
    forged = Issuer(ISSUER).token(ISSUER, groups=["group1"])
    assert await ingress.status("/headers", forged) == 401
    status, _ = await ingress.get("/headers", headers={"@request.auth.claims.groups": "group1"})
    assert status in (400, 404)
