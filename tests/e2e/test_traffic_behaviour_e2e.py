"""Traffic behaviour through real Envoys programmed by meshplane's real translation (``DefaultTranslator``).

Each test writes Istio objects to the store, waits until the proxy is SYNCED, then sends HTTP requests through the
sidecar's explicit-proxy listener (``LISTEN:15001``, routed by Host) or a gateway, and asserts which backend
answered and how. Statistical assertions state their tolerance; nothing asserts elapsed time.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import socket
import ssl
from typing import Any

import aiohttp
import aiohttp.abc
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from e2e_objects import destination_rule, gateway, service_entry, virtual_service, workload_entry
from envoy_harness import Backend, Envoy, Harness, free_port, loopback_host, wait_until

from meshplane.store import GroupResource, MemoryStore
from meshplane.xds import SyncState, XdsServer
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy

NET = "networking.istio.io"
SE, WE = GroupResource(NET, "serviceentries"), GroupResource(NET, "workloadentries")
VS, DR, GW = GroupResource(NET, "virtualservices"), GroupResource(NET, "destinationrules"), GroupResource(NET,
                                                                                                         "gateways")
REVIEWS = "reviews.default.svc.cluster.local"
MIRROR = "mirror.default.svc.cluster.local"
SUBSETS = [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]


class Mesh:
    def __init__(self, store: MemoryStore, harness: Harness, server: XdsServer, address: str) -> None:
        self.store, self.h, self.server, self.address = store, harness, server, address
        self.backends: dict[str, Backend] = {}
        self.client: Envoy | None = None

    async def service(self, host: str, app: str, versions: tuple[str, ...] = ("v1",)) -> None:
        name = host.split(".")[0]
        await self.store.create(SE, service_entry(name, host, selector={"app": app}), actor="test")
        for v in versions:
            b = await self.h.backend(f"{app}-{v}")
            self.backends[f"{app}-{v}"] = b
            await self.store.create(WE, workload_entry(f"{app}-{v}", b.host, {"app": app, "version": v},
                                                       ports={"http-80": b.port}), actor="test")

    async def apply(self, gr: GroupResource, obj: dict[str, Any]) -> None:
        await self.store.create(gr, obj, actor="test")

    async def synced(self, envoy: Envoy | None = None) -> None:
        envoy = envoy or self.client
        assert envoy is not None
        await self.server.wait_idle()

        async def check() -> bool:
            st = [s for s in self.server.proxy_status() if s.node_id == envoy.node_id]
            return bool(st) and len(st[0].types) >= 3 and st[0].state is SyncState.SYNCED

        await wait_until(check, what=f"{envoy.name} SYNCED")
        for t in next(s for s in self.server.proxy_status() if s.node_id == envoy.node_id).types:
            assert t.nacks == 0, f"{t.short_name} NACKed: {t.last_nack}"

    async def get(self, path: str = "/", host: str = REVIEWS, headers: dict[str, str] | None = None,
                  envoy: Envoy | None = None, port: int = 15001) -> tuple[int, dict[str, Any], Any]:
        envoy = envoy or self.client
        assert envoy is not None
        return await self.h.get(f"http://{envoy.listen_host}:{port}{path}", host=host, headers=headers)

    async def who(self, path: str = "/", **kw: Any) -> str:
        status, body, _ = await self.get(path, **kw)
        return f"{status}:{body.get('backend', '')}"


@pytest.fixture
async def mesh(store: MemoryStore, harness: Harness, xds) -> Mesh:  # type: ignore[no-untyped-def]
    server, address = await xds(DefaultTranslator())
    m = Mesh(store, harness, server, address)
    await m.service(REVIEWS, "reviews", ("v1", "v2"))
    await m.apply(DR, destination_rule("reviews", REVIEWS, subsets=SUBSETS))
    m.client = await harness.envoy("client", address, workload="client")
    return m


async def test_header_routing_and_subsets(mesh: Mesh) -> None:
    await mesh.apply(VS, virtual_service("reviews", [REVIEWS], [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [{"destination": {"host": REVIEWS, "subset": "v2"}}]},
        {"route": [{"destination": {"host": REVIEWS, "subset": "v1"}}]},
    ]))
    await mesh.synced()
    await wait_until(lambda: _is(mesh.who(headers={"end-user": "jason"}), "200:reviews-v2"), what="jason -> v2")
    for _ in range(10):
        assert await mesh.who(headers={"end-user": "jason"}) == "200:reviews-v2"
        assert await mesh.who(headers={"end-user": "other"}) == "200:reviews-v1"
        assert await mesh.who() == "200:reviews-v1"


async def _is(coro: Any, expected: str) -> bool:
    return bool(await coro == expected)


async def test_weighted_split(mesh: Mesh) -> None:
    """80/20 split over 400 requests: v1's share must be within 0.70-0.90 (binomial sd is 0.02)."""
    await mesh.apply(VS, virtual_service("reviews", [REVIEWS], [{"route": [
        {"destination": {"host": REVIEWS, "subset": "v1"}, "weight": 80},
        {"destination": {"host": REVIEWS, "subset": "v2"}, "weight": 20},
    ]}]))
    await mesh.synced()
    await wait_until(lambda: _is(mesh.who(), "200:reviews-v2"), what="v2 receives some traffic")
    counts = collections.Counter([await mesh.who() for _ in range(400)])
    assert set(counts) == {"200:reviews-v1", "200:reviews-v2"}, counts
    share = counts["200:reviews-v1"] / 400
    assert 0.70 <= share <= 0.90, counts


