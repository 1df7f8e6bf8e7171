"""Three ``meshplane server`` replicas on one etcd: any replica takes writes, every replica serves them, a watch
moves between replicas by resourceVersion, exactly one leads, and a SIGKILLed leader is replaced."""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from meshplane.runtime.etcd import EtcdProcess, start_etcd
from tests.integration.test_http_api import JSON, VS_PATH, call, vs
from tests.support.server import ServerProcess, start_server


@dataclass
class Replicas:
    etcd: EtcdProcess
    servers: list[ServerProcess]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    etcd = start_etcd(root / "etcd")
    servers: list[ServerProcess] = []
    try:
        for i in range(3):
            data = root / f"r{i}"
            data.mkdir()
            servers.append(start_server(data, "--store", etcd.url, "--ca-dir", str(root / "ca"),
                                        "--replica-id", f"r{i}"))
        yield Replicas(etcd, servers)
    finally:
        for server in servers:
            server.stop()
        etcd.stop()


def eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def replica_info(server: ServerProcess) -> dict[str, Any] | None:
    if server.proc.poll() is not None:
        return None
    try:
        status, _, body = call(server.url, "GET", "/management/v1/replica")
    except OSError:
        return None
    return body if status == 200 else None


def test_every_replica_serves_what_any_replica_wrote(replicas: Replicas) -> None:
    a, b, c = replicas.servers
    status, _, created = call(a.url, "POST", VS_PATH, vs("reviews"), JSON)
    assert status == 201, created
    rv = created["metadata"]["resourceVersion"]
    for server in (b, c):
        got = eventually(lambda s=server: (r := call(s.url, "GET", VS_PATH + "/reviews"))[0] == 200 and r[2])
        assert got and got["metadata"]["resourceVersion"] == rv and got["metadata"]["uid"] == created["metadata"]["uid"]
    # An update through b with a's resourceVersion as the precondition: accepted once, then a conflict.
    body = {**created, "spec": {**created["spec"], "gateways": ["mesh"]}}
    status, _, updated = call(b.url, "PUT", VS_PATH + "/reviews", json.dumps(body), JSON)
    assert status == 200 and updated["metadata"]["generation"] == 2
    status, _, _ = call(c.url, "PUT", VS_PATH + "/reviews", json.dumps(body), JSON)
    assert status == 409
    audit = eventually(lambda: [r["verb"] for r in call(c.url, "GET", "/management/v1/audit")[2]["items"]
                                if r["name"] == "reviews"] == ["create", "update"])
    assert audit


def test_a_watch_resumes_on_another_replica_from_its_resource_version(replicas: Replicas) -> None:
    a, b, c = replicas.servers
    _, _, listed = call(a.url, "GET", VS_PATH)
    rv = listed["metadata"]["resourceVersion"]
    call(c.url, "POST", VS_PATH, vs("moved-1"), JSON)  # written while the client "moves" from a to b
    u = urlparse(b.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("GET", f"{VS_PATH}?watch=1&resourceVersion={rv}")
        resp = conn.getresponse()
        assert resp.status == 200
        call(a.url, "POST", VS_PATH, vs("moved-2"), JSON)
        names = []
        while len(names) < 2:
            event = json.loads(resp.readline())
            names.append((event["type"], event["object"]["metadata"]["name"]))
        assert names == [("ADDED", "moved-1"), ("ADDED", "moved-2")]
    finally:
        conn.close()


def test_one_leader_and_a_successor_when_it_is_killed(replicas: Replicas) -> None:
    def leaders() -> list[str]:
        infos = [replica_info(s) for s in replicas.servers]
        return [i["replica"] for i in infos if i is not None and i["leader"]]

    assert eventually(lambda: len(leaders()) == 1)
    assert leaders()
    (first,) = leaders()
    victim = next(s for s in replicas.servers if replica_info(s) and replica_info(s)["replica"] == first)  # type: ignore[index]
    victim.stop(signal.SIGKILL)  # its lease expires (5 s ttl): one of the others takes over
    assert eventually(lambda: len(leaders()) == 1 and leaders()[0] != first, timeout=20), leaders()
    # The survivors keep serving writes.
    alive = [s for s in replicas.servers if s.proc.poll() is None]
    status, _, _ = call(alive[0].url, "POST", VS_PATH, vs("after-failover"), JSON)
    assert status == 201
    assert eventually(lambda: call(alive[1].url, "GET", VS_PATH + "/after-failover")[0] == 200)


def test_etcd_flags_without_an_etcd_store_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    with pytest.raises(RuntimeError, match="exited"):
        start_server(data, "--etcd-cert", str(tmp_path / "c.pem"))
    log = (tmp_path / "d-server.log").read_text()
    assert "--etcd-cacert/--etcd-cert/--etcd-key need --store etcd://" in log
