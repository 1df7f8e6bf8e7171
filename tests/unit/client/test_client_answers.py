"""How the client treats answers that are not the API's usual ones, against a small aiohttp server on 127.0.0.1:
an error that is not a Status, a success that is not JSON (never quoted: it may hold key material), an answer
too slow for the timeout; and what the management calls send (token headers, batches, query)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from meshplane.client import BadResponse, Client, NotFound, Refused, SyncClient, Unreachable

SECRET = "-----BEGIN PRIVATE KEY----- not-json"


class Fake:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.seen.append((request.method, request.path_qs, dict(request.headers), body))
        path = request.path
        if path == "/management/v1/proxies":
            return web.Response(text="upstream exploded", status=500)
        if path == "/management/v1/trust-bundle":
            return web.Response(text=SECRET, content_type="text/plain")
        if path == "/management/v1/gateway-credentials":
            return web.json_response({"items": [{"name": "gw"}, "junk"]})
        if path == "/management/v1/tokens":
            return web.json_response({"token": "mpt.x"}, status=201)
        if path == "/management/v1/security/audit" and request.method == "POST":
            return web.json_response({"items": body["items"]}, status=201)
        if path == "/management/v1/security/audit":
            return web.json_response({"items": [{"seq": 1}]})
        if path == "/slow":
            await asyncio.sleep(5)
        return web.Response(status=404)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[str, Fake]]:
    f = Fake()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", f.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", f
    finally:
        await runner.cleanup()


async def test_an_error_that_is_not_a_status_keeps_the_start_of_its_body(fake: tuple[str, Fake]) -> None:
    url, _ = fake
    async with Client(url) as c:
        with pytest.raises(Refused) as e:
            await c.proxies()
        assert e.value.code == 500 and e.value.status is None
        assert str(e.value) == "GET /management/v1/proxies: HTTP 500: upstream exploded"
        with pytest.raises(NotFound) as nf:  # an empty 404 (not our API, or an old server)
            await c.audit()
        assert str(nf.value) == "GET /management/v1/audit: HTTP 404: Not Found"


async def test_a_success_that_is_not_json_is_a_bad_response_without_the_body(fake: tuple[str, Fake]) -> None:
    url, _ = fake
    async with Client(url) as c:
        with pytest.raises(BadResponse) as e:
            await c.trust_bundle()
        assert "not JSON" in str(e.value) and "PRIVATE" not in str(e.value)


async def test_a_slow_answer_is_unreachable_after_the_timeout(fake: tuple[str, Fake]) -> None:
    url, _ = fake
    async with Client(url, timeout=30) as c:
        with pytest.raises(Unreachable) as e:
            await c.transport.call("GET", "/slow", "GET /slow", timeout=0.2)
        assert str(e.value) == f"GET /slow: cannot reach the meshplane API at {url} (no answer within 0.2s)"


async def test_management_calls_send_what_the_endpoints_take(fake: tuple[str, Fake]) -> None:
    url, f = fake
    async with Client(url, token="tok") as c:
        creds = await c.gateway_credentials("mpt.bootstrap")
        assert creds == [{"name": "gw"}]  # items that are not objects are dropped
        assert await c.bootstrap_token("ns", "sa", 60) == "mpt.x"
        await c.report_security_events([{"kind": "authz.deny"}, {"kind": "opa.deny"}], bootstrap_token="mpt.me")
        assert await c.security_audit(since=7, limit=9, kind="opa.") == [{"seq": 1}]
    (m1, _, h1, _), (m2, _, _, b2), (m3, _, h3, b3), (_, qs4, _, _) = f.seen
    assert m1 == "GET" and h1["X-Bootstrap-Token"] == "mpt.bootstrap" and h1["Authorization"] == "Bearer tok"
    assert m2 == "POST" and b2 == {"namespace": "ns", "serviceAccount": "sa", "ttlSeconds": 60}
    assert m3 == "POST" and b3 == {"items": [{"kind": "authz.deny"}, {"kind": "opa.deny"}]}
    assert h3["X-Bootstrap-Token"] == "mpt.me"  # the reporting workload's identity
    assert qs4 == "/management/v1/security/audit?since=7&limit=9&kind=opa."


async def test_the_blocking_facade_against_a_server(fake: tuple[str, Fake]) -> None:
    url, f = fake

    def blocking() -> tuple[str, list[dict[str, Any]]]:
        with SyncClient(url, token="tok") as c:
            token = c.bootstrap_token("ns", "sa", 60)
            try:
                c.proxies()
            except Refused as e:
                assert e.code == 500
            return token, c.gateway_credentials("b")

    assert await asyncio.to_thread(blocking) == ("mpt.x", [{"name": "gw"}])
    assert [m for m, *_ in f.seen] == ["POST", "GET", "GET"]


def test_the_facade_mirrors_every_call_of_the_client() -> None:
    public = {n for n, v in vars(Client).items() if inspect.iscoroutinefunction(v) and not n.startswith("_")}
    public.discard("close")
    for name in public:
        sync, aio = inspect.signature(getattr(SyncClient, name)), inspect.signature(getattr(Client, name))
        assert sync.parameters == aio.parameters, name
        assert sync.return_annotation == aio.return_annotation, name


async def test_only_the_blocking_facade_honours_the_proxy_environment(fake: tuple[str, Fake],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands went through urllib, which honours HTTP_PROXY (as kubectl does); the agent and the supervisor
    never did: an agent's environment may name its own sidecar as the proxy."""
    proxy, f = fake  # plays the proxy: it answers whatever it is asked
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    nowhere = "http://127.0.0.1:1"

    def blocking() -> str:
        with SyncClient(nowhere) as c:
            return c.bootstrap_token("ns", "sa", 60)

    assert await asyncio.to_thread(blocking) == "mpt.x"
    assert f.seen[-1][2]["Host"] == "127.0.0.1:1"
    async with Client(nowhere) as c:
        with pytest.raises(Unreachable):
            await c.bootstrap_token("ns", "sa", 60)
