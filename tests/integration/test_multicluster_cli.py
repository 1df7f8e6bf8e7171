"""``meshplane cluster add|list|remove`` through the real HTTP API, with the member-cluster controller running.

The API server, the store and the controller run in this process (the controller is not wired into
``meshplane server`` yet); the member cluster is a fake Kubernetes API server on 127.0.0.1 (no real one can run
here; see test_multicluster_support.py). The CLI runs its real code path (meshplane.client to the API) in a thread.
Also here: WorkloadEntries labelled ``topology.istio.io/cluster`` carry that cluster id (local members).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshplane.api.kinds import default_registry
from meshplane.apiserver.app import ApiServer, ApiServerSettings, serve
from meshplane.cli.main import main
from meshplane.model.config import ConfigSnapshot
from meshplane.multicluster import MEMBER_CLUSTERS
from meshplane.registry import ServiceEntrySource
from meshplane.registry.serviceentry import SERVICE_ENTRIES, WORKLOAD_ENTRIES
from meshplane.store import MemoryStore
from tests.integration.test_multicluster import HOST, Hooks, cond, eps_of, running, until_status
from tests.integration.test_multicluster_support import FakeKubeApi, populate

TOKEN = "cli-token-s3cr3t-123"


@pytest.fixture
async def api_url() -> AsyncIterator[tuple[str, MemoryStore]]:
    store = MemoryStore()
    await store.start()
    api = ApiServer(store, default_registry(), ApiServerSettings(tokens={TOKEN: "admin"}))
    runner = await serve(api.app(), "127.0.0.1", 0)
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", store
    finally:
        await runner.cleanup()
        await store.close()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_cluster_add_list_remove(api_url: tuple[str, MemoryStore], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    url, store = api_url
    conn = ["--server", url, "--token", TOKEN]
    fake = await FakeKubeApi(token="member-token-s3cr3t-xyz").start()
    try:
        populate(fake, cluster="east", region="us-east", zone="us-east-1a", services=["reviews"])
        cfg = tmp_path / "east.kubeconfig"
        cfg.write_text(fake.kubeconfig())
        async with running(store) as (ctl, hooks):
            assert isinstance(hooks, Hooks)
            code, out, _ = await cli(capsys, "cluster", "add", "east", "--kubeconfig", str(cfg), "--network",
                                     "net-1", "--discovery-selector", "kubernetes.io/metadata.name=default", *conn)
            assert code == 0 and "membercluster/east added (kubernetes, network net-1)" in out
            code, out, _ = await cli(capsys, "cluster", "add", "lab", "--local", "--region", "r", "--zone", "z",
                                     "--network", "net-2", *conn)
            assert code == 0
            code, _, err = await cli(capsys, "cluster", "add", "bad", "--local", *conn)
            assert code == 1 and "--region" in err

            await until_status(store, "east", lambda o: cond(o, "Synced").get("status") == "True")
            await until_status(store, "lab", lambda o: cond(o, "Connected").get("status") == "True")
            await hooks.until(lambda s: len(eps_of(s, "east")) == 0, "nothing yet: namespace label missing")

            code, out, _ = await cli(capsys, "cluster", "list", *conn)
            lines = out.splitlines()
            assert lines[0].split() == ["NAME", "NETWORK", "REGION", "ZONE", "CONNECTED", "SYNCED", "ERROR", "AGE"]
            assert lines[1].split()[:7] == ["east", "net-1", "-", "-", "True", "True", "-"]
            assert lines[2].split()[:7] == ["lab", "net-2", "r", "z", "True", "True", "-"]
            code, out, _ = await cli(capsys, "cluster", "list", "-o", "json", *conn)
            items = json.loads(out)["items"]
            assert [i["metadata"]["name"] for i in items] == ["east", "lab"]
            # Credentials are stored but never returned or printed.
            assert "member-token-s3cr3t-xyz" not in out and items[0]["spec"]["kubeconfig"] == "<redacted>"
            req = urllib.request.Request(f"{url}/apis/meshplane.io/v1/memberclusters/east",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=10).read().decode())
            assert "member-token-s3cr3t-xyz" not in body
            raw = store.get(MEMBER_CLUSTERS, "", "east")
            assert raw is not None and "member-token-s3cr3t-xyz" in raw["spec"]["kubeconfig"]

            code, out, _ = await cli(capsys, "cluster", "remove", "east", *conn)
            assert code == 0 and "removed" in out
            assert await asyncio.wait_for(ctl.withdrawn.get(), 30) == "east"
            code, _, err = await cli(capsys, "cluster", "remove", "east", *conn)
            assert code == 1
            assert 'delete MemberCluster east: HTTP 404: memberclusters.meshplane.io "east" not found' in err
    finally:
        await fake.stop()


async def test_cli_finds_the_server_through_its_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         api_url: tuple[str, MemoryStore]) -> None:
    url, _ = api_url
    (tmp_path / "server.json").write_text(json.dumps({"api": url, "token": TOKEN}))
    code, out, _ = await cli(capsys, "cluster", "list", "--data-dir", str(tmp_path))
    assert code == 0 and out.split() == ["NAME", "NETWORK", "REGION", "ZONE", "CONNECTED", "SYNCED", "ERROR", "AGE"]
    code, _, err = await cli(capsys, "cluster", "list", "--data-dir", str(tmp_path / "none"))
    assert code == 2 and "no running server" in err


def test_workload_entries_with_the_cluster_label_carry_that_cluster() -> None:
    se = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
          "metadata": {"namespace": "default", "name": "reviews"},
          "spec": {"hosts": [HOST], "ports": [{"number": 9080, "name": "http"}], "resolution": "STATIC",
                   "location": "MESH_INTERNAL", "workloadSelector": {"labels": {"app": "reviews"}}}}

    def we(name: str, ip: str, labels: dict[str, str]) -> dict[str, object]:
        return {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"namespace": "default", "name": name}, "spec": {"address": ip, "labels": labels}}

    config = ConfigSnapshot.from_json(1, {SERVICE_ENTRIES: (se,), WORKLOAD_ENTRIES: (
        we("a", "127.0.0.10", {"app": "reviews", "topology.istio.io/cluster": "lab-east"}),
        we("b", "127.0.0.11", {"app": "reviews"}))})
    eps = {e.address: e.cluster_id for e in ServiceEntrySource(config, "primary").endpoints()[HOST]}
    assert eps == {"127.0.0.10": "lab-east", "127.0.0.11": "primary"}
