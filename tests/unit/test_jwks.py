"""The control plane's JWKS resolver against a real loopback JWKS server (plain HTTP) and a MemoryStore: it follows
the RequestAuthentications in the store, fetches, refreshes, reports ``JwksResolved`` in their status, counts
failures by issuer, and tells the xDS side when keys change."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshplane.jwks import CONDITION, JwksResolver, JwksSettings
from meshplane.model.resources import REQUEST_AUTHENTICATIONS
from meshplane.store import MemoryStore
from tests.support.jwks_server import JwksServer
from tests.support.jwt import Issuer


def _ra(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"jwtRules": rules}}


async def _until(pred: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.start()
    yield s
    await s.close()


def _condition(store: MemoryStore, name: str) -> dict[str, Any]:
    obj = store.get(REQUEST_AUTHENTICATIONS, "default", name) or {}
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == CONDITION), {})


async def test_fetch_refresh_status_and_changes(store: MemoryStore) -> None:
    k1, k2 = Issuer("https://a.test", kid="k1"), Issuer("https://a.test", kid="k2")
    server = await JwksServer([k1]).start()
    changes: list[str] = []
    resolver = JwksResolver(store, JwksSettings(refresh_interval=0.1, retry_initial=0.05), changes.append)
    try:
        await store.create(REQUEST_AUTHENTICATIONS, _ra("a", [{"issuer": k1.iss, "jwksUri": server.url}]),
                           actor="test")
        await resolver.start()
        await _until(lambda: server.url in resolver.jwks(), "keys fetched")
        assert '"k1"' in resolver.jwks()[server.url] and changes
        await _until(lambda: _condition(store, "a").get("status") == "True", "JwksResolved True")
        assert _condition(store, "a")["reason"] == "Resolved"
        server.set_keys([k2])  # rotation: seen at the next refresh
        await _until(lambda: '"k2"' in resolver.jwks().get(server.url, ""), "rotated keys")
        before = server.requests
        await _until(lambda: server.requests >= before + 2, "periodic refresh")
        # The URI no longer named: forgotten, and a push is asked for (its keys leave the config).
        n = len(changes)
        await store.delete(REQUEST_AUTHENTICATIONS, "default", "a", actor="test")
        await _until(lambda: not resolver.jwks() and len(changes) > n, "URI dropped")
    finally:
        await resolver.stop()
        await server.stop()


async def test_failures_counted_by_issuer_and_reported(store: MemoryStore) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}/jwks.json"
    resolver = JwksResolver(store, JwksSettings(retry_initial=0.05, retry_max=0.1))
    try:
        await store.create(REQUEST_AUTHENTICATIONS, _ra("down", [
            {"issuer": "https://x.test", "jwksUri": uri, "timeout": "1s"},
            {"issuer": "inline", "jwks": Issuer("inline").jwks()}]), actor="test")
        await resolver.start()
        await _until(lambda: resolver.failures().get(("https://x.test",), 0) >= 2, "failures counted (retried)")
        assert not resolver.jwks() and ("inline",) not in resolver.failures()
        await _until(lambda: _condition(store, "down").get("reason") == "FetchFailed", "JwksResolved False")
        cond = _condition(store, "down")
        assert cond["status"] == "False" and uri in cond["message"]
    finally:
        await resolver.stop()


async def test_not_a_jwks_document_is_a_failure(store: MemoryStore) -> None:
    from aiohttp import web

    async def not_jwks(_: web.Request) -> web.Response:
        return web.json_response({"nokeys": []})

    app = web.Application()
    app.router.add_get("/jwks.json", not_jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    resolver = JwksResolver(store, JwksSettings(retry_initial=0.05, retry_max=0.1))
    try:
        uri = f"http://127.0.0.1:{port}/jwks.json"
        await store.create(REQUEST_AUTHENTICATIONS, _ra("bad", [{"issuer": "b", "jwksUri": uri}]), actor="test")
        await resolver.start()
        await _until(lambda: uri in resolver.errors(), "error recorded")
        assert "not a JWKS document" in resolver.errors()[uri] and not resolver.jwks()
    finally:
        await resolver.stop()
        await runner.cleanup()


async def test_issuer_openid_discovery_without_jwks_uri(store: MemoryStore) -> None:
    """A rule with neither jwks nor jwksUri: the keys named by the issuer's OpenID configuration (as Istio)."""
    from aiohttp import web

    keys = await JwksServer([Issuer("x")]).start()

    async def openid(_: web.Request) -> web.Response:
        return web.json_response({"issuer": "...", "jwks_uri": keys.url})

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", openid)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    issuer = f"http://127.0.0.1:{runner.addresses[0][1]}"
    resolver = JwksResolver(store, JwksSettings(retry_initial=0.05))
    try:
        await store.create(REQUEST_AUTHENTICATIONS, _ra("oidc", [{"issuer": issuer}]), actor="test")
        await resolver.start()
        source = f"{issuer}/.well-known/openid-configuration"
        await _until(lambda: source in resolver.jwks(), "keys found by discovery")
        assert resolver.jwks()[source] == keys_text(keys) and keys.requests >= 1
        await _until(lambda: _condition(store, "oidc").get("status") == "True", "JwksResolved True")
    finally:
        await resolver.stop()
        await runner.cleanup()
        await keys.stop()


def keys_text(server: JwksServer) -> str:
    return json.dumps({"keys": [i.jwk() for i in server.issuers]})


async def test_rule_timeout_bounds_the_fetch(store: MemoryStore) -> None:
    """The smallest ``timeout`` of the rules naming a URI bounds its fetch (a server that never answers in time)."""
    from aiohttp import web

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({"keys": []})

    app = web.Application()
    app.router.add_get("/jwks.json", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    uri = f"http://127.0.0.1:{runner.addresses[0][1]}/jwks.json"
    resolver = JwksResolver(store, JwksSettings(retry_initial=0.05, retry_max=0.1))
    try:
        await store.create(REQUEST_AUTHENTICATIONS, _ra("slow", [{"issuer": "a", "jwksUri": uri, "timeout": "2s"},
                                                                 {"issuer": "b", "jwksUri": uri, "timeout": "200ms"}]),
                           actor="test")
        await resolver.start()
        await _until(lambda: uri in resolver.errors(), "timed out")
        assert resolver.errors()[uri].endswith("no answer within 0.2s")
        assert resolver.failures()[("a",)] >= 1 and resolver.failures()[("b",)] >= 1
    finally:
        await resolver.stop()
        await runner.cleanup()