async def test_fault_abort_and_delay(mesh: Mesh) -> None:
    await mesh.apply(VS, virtual_service("reviews", [REVIEWS], [
        {"match": [{"uri": {"prefix": "/abort"}}], "fault": {"abort": {"httpStatus": 418, "percentage": {
            "value": 100}}}, "route": [{"destination": {"host": REVIEWS, "subset": "v1"}}]},
        {"match": [{"uri": {"prefix": "/delay"}}], "fault": {"delay": {"fixedDelay": "0.05s", "percentage": {
            "value": 100}}}, "route": [{"destination": {"host": REVIEWS, "subset": "v1"}}]},
        {"route": [{"destination": {"host": REVIEWS, "subset": "v1"}}]},
    ]))
    await mesh.synced()
    await wait_until(lambda: _status_is(mesh, "/abort", 418), what="abort injected")
    seen_before = len(mesh.backends["reviews-v1"].requests)
    status, _, _ = await mesh.get("/abort")
    assert status == 418
    assert len(mesh.backends["reviews-v1"].requests) == seen_before, "an aborted request never reaches the app"
    assert await mesh.who("/delayed-path") == "200:reviews-v1"
    stats = await mesh.client.stats("fault")  # type: ignore[union-attr]
    assert sum(v for k, v in stats.items() if k.endswith("fault.delays_injected")) >= 1, stats
    assert sum(v for k, v in stats.items() if k.endswith("fault.aborts_injected")) >= 1, stats


async def _status_is(mesh: Mesh, path: str, status: int, **kw: Any) -> bool:
    return (await mesh.get(path, **kw))[0] == status


async def test_retries_on_5xx(mesh: Mesh) -> None:
    await mesh.apply(VS, virtual_service("reviews", [REVIEWS], [{
        "route": [{"destination": {"host": REVIEWS, "subset": "v1"}}],
        "retries": {"attempts": 3, "retryOn": "5xx", "perTryTimeout": "2s"},
    }]))
    await mesh.synced()
    await wait_until(lambda: _status_is(mesh, "/", 200), what="route live")
    backend = mesh.backends["reviews-v1"]
    status, body, _ = await mesh.get("/flaky/2", headers={"x-request-key": "k1"})
    assert status == 200 and body["backend"] == "reviews-v1"
    assert sum(1 for _, p, h in backend.requests if p == "/flaky/2" and h.get("x-request-key") == "k1") == 3


