"""Diagnosis end to end: the real ``meshplane server`` process, a real Envoy on its xDS, real kubectl.

A VirtualService routing to a subset no DestinationRule defines is a 503 in the data plane; here it is also
reported: ``meshplane analyze`` names it with Istio's code and exits 79 (istioctl's code for issues found), the
object's ``status.validationMessages`` carries the message and its ``Reconciled`` condition is False. Once fixed,
``kubectl wait --for=condition=Reconciled`` returns for the new generation, the message is gone and traffic flows;
the status writes change no generation and cause no pushes. ``meshplane analyze -f`` judges a file against the
live config before it is applied, and stores nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_objects import destination_rule, service_entry, virtual_service, workload_entry
from envoy_harness import Harness, wait_until

from tests.support.server import ServerProcess, start_server

pytestmark = [pytest.mark.envoy, pytest.mark.kubectl]

REVIEWS = "reviews.default.svc.cluster.local"
MISSING = ('Error [IST0101] (VirtualService default/reviews) Referenced host+subset in destinationrule not found: '
           f'"{REVIEWS}+v3"')


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    data = tmp_path / "data"
    data.mkdir()
    srv = await asyncio.to_thread(start_server, data, "--debounce-quiet", "0.02", "--debounce-max", "0.2")
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.stop)


class Kubectl:
    def __init__(self, server: str, home: Path) -> None:
        if shutil.which("kubectl") is None:
            pytest.skip("kubectl is not on PATH")
        self.server, self.home = server, home
        home.mkdir(parents=True, exist_ok=True)

    async def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", "--server", self.server, "--cache-dir", str(self.home / "cache"), *args]
        env = {**os.environ, "HOME": str(self.home), "KUBECONFIG": str(self.home / "none")}
        res = await asyncio.to_thread(subprocess.run, cmd, input=input, capture_output=True, text=True, timeout=90,
                                      env=env)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    async def apply(self, *objs: dict[str, Any]) -> None:
        await self.run("apply", "-f", "-", input=yaml.safe_dump_all(objs))

    async def get(self, what: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads((await self.run("get", what, "-o", "json")).stdout)
        return out


async def meshplane(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "meshplane.cli.main", *args],
                                   capture_output=True, text=True, timeout=60)


def reviews_vs(subset: str) -> dict[str, Any]:
    return virtual_service("reviews", [REVIEWS], [{"route": [{"destination": {"host": REVIEWS, "subset": subset}}]}])


async def test_missing_subset_is_reported_by_analyze_and_status_and_the_fix_is_reconciled(
        server: ServerProcess, harness: Harness, tmp_path: Path) -> None:
    kubectl = Kubectl(server.url, tmp_path / "kube")
    v1 = await harness.backend("reviews-v1")
    await kubectl.apply(
        service_entry("reviews", REVIEWS, selector={"app": "reviews"}),
        workload_entry("reviews-v1", v1.host, {"app": "reviews", "version": "v1"}, ports={"http-80": v1.port}),
        destination_rule("reviews", REVIEWS, subsets=[{"name": "v1", "labels": {"version": "v1"}}]),
        reviews_vs("v3"))
    client = await harness.envoy("client", server.xds, workload="client")
    proxy = f"http://{client.listen_host}:15001/"

    async def answer() -> str:
        status, body, _ = await harness.get(proxy, host=REVIEWS)
        return f"{status}:{body.get('backend', '')}"

    # The data plane only shows a 503 ...
    async def unavailable() -> bool:
        return (await answer()).startswith("503")

    await wait_until(unavailable, what="the route to the missing subset answers 503")

    # ... meshplane analyze names the cause with Istio's code and exits 79.
    res = await meshplane("analyze", "--server", server.url)
    assert res.returncode == 79, res.stdout + res.stderr
    assert MISSING in res.stdout.splitlines(), res.stdout
    assert "Analyzers found issues when analyzing namespace: default." in res.stderr
    res = await meshplane("analyze", "--server", server.url, "-o", "json")
    items = json.loads(res.stdout)
    assert [(i["code"], i["name"], i["resource"]) for i in items] == [
        ("IST0101", "ReferencedResourceNotFound", {"kind": "VirtualService", "namespace": "default",
                                                   "name": "reviews"})]

    # ... and so does the object's status, for the generation it refers to.
    async def reported() -> bool:
        st = (await kubectl.get("virtualservice/reviews")).get("status") or {}
        return any(m.get("type", {}).get("code") == "IST0101" for m in st.get("validationMessages") or [])

    await wait_until(reported, timeout=30, what="status.validationMessages names IST0101")
    vs = await kubectl.get("vs/reviews")
    assert vs["status"]["validationMessages"] == [{
        "type": {"code": "IST0101", "name": "ReferencedResourceNotFound"}, "level": "ERROR",
        "description": f'Referenced host+subset in destinationrule not found: "{REVIEWS}+v3"'}]
    (cond,) = [c for c in vs["status"]["conditions"] if c["type"] == "Reconciled"]
    assert (cond["status"], cond["observedGeneration"]) == ("False", vs["metadata"]["generation"])
    res = await kubectl.run("wait", "--for=condition=Reconciled", "vs/reviews", "--timeout=1s", check=False)
    assert res.returncode != 0, res.stdout

    # A file is judged against the live config before it is applied; nothing is stored.
    bad = tmp_path / "reviews-v9.yaml"
    bad.write_text(yaml.safe_dump(reviews_vs("v9")))
    res = await meshplane("analyze", "--server", server.url, "-f", str(bad))
    assert res.returncode == 79
    assert (f'Error [IST0101] (VirtualService default/reviews {bad}) Referenced host+subset in destinationrule not '
            f'found: "{REVIEWS}+v9"') in res.stdout.splitlines(), res.stdout
    good = tmp_path / "reviews-v1.yaml"
    good.write_text(yaml.safe_dump(reviews_vs("v1")))
    res = await meshplane("analyze", "--server", server.url, "-f", str(good))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"\u2714 No validation issues found when analyzing {good}." in res.stderr
    still = await kubectl.get("vs/reviews")
    assert still["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v3"

    # The fix: kubectl wait returns for the new generation, the message is gone, traffic flows.
    await kubectl.run("apply", "-f", str(good))
    await kubectl.run("wait", "--for=condition=Reconciled", "vs/reviews", "--timeout=30s")
    vs = await kubectl.get("vs/reviews")
    assert vs["metadata"]["generation"] == 2
    assert "validationMessages" not in vs["status"]
    (cond,) = [c for c in vs["status"]["conditions"] if c["type"] == "Reconciled"]
    assert (cond["status"], cond["observedGeneration"], cond["reason"]) == ("True", 2, "Reconciled")
    assert await answer() == "200:reviews-v1"
    res = await meshplane("analyze", "--server", server.url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "\u2714 No validation issues found when analyzing namespace: default." in res.stderr

    # Status writes moved no generation and asked for no push: the proxy's push count stays put.
    async def pushes() -> int:
        session = await harness.http()
        async with session.get(f"{server.url}/management/v1/proxies") as r:
            (item,) = (await r.json())["items"]
            return int(item["pushes"])

    settled = await pushes()
    await asyncio.sleep(1.5)  # several of the writer's settle periods
    assert await pushes() == settled
    assert (await kubectl.get("vs/reviews"))["metadata"]["generation"] == 2
    dr = await kubectl.get("destinationrule/reviews")
    assert dr["metadata"]["generation"] == 1 and dr["status"]["conditions"][0]["status"] == "True"
