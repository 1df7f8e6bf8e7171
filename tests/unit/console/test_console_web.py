"""The console's HTTP side over real sockets: its static page, the topology JSON from a scraped (loopback) metrics
endpoint, what a proxy that cannot be read shows, the scraper switched off, and tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from meshplane.api.kinds import default_registry
from meshplane.apiserver.app import ApiServer, ApiServerSettings
from meshplane.console import MetricsScraper, ScraperSettings, Target, console_routes
from meshplane.console.topology import Workload
from meshplane.store import MemoryStore

LABELS = ('connection_security_policy="mutual_tls",destination_cluster="c1",destination_workload="reviews-v2",'
          'destination_workload_namespace="default",reporter="destination",response_code="200",'
          'source_cluster="c1",source_workload="productpage-v1",source_workload_namespace="default"')


def fake_proxy(count: list[int]) -> web.Application:
    """Serves Istio's request counter as a sidecar's :15090 would; each scrape sees ``count[0]``."""

    async def stats(request: web.Request) -> web.Response:
        assert request.query.get("filter") == "istio"
        return web.Response(text=f"# TYPE istio_requests_total counter\nistio_requests_total{{{LABELS}}} {count[0]}\n")

    app = web.Application()
    app.router.add_get("/stats/prometheus", stats)
    return app


async def api_client(routes: list[web.RouteDef],
                     tokens: dict[str, str] | None = None) -> tuple[TestClient, MemoryStore]:
    store = MemoryStore()
    await store.start()
    api = ApiServer(store, default_registry(), ApiServerSettings(tokens=tokens or {}))
    api.extra_routes.extend(routes)
    client = TestClient(TestServer(api.app(), host="127.0.0.1"))
    await client.start_server()
    return client, store


def targets_of(port_targets: list[Target]) -> Callable[[], list[Target]]:
    return lambda: list(port_targets)


async def test_topology_from_a_scraped_proxy_and_a_proxy_that_cannot_be_read() -> None:
    count = [10]
    async with TestServer(fake_proxy(count), host="127.0.0.1") as proxy:
        targets = targets_of([
            Target("sidecar~127.0.0.1~reviews", Workload("c1", "default", "reviews-v2"), "sidecar", ("127.0.0.1",),
                   "region-1/zone-a"),
            Target("sidecar~10.1.2.3~far", Workload("c2", "default", "details-v1"), "sidecar", ("10.1.2.3",), ""),
        ])
        scraper = MetricsScraper(targets, ScraperSettings(interval_s=0.05, port=proxy.port, window_s=30))
        client, store = await api_client(console_routes(scraper, targets))
        try:
            r = await client.get("/management/v1/console/topology")
            assert r.status == 200
            assert scraper.active  # the first look started it
            doc = await r.json()
            assert doc["kind"] == "ConsoleTopology"
            for _ in range(200):  # the first reading (the baseline) is in
                if any(st.last_ok for st in scraper.states()):
                    break
                await asyncio.sleep(0.05)
            count[0] = 30
            for _ in range(200):
                doc = await (await client.get("/management/v1/console/topology")).json()
                if doc["edges"]:
                    break
                await asyncio.sleep(0.05)
            (edge,) = doc["edges"]
            assert edge["source"] == "c1/default/productpage-v1" and edge["target"] == "c1/default/reviews-v2"
            assert edge["requests"] == 20 and edge["rps"] > 0 and edge["mtls"] == "mutual_tls"
            nodes = {n["id"]: n for n in doc["nodes"]}
            assert nodes["c1/default/reviews-v2"]["zone"] == "zone-a"
            assert nodes["c1/default/reviews-v2"]["kind"] == "sidecar"
            assert nodes["c1/default/productpage-v1"]["kind"] == "unknown"  # seen only as a caller
            scrapes = {s["workload"]: s for s in doc["scrape"]}
            assert scrapes["c1/default/reviews-v2"]["error"] == ""
            assert scrapes["c1/default/reviews-v2"]["url"].endswith(f":{proxy.port}/stats/prometheus")
            assert "not a loopback address" in scrapes["c2/default/details-v1"]["error"]
        finally:
            await scraper.stop()
            assert not scraper.active
            await client.close()
            await store.close()


async def test_a_proxy_that_does_not_answer_is_listed_with_its_error() -> None:
    targets = targets_of([Target("p", Workload("c1", "default", "w"), "sidecar", ("127.0.0.1",), "")])
    scraper = MetricsScraper(targets, ScraperSettings(port=1, timeout_s=1.0))  # nothing listens on port 1
    await scraper.scrape_once()
    (state,) = scraper.states()
    assert state.error and state.last_ok is None
    await scraper.stop()


async def test_the_runtime_networks_are_scraped_too() -> None:
    """A transparent mesh's sidecars live in network namespaces (10.B.c.n on the bridge): the server is told
    that network (``--console-scrape-network``) and reads them there; other addresses stay skipped."""
    outside = Target("out", Workload("c1", "default", "x"), "sidecar", ("10.33.1.2",), "")
    scraper = MetricsScraper(targets_of([]), ScraperSettings(networks=("10.32.0.0/16",)))
    assert scraper.reads("10.32.1.2") and scraper.reads("127.0.0.1") and scraper.reads("::1")
    assert not scraper.reads("10.33.1.2") and not scraper.reads("") and not scraper.reads("reviews")
    skipped = MetricsScraper(targets_of([outside]), ScraperSettings(networks=("10.32.0.0/16",)))
    await skipped.scrape_once()
    (state,) = skipped.states()
    assert state.url == "" and state.error == ("10.33.1.2 is not a loopback address nor in 10.32.0.0/16 (the "
                                               "console reads only the local runtime's proxies)")
    await skipped.stop()


async def test_static_page_scraper_off_and_tokens() -> None:
    client, store = await api_client(console_routes(None, list), tokens={"s3cret": "alice"})
    try:
        r = await client.get("/console", allow_redirects=False)
        assert r.status == 302 and r.headers["Location"] == "/console/"
        r = await client.get("/console/")  # no data in it: served without a token
        assert r.status == 200 and "meshplane console" in await r.text()
        assert (await client.get("/console/console.js")).headers["Content-Type"].startswith("text/javascript")
        for sneaky in ("/console/%2e%2e/web.py", "/console/..%2fweb.py", "/console/vendor/..%2f..%2fweb.py"):
            assert (await client.get(URL(sneaky, encoded=True))).status == 404, sneaky
        r = await client.get("/console/vendor/nothing.js")
        assert r.status == 404 and "scripts/setup" in await r.text()
        r = await client.get("/management/v1/console/topology")
        assert r.status == 401  # the data needs the token
        r = await client.get("/management/v1/console/topology", headers={"Authorization": "Bearer s3cret"})
        assert r.status == 404 and "--no-console-scrape" in (await r.json())["message"]
    finally:
        await client.close()
        await store.close()


async def test_the_scraper_stops_when_nobody_looks_and_starts_again() -> None:
    count = [1]
    async with TestServer(fake_proxy(count), host="127.0.0.1") as proxy:
        targets = targets_of([Target("p", Workload("c1", "default", "reviews-v2"), "sidecar", ("127.0.0.1",), "")])
        scraper = MetricsScraper(targets, ScraperSettings(interval_s=0.02, idle_s=0.2, port=proxy.port))
        try:
            scraper.touch()
            for _ in range(200):
                if not scraper.active:
                    break
                await asyncio.sleep(0.02)
            assert not scraper.active  # idle: stopped by itself
            assert scraper.states() == [] and scraper.edges() == []  # and kept no stale baseline
            scraper.touch()
            assert scraper.active
        finally:
            await scraper.stop()