async def test_timeout(mesh: Mesh) -> None:
    await mesh.apply(VS, virtual_service("reviews", [REVIEWS], [{
        "route": [{"destination": {"host": REVIEWS, "subset": "v1"}}], "timeout": "0.2s",
        "retries": {"attempts": 0},
    }]))
    await mesh.synced()
    await wait_until(lambda: _status_is(mesh, "/", 200), what="route live")
    assert (await mesh.get("/delay/3"))[0] == 504
    assert (await mesh.get("/quick"))[0] == 200


async def test_mirroring(mesh: Mesh) -> None:
    await mesh.service(MIRROR, "mirror")
    await mesh.apply(VS, virtual_service("reviews", [REVIEWS], [{
        "route": [{"destination": {"host": REVIEWS, "subset": "v1"}}],
        "mirror": {"host": MIRROR}, "mirrorPercentage": {"value": 100.0},
    }]))
    await mesh.synced()
    mirror = mesh.backends["mirror-v1"]
    await wait_until(lambda: _is(mesh.who("/mirrored"), "200:reviews-v1"), what="route live")

    async def mirrored() -> bool:
        return any(p == "/mirrored" for _, p, _ in mirror.requests)

    await wait_until(mirrored, what="the mirror received a copy")
    _, _, headers = next(r for r in mirror.requests if r[1] == "/mirrored")
    assert headers["host"].startswith("reviews.default.svc.cluster.local-shadow"), headers["host"]


async def test_redirect_and_rewrite(mesh: Mesh) -> None:
    await mesh.apply(VS, virtual_service("reviews", [REVIEWS], [
        {"match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new", "authority": "elsewhere.example"}},
        {"match": [{"uri": {"prefix": "/api/"}}], "rewrite": {"uri": "/v2/"},
         "route": [{"destination": {"host": REVIEWS, "subset": "v2"}}]},
        {"route": [{"destination": {"host": REVIEWS, "subset": "v1"}}]},
    ]))
    await mesh.synced()
    await wait_until(lambda: _status_is(mesh, "/old/x", 301), what="redirect live")
    status, _, headers = await mesh.get("/old/x")
    assert status == 301 and headers["location"] == "http://elsewhere.example/new", dict(headers)
    status, body, _ = await mesh.get("/api/items?q=1")
    assert status == 200 and body["backend"] == "reviews-v2" and body["path"] == "/v2/items?q=1", body


async def test_outlier_ejection(mesh: Mesh) -> None:
    await mesh.store.update(DR, {**mesh.store.get(DR, "default", "reviews"), "spec": {  # type: ignore[dict-item]
        "host": REVIEWS, "subsets": SUBSETS,
        "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 2, "interval": "0.2s",
                                               "baseEjectionTime": "60s", "maxEjectionPercent": 100}}}},
        actor="test")
    await mesh.apply(VS, virtual_service("reviews", [REVIEWS], [{"route": [{"destination": {"host": REVIEWS}}],
                                                                  "retries": {"attempts": 0}}]))
    await mesh.synced()
    await wait_until(lambda: _is(mesh.who(), "200:reviews-v2"), what="both endpoints in use")
    mesh.backends["reviews-v2"].fail_status = 500
    for _ in range(40):  # enough for v2 to return 2 consecutive 5xx under round robin
        await mesh.get("/")
    results = [await mesh.who() for _ in range(20)]
    assert results == ["200:reviews-v1"] * 20, collections.Counter(results)
    stats = await mesh.client.stats("outlier_detection.ejections_enforced_total")  # type: ignore[union-attr]
    assert sum(stats.values()) >= 1, stats


