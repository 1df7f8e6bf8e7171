"""The agent's metrics and its status port (Istio's 15020): the DNS proxy's counts under Istio's
``istio_agent_dns_*`` names move as the proxy answers from the table, forwards, hits its cache and meets a dead
upstream; ``/stats/prometheus`` serves them with Envoy's metrics appended, and without them (a comment saying why,
logged once) when Envoy's listener does not answer; ``/healthz/ready`` follows the agent's readiness; a taken port
is logged and not fatal. Real UDP and HTTP on loopback; Envoy's listener is a small HTTP server of the test."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import dns.rrset
import pytest
from aiohttp import web

from meshplane.agent import dns as agent_dns
from meshplane.agent.dns import DnsProxy
from meshplane.agent.metrics import DNS_COUNTERS, AgentMetrics
from meshplane.agent.statusport import StatusServer
from meshplane.model import nds
from tests.support.promtext import samples, value
from tests.support.resolver import Resolver, resolver

ENVOY_TEXT = ("# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n"
              "# TYPE istio_requests_total counter\n"
              'istio_requests_total{reporter="destination",response_code="200"} 7')  # no final newline


@pytest.fixture
async def proxy() -> AsyncIterator[tuple[DnsProxy, Resolver, int, AgentMetrics]]:
    async with resolver(lambda name: "192.0.2.7" if name.endswith("example.com") else None) as (up, up_port):
        p = DnsProxy("default", ("127.0.0.1", up_port))
        t = nds.NameTable()
        r = t.table["reviews.default.svc.cluster.local"]
        r.ips.append("240.240.0.5")
        r.registry, r.shortname, r.namespace = "Kubernetes", "reviews", "default"
        p.set_table(t)
        metrics = AgentMetrics(process=False)
        metrics.watch_dns(p)
        [address] = await p.serve(["127.0.0.1:0"])
        yield p, up, int(address.rpartition(":")[2]), metrics
        await p.close()


async def _ask(port: int, name: str) -> dns.message.Message:
    return await dns.asyncquery.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)


def _dns(metrics: AgentMetrics) -> dict[str, float]:
    """The DNS series of the exposition, by sample name (none has labels but the histogram's buckets)."""
    return {name: v for (name, labels), v in samples(metrics.render().decode()).items()
            if name.startswith("istio_agent_dns_") and not labels}


async def test_dns_counts_move_under_istios_names(proxy: tuple[DnsProxy, Resolver, int, AgentMetrics],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    p, up, port, metrics = proxy
    zero = _dns(metrics)
    assert {f"{name}_total" for name, _, _ in DNS_COUNTERS} <= set(zero)
    assert zero["istio_agent_dns_requests_total"] == 0
    assert zero["istio_agent_dns_upstream_request_duration_seconds_count"] == 0

    assert (await _ask(port, "reviews")).answer  # the table
    assert (await _ask(port, "nothing.default.svc.cluster.local")).rcode() == dns.rcode.NXDOMAIN  # local
    assert (await _ask(port, "www.example.com")).answer  # upstream
    assert (await _ask(port, "www.example.com")).answer  # its cached answer
    assert (await _ask(port, "gone.test")).rcode() == dns.rcode.NXDOMAIN  # upstream, a negative answer
    got = _dns(metrics)
    assert got["istio_agent_dns_requests_total"] == 5
    assert got["istio_agent_dns_mesh_answers_total"] == 1
    assert got["istio_agent_dns_local_nxdomain_total"] == 1
    assert got["istio_agent_dns_upstream_requests_total"] == 2
    assert got["istio_agent_dns_cache_hits_total"] == 1
    assert got["istio_agent_dns_upstream_failures_total"] == 0
    assert got["istio_agent_dns_stale_answers_total"] == 0
    assert got["istio_agent_dns_upstream_request_duration_seconds_count"] == 2  # one per upstream exchange
    text = metrics.render().decode()
    assert value(text, "istio_agent_dns_upstream_request_duration_seconds_bucket", le="+Inf") == 2

    # The upstream goes away: a cached name is served stale, a new one fails; both count as upstream failures.
    monkeypatch.setattr(agent_dns, "UPSTREAM_TIMEOUT_S", 0.2)
    up.transport.close()
    for entry in p.cache.values():
        entry.expires = 0.0
    assert (await _ask(port, "www.example.com")).answer
    assert (await _ask(port, "new.example.com")).rcode() == dns.rcode.SERVFAIL
    got = _dns(metrics)
    assert got["istio_agent_dns_requests_total"] == 7
    assert got["istio_agent_dns_upstream_requests_total"] == 4
    assert got["istio_agent_dns_upstream_failures_total"] == 2
    assert got["istio_agent_dns_stale_answers_total"] == 1
    assert got["istio_agent_dns_upstream_request_duration_seconds_count"] == 4
    assert p.stats.view()["requests"] == 7  # the status file reports the same counts


def test_two_agents_in_one_process_keep_their_own_counts() -> None:
    a, b = AgentMetrics(process=False), AgentMetrics(process=False)
    pa, pb = DnsProxy("default", None), DnsProxy("default", None)
    a.watch_dns(pa)
    b.watch_dns(pb)
    pa.stats.requests = 3
    assert _dns(a)["istio_agent_dns_requests_total"] == 3 and _dns(b)["istio_agent_dns_requests_total"] == 0
    assert "istio_agent_process_cpu_seconds_total" in AgentMetrics().render().decode()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _envoy_stats(answer: list[int]) -> tuple[web.AppRunner, str]:
    """Envoy's metrics listener as the test wants it: ``answer[0]`` is the HTTP status it gives."""
    async def handle(_request: web.Request) -> web.Response:
        return web.Response(status=answer[0], text=ENVOY_TEXT if answer[0] == 200 else "no\n")

    app = web.Application()
    app.router.add_get("/stats/prometheus", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return runner, f"http://127.0.0.1:{port}/stats/prometheus"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_stats_prometheus_merges_envoys_metrics(session: aiohttp.ClientSession,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    answer = [200]
    envoy, url = await _envoy_stats(answer)
    metrics = AgentMetrics(process=False)
    p = DnsProxy("default", None)
    metrics.watch_dns(p)
    p.stats.requests = 2
    server = StatusServer(metrics, url, session, lambda: "")
    assert await server.start("127.0.0.1", 0)
    base = f"http://{server.address}"
    try:
        async with session.get(f"{base}/stats/prometheus") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
        assert text.index("istio_agent_dns_requests_total") < text.index("envoy_server_live")  # agent's first
        assert value(text, "istio_agent_dns_requests_total") == 2
        assert value(text, "envoy_server_live") == 1
        assert value(text, "istio_requests_total", reporter="destination", response_code="200") == 7
        assert text.endswith("\n")

        # Envoy's listener fails (Envoy restarting): the agent's own metrics still, and a comment why; logged once.
        answer[0] = 503
        with caplog.at_level(logging.WARNING, logger="meshplane.agent.statusport"):
            for _ in range(2):
                async with session.get(f"{base}/stats/prometheus") as r:
                    assert r.status == 200
                    text = await r.text()
                assert value(text, "istio_agent_dns_requests_total") == 2 and "envoy_server_live" not in text
                assert "# meshplane agent: Envoy's metrics are missing:" in text and "HTTP 503" in text
        assert len(caplog.records) == 1 and "HTTP 503" in caplog.records[0].getMessage()
        samples(text)  # still a valid exposition
    finally:
        await server.stop()
        await envoy.cleanup()

    # No Envoy listening at all.
    gone = StatusServer(metrics, f"http://127.0.0.1:{_closed_port()}/stats/prometheus", session, lambda: "")
    text = (await gone.merged()).decode()
    assert value(text, "istio_agent_dns_requests_total") == 2 and "Envoy's metrics are missing" in text
    off = StatusServer(metrics, "", session, lambda: "")
    assert "stats_port 0" in (await off.merged()).decode()


async def test_healthz_ready_follows_the_agents_readiness(session: aiohttp.ClientSession) -> None:
    state = ["Envoy is not LIVE"]
    server = StatusServer(AgentMetrics(process=False), "", session, lambda: state[0])
    assert await server.start("127.0.0.1", 0)
    try:
        async with session.get(f"http://{server.address}/healthz/ready") as r:
            assert r.status == 503 and "Envoy is not LIVE" in await r.text()
        state[0] = ""
        async with session.get(f"http://{server.address}/healthz/ready") as r:
            assert r.status == 200
    finally:
        await server.stop()


async def test_a_taken_port_is_logged_and_not_fatal(session: aiohttp.ClientSession,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = StatusServer(AgentMetrics(process=False), "", session, lambda: "")
        with caplog.at_level(logging.WARNING, logger="meshplane.agent.statusport"):
            assert not await server.start("127.0.0.1", port)
        assert len(caplog.records) == 1 and f"127.0.0.1:{port} unavailable" in caplog.records[0].getMessage()
        assert server.address == ""
        await server.stop()  # nothing to stop: fine


async def test_the_applications_metrics_are_merged_after_envoys(session: aiohttp.ClientSession,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Istio's metrics merging: the application's own endpoint (its prometheus.io annotations) in the same
    answer; an application that cannot be read costs only its part."""
    envoy, envoy_url = await _envoy_stats([200])

    async def app_metrics(_request: web.Request) -> web.Response:
        return web.Response(text="# TYPE orders_total counter\norders_total{kind=\"book\"} 42")  # no final newline

    app = web.Application()
    app.router.add_get("/custom/metrics", app_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    server = StatusServer(AgentMetrics(process=False), envoy_url, session, lambda: "",
                          app_stats_url=f"http://127.0.0.1:{port}/custom/metrics")
    try:
        text = (await server.merged()).decode()
        assert value(text, "orders_total", kind="book") == 42 and value(text, "envoy_server_live") == 1
        assert text.index("envoy_server_live") < text.index("orders_total") and text.endswith("\n")
        await runner.cleanup()  # the application goes away: Envoy's metrics stay, a comment says why
        with caplog.at_level(logging.WARNING, logger="meshplane.agent.statusport"):
            for _ in range(2):
                text = (await server.merged()).decode()
                assert "orders_total" not in text and value(text, "envoy_server_live") == 1
                assert "# meshplane agent: the application's metrics are missing:" in text
        assert len(caplog.records) == 1
        samples(text)
    finally:
        await envoy.cleanup()
