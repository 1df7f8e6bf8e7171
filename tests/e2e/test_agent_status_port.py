"""A real ``meshplane agent`` process (its real Envoy, its DNS proxy fed over NDS by a real xDS server) serves
Istio's status port: after DNS queries to the agent, ``http://ADDRESS:15020/stats/prometheus`` counts them under
Istio's ``istio_agent_dns_*`` names, with Envoy's own metrics (from its 15090 listener) merged into the same
scrape, and the application's own metrics after them (Istio's metrics merging); ``/healthz/ready`` answers 200
once the instance is ready. A second agent whose status port is taken logs one line and runs on (Envoy LIVE, DNS
answering).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import dns.rrset
import pytest
from aiohttp import web
from envoy_harness import free_port, loopback_host, wait_until

from meshplane.store import GroupResource, MemoryStore
from meshplane.xds.default_translator import DefaultTranslator
from tests.support.promtext import samples, value
from tests.support.resolver import Resolver, resolver

pytestmark = pytest.mark.envoy

SE = GroupResource("networking.istio.io", "serviceentries")
EXTERNAL_IP = "192.0.2.44"


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Resolver, int]]:
    async with resolver(lambda name: EXTERNAL_IP if name == "www.example.org" else None) as (up, port):
        yield up, port


@pytest.fixture
async def xds_address(store: MemoryStore, xds: Any) -> str:
    await store.create(SE, {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                            "metadata": {"name": "api", "namespace": "default"},
                            "spec": {"hosts": ["api.mesh.test"], "addresses": ["10.77.0.9"],
                                     "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                                     "resolution": "STATIC", "location": "MESH_INTERNAL",
                                     "endpoints": [{"address": "127.0.0.1"}]}}, actor="test")
    _, address = await xds(DefaultTranslator())
    return address


class Agent:
    def __init__(self, work: Path, xds: str, upstream_port: int, host: str = "", **extra: Any) -> None:
        self.host = host or loopback_host()
        self.work = work
        self.dns_port = free_port(self.host)
        work.mkdir(parents=True, exist_ok=True)
        cfg = {"name": "web-0", "namespace": "default", "workload": "web", "address": self.host, "xds": xds,
               "register": False, "opa": False, "dns": True, "dns_address": f"{self.host}:{self.dns_port}",
               "dns_upstream": f"127.0.0.1:{upstream_port}", "work_dir": str(work), "drain_s": 0.1, **extra}
        (work / "agent.json").write_text(json.dumps(cfg))
        self.log = open(work / "agent.log", "wb")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen([sys.executable, "-m", "meshplane.cli.main", "agent", "--config",
                                      str(work / "agent.json")], stdout=self.log, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.work / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    async def wait_ready(self) -> None:
        async def ready() -> bool:
            assert self.proc.poll() is None, (self.work / "agent.log").read_text()
            return bool(self.status().get("ready"))

        await wait_until(ready, timeout=60)

    async def ask(self, name: str) -> dns.message.Message:
        return await dns.asyncquery.udp(dns.message.make_query(name, "A"), self.host, port=self.dns_port, timeout=5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in started:
        a.stop()


def _answers(resp: dns.message.Message) -> list[str]:
    return [r.to_text() for rrset in resp.answer for r in rrset]


async def test_status_port_counts_dns_queries_and_merges_envoys_metrics(
        tmp_path: Path, xds_address: str, upstream: tuple[Resolver, int], agents: list[Agent]) -> None:
    up, up_port = upstream

    async def app_metrics(_request: web.Request) -> web.Response:
        return web.Response(text="# TYPE orders_total counter\norders_total{kind=\"book\"} 42\n")

    app = web.Application()
    app.router.add_get("/metrics", app_metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    app_port = free_port("127.0.0.1")
    await web.TCPSite(runner, "127.0.0.1", app_port).start()
    agent = Agent(tmp_path / "a", xds_address, up_port,  # status_port: the default, 15020
                  app_metrics_url=f"http://127.0.0.1:{app_port}/metrics")
    agents.append(agent)
    try:
        await agent.wait_ready()
        await _check_status_port(agent, up)
    finally:
        await runner.cleanup()


async def _check_status_port(agent: Agent, up: Resolver) -> None:
    assert agent.status()["statusPort"] == f"http://{agent.host}:15020"
    base = f"http://{agent.host}:15020"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz/ready") as r:
            assert r.status == 200
        # Istio's 15021: Envoy answers readiness from the status port; other paths are not there.
        async with http.get(f"http://{agent.host}:15021/healthz/ready") as r:
            assert r.status == 200
        async with http.get(f"http://{agent.host}:15021/stats/prometheus") as r:
            assert r.status == 404

        assert _answers(await agent.ask("api.mesh.test")) == ["10.77.0.9"]  # the name table
        assert _answers(await agent.ask("www.example.org")) == [EXTERNAL_IP]  # forwarded
        assert _answers(await agent.ask("www.example.org")) == [EXTERNAL_IP]  # cached
        assert up.queries == ["www.example.org"]

        async with http.get(f"{base}/stats/prometheus") as r:
            assert r.status == 200
            text = await r.text()
    found = samples(text)  # one valid exposition: the agent's series, then Envoy's
    assert value(text, "istio_agent_dns_requests_total") == 3
    assert value(text, "istio_agent_dns_upstream_requests_total") == 1
    assert value(text, "istio_agent_dns_upstream_failures_total") == 0
    assert value(text, "istio_agent_dns_upstream_request_duration_seconds_count") == 1
    assert value(text, "istio_agent_dns_mesh_answers_total") == 1
    assert value(text, "istio_agent_dns_cache_hits_total") == 1
    assert value(text, "istio_agent_process_cpu_seconds_total") is not None
    assert value(text, "envoy_server_live") == 1  # from Envoy's 15090, in the same scrape
    assert "Envoy's metrics are missing" not in text
    assert any(name.startswith("envoy_cluster_manager_") for name, _ in found)
    assert value(text, "orders_total", kind="book") == 42  # the application's, merged after Envoy's
    assert text.index("envoy_server_live") < text.index("orders_total")


async def test_a_taken_status_port_is_logged_and_the_agent_runs_on(
        tmp_path: Path, xds_address: str, upstream: tuple[Resolver, int], agents: list[Agent]) -> None:
    _, up_port = upstream
    host = loopback_host()
    with socket.socket() as holder:  # something else has the instance's 15020
        holder.bind((host, 15020))
        holder.listen()
        agent = Agent(tmp_path / "b", xds_address, up_port, host=host)
        agents.append(agent)
        await agent.wait_ready()  # Envoy LIVE, the name table arrived: the agent did not stop for its port
        assert agent.status()["statusPort"] == ""
        assert _answers(await agent.ask("api.mesh.test")) == ["10.77.0.9"]
        lines = [ln for ln in (agent.work / "agent.log").read_text().splitlines() if "status port" in ln]
        assert len(lines) == 1 and f"{host}:15020 unavailable" in lines[0], lines
        # Envoy's health port is not configured either: it would forward readiness to whatever holds 15020.
        with pytest.raises(OSError):
            socket.create_connection((host, 15021), timeout=2).close()
