"""The Telemetry API on real Envoys, with the YAML of Istio's own tasks (tests/data/telemetry, unchanged):
mesh-wide access logging with the ``envoy`` provider (Istio's default format on the proxy's standard output), a
namespace-level filter that overrides it (only failed requests), a metric disabled on the client side, and a
workload-level tag override (``request_host`` added, ``request_protocol`` removed)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from envoy_harness import wait_until
from security_mesh import REVIEWS, SecurityMesh

from meshplane.store import GroupResource
from tests.support.promtext import samples

pytestmark = pytest.mark.envoy

DATA = Path(__file__).resolve().parents[1] / "data" / "telemetry"
TELEMETRIES = GroupResource("telemetry.istio.io", "telemetries")
# Istio's default text format: [time] "METHOD PATH PROTOCOL" CODE FLAGS DETAILS ...
LINE = re.compile(r'^\[\S+\] "GET (?P<path>\S+) HTTP/1\.1" (?P<code>\d{3}) (?P<flags>\S+) (?P<details>\S+) ')


async def _apply(sec: SecurityMesh, name: str) -> None:
    obj: dict[str, Any] = yaml.safe_load((DATA / name).read_text())
    await sec.store.create(TELEMETRIES, obj, actor="test")
    await sec.synced()


def _logged(sec: SecurityMesh, workload: str) -> list[tuple[str, str]]:
    """(path, code) of every access-log line on ``workload``'s proxy standard output."""
    path = sec.workloads[workload].envoy.log_path
    assert path is not None
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if m:
            out.append((m.group("path"), m.group("code")))
    return out


async def _scrape(sec: SecurityMesh, workload: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    address = sec.workloads[workload].envoy.stats_address
    async with aiohttp.ClientSession() as s, s.get(f"http://{address}/stats/prometheus") as r:
        return samples(await r.text())


async def _mesh(sec: SecurityMesh) -> None:
    await sec.workload("reviews")
    await sec.workload("productpage", serve=False)
    await sec.synced()
    await sec.eventually("productpage", "/warm", 200)


async def test_mesh_wide_access_log_then_a_namespace_filter_overrides_it(sec: SecurityMesh) -> None:
    await _mesh(sec)
    assert await sec.call("productpage", "/before") == 200
    await asyncio.sleep(1)  # Envoy flushes access logs every second at most
    assert not _logged(sec, "reviews") and not _logged(sec, "productpage"), "no access log before the Telemetry"

    await _apply(sec, "mesh-default-access-log.yaml")

    async def both_logged() -> bool:
        await sec.call("productpage", "/logged")
        return ("/logged", "200") in _logged(sec, "reviews") and ("/logged", "200") in _logged(sec, "productpage")

    await wait_until(both_logged, timeout=20, what="/logged in both proxies' access logs")

    await _apply(sec, "errors-only-access-log.yaml")  # the namespace's accessLogging replaces the mesh's whole

    rounds = [0]

    async def only_errors() -> bool:
        # A fresh pair each round (the new listeners may take a moment to replace the old ones).
        rounds[0] += 1
        n = rounds[0]
        await sec.call("productpage", f"/quiet?{n}")
        await sec.call("productpage", f"/status/404?{n}")
        await asyncio.sleep(1.2)  # Envoy flushes access logs every second
        logged = _logged(sec, "reviews")
        return (f"/status/404?{n}", "404") in logged and (f"/quiet?{n}", "200") not in logged

    await wait_until(only_errors, timeout=30, what="only the 404 logged under the filter")


async def test_disabled_client_metric_and_workload_tag_overrides(sec: SecurityMesh) -> None:
    await _mesh(sec)
    before = await _scrape(sec, "productpage")
    assert any(n == "istio_requests_total" for n, _ in before), "reported by the client before the Telemetry"

    await _apply(sec, "disable-client-request-count.yaml")
    await _apply(sec, "request-host-tag.yaml")

    def client_count(samples_: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
        return sum(v for (n, _), v in samples_.items() if n == "istio_requests_total")

    async def applied() -> bool:
        assert await sec.call("productpage", "/tagged") == 200
        server = await _scrape(sec, "reviews")
        return any(n == "istio_requests_total" and "request_host" in dict(lbls) for n, lbls in server)

    await wait_until(applied, timeout=20, what="the server's counter tagged")
    # The client's counter stays at what it had counted (a proxy's stats live as long as the proxy) and no longer
    # counts, once connections opened before the change (served by the old listener until it drains) are gone.
    async def no_longer_counted() -> bool:
        frozen = client_count(await _scrape(sec, "productpage"))
        for i in range(5):
            assert await sec.call("productpage", f"/more/{i}") == 200
        return client_count(await _scrape(sec, "productpage")) == frozen

    await wait_until(no_longer_counted, timeout=20, what="the client's REQUEST_COUNT no longer counting")
    server = await _scrape(sec, "reviews")
    (labels,) = [dict(lbls) for n, lbls in server if n == "istio_requests_total" and "request_host" in dict(lbls)]
    assert labels["request_host"] == REVIEWS and "request_protocol" not in labels
    assert labels["reporter"] == "destination" and labels["source_workload"] == "productpage"
    client = await _scrape(sec, "productpage")
    # Only REQUEST_COUNT was disabled on the client: its duration histogram is still there.
    assert any(n.startswith("istio_request_duration_milliseconds") for n, _ in client)
