"""The demo application: Bookinfo's call graph, header propagation, degraded answers, the HTML view.

The callees are real aiohttp servers on loopback playing the sidecar (an explicit HTTP proxy that answers for the
service named in the request line); the test checks what reached them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from meshplane.runtime.demoapp import DemoApp, callees


def test_call_graph() -> None:
    assert callees("productpage", "v1") == ("details", "reviews")
    assert callees("reviews", "v1") == ()
    assert callees("reviews", "v2") == callees("reviews", "v3") == ("ratings",)
    assert callees("ratings", "v1") == callees("details", "v1") == ()


async def test_calls_forward_headers_and_degrade() -> None:
    seen: list[dict[str, Any]] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append({"url": str(request.url), "headers": {k.lower(): v for k, v in request.headers.items()}})
        if request.host.startswith("reviews"):
            return web.Response(status=503, text="no healthy upstream")
        return web.json_response({"service": "details", "version": "v1", "calls": []})

    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/{tail:.*}", proxy)
    async with TestServer(proxy_app, host="127.0.0.1") as proxy_server:
        app = DemoApp("productpage", "v1", cluster="c1", zone="za", instance="pp-0", port=9080,
                      proxy=str(proxy_server.make_url("")).rstrip("/"), timeout_s=5)
        async with TestClient(TestServer(app.app(), host="127.0.0.1")) as client:
            r = await client.get("/productpage", headers={"end-user": "jason", "x-request-id": "abc",
                                                          "baggage": "lane=v2", "x-unrelated": "no"})
            assert r.status == 200
            doc = await r.json()
            r = await client.get("/productpage", headers={"Accept": "text/html"})
            assert r.content_type == "text/html" and "unavailable" in await r.text()
    assert doc["service"] == "productpage" and doc["cluster"] == "c1" and doc["zone"] == "za"
    details, reviews = doc["calls"]
    assert details["service"] == "details" and details["status"] == 200
    assert reviews == {"service": "reviews", "status": 503, "error": "no healthy upstream", "calls": []}
    first = [s for s in seen if s["headers"].get("end-user")]
    assert len(first) == 2
    for s in first:
        assert s["headers"]["x-request-id"] == "abc" and s["headers"]["baggage"] == "lane=v2"
        assert "x-unrelated" not in s["headers"]
    assert {s["headers"]["host"] for s in first} == {"details:9080", "reviews:9080"}


async def test_bookinfo_timeouts_and_the_one_retry_to_reviews(monkeypatch: Any) -> None:
    """productpage tries reviews twice (any answer but 200, or no answer in time), details once; ``--timeout``
    means one attempt with that timeout. Timeouts shortened here; the real ones are Bookinfo's 3 s."""
    import asyncio

    from meshplane.runtime import demoapp

    assert demoapp.call_policy("productpage", "v1", "reviews") == (3.0, 2)
    assert demoapp.call_policy("productpage", "v1", "details") == (3.0, 1)
    assert demoapp.call_policy("reviews", "v2", "ratings") == (10.0, 1)
    assert demoapp.call_policy("reviews", "v3", "ratings") == (2.5, 1)
    monkeypatch.setitem(demoapp.CALL_POLICY, ("productpage", "*", "reviews"), (0.3, 2))
    monkeypatch.setitem(demoapp.CALL_POLICY, ("productpage", "*", "details"), (10.0, 1))
    hits: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        hits.append(request.host.partition(":")[0])
        if request.host.startswith("reviews"):
            await asyncio.sleep(3.0)  # longer than the caller waits
        return web.Response(status=503, text="details down")

    proxy_app = web.Application()
    proxy_app.router.add_route("*", "/{tail:.*}", proxy)
    async with TestServer(proxy_app, host="127.0.0.1") as proxy_server:
        url = str(proxy_server.make_url("")).rstrip("/")
        for timeout_s, reviews_attempts, waited in ((None, 2, "0.3"), (1.0, 1, "1")):
            hits.clear()
            app = DemoApp("productpage", "v1", cluster="c1", zone="za", instance="pp-0", port=9080, proxy=url,
                          timeout_s=timeout_s)
            async with TestClient(TestServer(app.app(), host="127.0.0.1")) as client:
                doc = await (await client.get("/productpage")).json()
            details, reviews = doc["calls"]
            assert reviews == {"service": "reviews", "status": 504, "error": f"no answer within {waited} s",
                               "calls": []}
            assert details["status"] == 503
            assert hits.count("reviews") == reviews_attempts and hits.count("details") == 1