async def test_gateway_routes_by_host_and_path(mesh: Mesh, harness: Harness) -> None:
    await mesh.service("ratings.default.svc.cluster.local", "ratings")
    gw_port = free_port("127.0.0.1")
    await mesh.apply(GW, gateway("web", [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                                          "hosts": ["*.example.com"]}], {"istio": "ingressgateway"}))
    await mesh.apply(VS, virtual_service("site", ["shop.example.com"], [
        {"match": [{"uri": {"prefix": "/v2"}}], "route": [{"destination": {"host": REVIEWS, "subset": "v2"}}]},
        {"route": [{"destination": {"host": REVIEWS, "subset": "v1"}}]},
    ], gateways=["web"]))
    await mesh.apply(VS, virtual_service("ratings-site", ["ratings.example.com"], [
        {"route": [{"destination": {"host": "ratings.default.svc.cluster.local"}}]}], gateways=["web"]))
    gw = await harness.envoy("ingress", mesh.address, workload="ingress", router=True, metadata={
        "LABELS": {"istio": "ingressgateway"}, "GATEWAY_PORTS": {"80": gw_port}})
    await mesh.synced(gw)
    port = gw_port

    async def check(host: str, path: str, expected: str) -> bool:
        return await mesh.who(path, host=host, envoy=gw, port=port) == expected

    await wait_until(lambda: check("shop.example.com", "/", "200:reviews-v1"), what="gateway live")
    assert await mesh.who("/v2/x", host="shop.example.com", envoy=gw, port=port) == "200:reviews-v2"
    assert await mesh.who("/", host="ratings.example.com", envoy=gw, port=port) == "200:ratings-v1"
    assert (await mesh.get("/", host="unknown.example.com", envoy=gw, port=port))[0] == 404


async def test_gateway_tls_passthrough(mesh: Mesh, harness: Harness, tmp_path: Any) -> None:
    ssl_ctx, ca = _tls_backend_context(tmp_path, "secure.example.com")
    tls_backend = Backend("secure", loopback_host())
    tls_backend.port = free_port(tls_backend.host)
    await _start_tls(tls_backend, ssl_ctx)
    harness.backends.append(tls_backend)
    await mesh.store.create(SE, {"apiVersion": f"{NET}/v1", "kind": "ServiceEntry",
                                 "metadata": {"name": "secure", "namespace": "default"},
                                 "spec": {"hosts": ["secure.example.com"], "location": "MESH_EXTERNAL",
                                          "resolution": "STATIC",
                                          "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
                                          "endpoints": [{"address": tls_backend.host,
                                                         "ports": {"tls": tls_backend.port}}]}}, actor="test")
    gw_port = free_port("127.0.0.1")
    await mesh.apply(GW, gateway("tls", [{"port": {"number": 443, "name": "tls", "protocol": "TLS"},
                                          "hosts": ["secure.example.com"], "tls": {"mode": "PASSTHROUGH"}}],
                                 {"istio": "ingressgateway"}))
    await mesh.apply(VS, virtual_service("secure", ["secure.example.com"], [], gateways=["tls"], tls=[{
        "match": [{"sniHosts": ["secure.example.com"], "port": 443}],
        "route": [{"destination": {"host": "secure.example.com", "port": {"number": 443}}}]}]))
    gw = await harness.envoy("ingress-tls", mesh.address, workload="ingress", router=True, metadata={
        "LABELS": {"istio": "ingressgateway"}, "GATEWAY_PORTS": {"443": gw_port}})
    await mesh.synced(gw)
    client_ctx = ssl.create_default_context(cafile=str(ca))

    async def fetch() -> bool:
        session = await harness.http()
        async with session.get(f"https://secure.example.com:{gw_port}/tls", ssl=client_ctx,
                               server_hostname="secure.example.com") as r:
            body = await r.json(content_type=None)
            return r.status == 200 and body.get("backend") == "secure"

    # The client talks TLS end to end with the backend (its certificate verifies): the gateway only read SNI.
    resolver_host = gw.listen_host

    class _Resolver(aiohttp.abc.AbstractResolver):
        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
            return [{"hostname": host, "host": resolver_host, "port": port, "family": socket.AF_INET,
                     "proto": 0, "flags": 0}]

        async def close(self) -> None:
            return None

    harness.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=_Resolver()),
                                            timeout=aiohttp.ClientTimeout(total=10))
    await wait_until(fetch, what="TLS passthrough to the backend")


def _tls_backend_context(tmp_path: Any, hostname: str) -> tuple[Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert_path), str(key_path))
    return ctx, cert_path


async def _start_tls(backend: Backend, ssl_ctx: Any) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", backend._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, backend.host, backend.port, ssl_context=ssl_ctx).start()
    backend._runner = runner
    await asyncio.sleep(0)
