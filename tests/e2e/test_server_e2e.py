"""The whole control plane as users run it: the real ``meshplane server`` process, configuration written through
its Kubernetes-compatible API, a real Envoy connected to its xDS address, and real traffic.

A configuration change applied through the API reaches the proxy while a request loop runs, without one failed
request; ``meshplane proxy-status`` (the management API) shows the proxy SYNCED on every type. Durations written
in any of Go's forms (``.5s``) reach Envoy with the value admission read, and Envoy enforces them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from e2e_objects import destination_rule, service_entry, virtual_service, workload_entry
from envoy_harness import Harness, wait_until

from tests.support.server import ServerProcess, start_server

pytestmark = pytest.mark.envoy

NS_PATH = "/apis/networking.istio.io/v1/namespaces/default"
REVIEWS = "reviews.default.svc.cluster.local"
SUBSETS = [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    data = tmp_path / "data"
    data.mkdir()
    srv = await asyncio.to_thread(start_server, data, "--debounce-quiet", "0.02", "--debounce-max", "0.2")
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.stop)


async def _write(session: aiohttp.ClientSession, url: str, plural: str, obj: dict[str, Any]) -> None:
    """Create, or replace at the current version: what ``kubectl apply`` amounts to."""
    name = obj["metadata"]["name"]
    async with session.get(f"{url}{NS_PATH}/{plural}/{name}") as r:
        if r.status == 404:
            async with session.post(f"{url}{NS_PATH}/{plural}", json=obj) as c:
                assert c.status == 201, await c.text()
            return
        live = await r.json()
    obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}}
    async with session.put(f"{url}{NS_PATH}/{plural}/{name}", json=obj) as u:
        assert u.status == 200, await u.text()


async def test_config_change_through_the_api_reaches_envoy_without_errors(
    server: ServerProcess, harness: Harness
) -> None:
    v1 = await harness.backend("reviews-v1")
    v2 = await harness.backend("reviews-v2")
    async with aiohttp.ClientSession() as api:
        await _write(api, server.url, "serviceentries", service_entry("reviews", REVIEWS, selector={"app": "reviews"}))
        for name, b, version in (("reviews-v1", v1, "v1"), ("reviews-v2", v2, "v2")):
            we = workload_entry(name, b.host, {"app": "reviews", "version": version}, ports={"http-80": b.port})
            await _write(api, server.url, "workloadentries", we)
        await _write(api, server.url, "destinationrules", destination_rule("reviews", REVIEWS, subsets=SUBSETS))
        all_v1 = virtual_service(
            "reviews", [REVIEWS], [{"route": [{"destination": {"host": REVIEWS, "subset": "v1"}}]}]
        )
        await _write(api, server.url, "virtualservices", all_v1)

        client = await harness.envoy("client", server.xds, workload="client")
        proxy = f"http://{client.listen_host}:15001/"

        async def answered_by(headers: dict[str, str] | None = None) -> str:
            status, body, _ = await harness.get(proxy, host=REVIEWS, headers=headers)
            return f"{status}:{body.get('backend', '')}"

        async def is_v1() -> bool:
            return await answered_by() == "200:reviews-v1"

        await wait_until(is_v1, what="traffic reaches reviews-v1")

        results: list[str] = []
        stop = asyncio.Event()

        async def loop() -> None:
            while not stop.is_set():
                results.append(await answered_by({"end-user": "jason"}))

        task = asyncio.create_task(loop())
        jason_v2 = virtual_service(
            "reviews",
            [REVIEWS],
            [
                {
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": REVIEWS, "subset": "v2"}}],
                },
                {"route": [{"destination": {"host": REVIEWS, "subset": "v1"}}]},
            ],
        )
        await _write(api, server.url, "virtualservices", jason_v2)

        async def switched() -> bool:
            return bool(results) and results[-1] == "200:reviews-v2"

        await wait_until(switched, what="jason's requests move to v2")
        await asyncio.sleep(0.3)
        stop.set()
        await task

    assert results, "the request loop ran"
    assert all(r in ("200:reviews-v1", "200:reviews-v2") for r in results), sorted(set(results))
    first_v2 = results.index("200:reviews-v2")
    assert all(r == "200:reviews-v2" for r in results[first_v2:]), "no flapping back after the switch"

    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "meshplane.cli.main", "proxy-status", "--server", server.url, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    proxies = json.loads(out.stdout)
    me = next(p for p in proxies if p["nodeId"] == client.node_id)
    assert me["workload"] == "client" and me["namespace"] == "default"
    assert {t: me["types"][t]["state"] for t in ("CDS", "EDS", "LDS", "RDS")} == dict.fromkeys(
        ("CDS", "EDS", "LDS", "RDS"), "SYNCED"
    )
    table = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "meshplane.cli.main", "proxy-status", "--server", server.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pod = client.node_id.split("~")[2]  # istioctl's NAME column: the node id's pod.namespace part
    assert pod.startswith("client") and pod.endswith(".default")
    assert pod in table.stdout and "SYNCED" in table.stdout


def _route_of(dump: dict[str, Any], vhost: str) -> dict[str, Any] | None:
    """The first route of virtual host ``vhost`` in an Envoy /config_dump (JSON), if Envoy has it."""
    for section in dump["configs"]:
        for cfg in section.get("dynamic_route_configs", []):
            for vh in cfg["route_config"].get("virtual_hosts", []):
                if vh["name"] == vhost:
                    return dict(vh["routes"][0])
    return None


async def test_go_duration_forms_reach_envoy_and_time_out(server: ServerProcess, harness: Harness) -> None:
    """``timeout: .5s`` and ``perTryTimeout: .25s`` (Go's forms of 500ms and 250ms) applied through the API are
    Envoy's 0.5 s route timeout and 0.25 s per-try timeout: a backend that answers after 1.5 s gets Envoy's 504
    well before it answers. (Before the typed model, ``.5s`` passed validation and reached Envoy as no timeout.)"""
    delay = 1.5
    slow = await harness.backend("reviews-v1")
    async with aiohttp.ClientSession() as api:
        await _write(api, server.url, "serviceentries", service_entry("reviews", REVIEWS, selector={"app": "reviews"}))
        await _write(api, server.url, "workloadentries", workload_entry(
            "reviews-v1", slow.host, {"app": "reviews", "version": "v1"}, ports={"http-80": slow.port}))
        await _write(api, server.url, "virtualservices", virtual_service("reviews", [REVIEWS], [{
            "route": [{"destination": {"host": REVIEWS}}], "timeout": ".5s",
            "retries": {"attempts": 1, "perTryTimeout": ".25s"}}]))
    client = await harness.envoy("client", server.xds, workload="client")
    proxy = f"http://{client.listen_host}:15001"

    async def live() -> bool:
        return (await harness.get(f"{proxy}/quick", host=REVIEWS))[0] == 200

    await wait_until(live, what="the route to reviews is live")
    route = _route_of(await client.config_dump(), f"{REVIEWS}:80")
    assert route is not None
    assert route["route"]["timeout"] == "0.500s", route
    assert route["route"]["retry_policy"]["per_try_timeout"] == "0.250s", route

    loop = asyncio.get_running_loop()
    start = loop.time()
    status, _, headers = await harness.get(f"{proxy}/delay/{delay}", host=REVIEWS)
    elapsed = loop.time() - start
    assert status == 504, (status, dict(headers))
    assert elapsed < delay, f"Envoy answered after {elapsed:.2f} s: it waited for the backend"
    assert any(p == f"/delay/{delay}" for _, p, _ in slow.requests), "the request reached the backend"
    stats = await client.stats("upstream_rq_per_try_timeout")
    assert sum(v for k, v in stats.items() if REVIEWS in k) >= 1, stats
