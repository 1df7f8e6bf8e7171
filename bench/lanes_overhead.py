"""Request-path cost of traffic lanes and TrafficLabel context mapping, against plain routing, in one real Envoy.

Why this shape: the question is what each mechanism adds per request, so everything else is held equal. One Envoy
(``--concurrency 1``) has one listener per variant, all forwarding to the same minimal keep-alive responder:

* ``plain``: one route to one cluster (what a sidecar does without lanes);
* ``lanes``: the lanes compiler's header-matched routes, the matched one going to an aggregate cluster whose first
  member is empty (the permissive-mode fallback taken: the most work the lane route can cause);
* ``label``: ``lanes`` plus meshplane's generated outbound TrafficLabel script ($getExternalInboundRequestHeader
  looked up in a tmpfs file that exists, then $getLabel), which also clears the route cache;
* ``record``: the inbound recorder script (a tmpfs file written on the request and removed on the response);
* ``httpcall``: the rejected alternative for the lookup: a Lua ``httpCall`` to a local service (the same
  responder) per request, which is what an agent-hosted context service would cost at least.

The client is sequential on one keep-alive connection per listener (``http.client``), variants interleaved in
rounds so drift hits all alike; reported: mean and p50/p99 latency, and the difference to ``plain`` in µs.

    python bench/lanes_overhead.py               # 2,000 requests per variant
    python bench/lanes_overhead.py -n 5000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from meshplane.model.proxy import Locality, proxy_from_node
from meshplane.model.spec import decode_object
from meshplane.translate.trafficlabel import context_prefix, inbound_script, outbound_script

HOST = "127.0.0.1"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
VARIANTS = ("plain", "lanes", "label", "record", "httpcall")


class _Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * n)


def start_responder() -> int:
    ready: list[int] = []
    ev = threading.Event()

    def run() -> None:
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(loop.create_server(_Responder, HOST, 0))
        ready.append(server.sockets[0].getsockname()[1])
        ev.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ev.wait()
    return ready[0]


def _cluster(name: str, port: int | None) -> dict[str, Any]:
    eps = [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": HOST,
                                                                           "port_value": port}}}}]}] if port else []
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": eps}}


def _lanes_routes() -> list[dict[str, Any]]:
    routes = []
    for lane in ("v2", "v3"):
        routes.append({"match": {"prefix": "/", "headers": [{"name": "x-asm-prefer-tag",
                                                            "string_match": {"exact": lane}}]},
                       "route": {"cluster": "aggregate"}})
    routes.append({"match": {"prefix": "/"}, "route": {"cluster": "backend"}})
    return routes


def config(backend: int, admin: int, ports: dict[str, int], scripts: dict[str, str]) -> dict[str, Any]:
    lua = {"name": "envoy.filters.http.lua",
           "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}}
    router = {"name": "envoy.filters.http.router",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    listeners = []
    for variant, port in ports.items():
        routes = [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}] if variant in (
            "plain", "record", "httpcall") else _lanes_routes()
        vh: dict[str, Any] = {"name": variant, "domains": ["*"], "routes": routes}
        if variant in scripts:
            vh["typed_per_filter_config"] = {"envoy.filters.http.lua": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                "source_code": {"inline_string": scripts[variant]}}}
        hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                        "HttpConnectionManager",
               "stat_prefix": variant, "route_config": {"name": variant, "virtual_hosts": [vh]},
               "http_filters": [lua, router]}
        listeners.append({"name": variant, "address": {"socket_address": {"address": HOST, "port_value": port}},
                          "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                          "typed_config": hcm}]}]})
    aggregate = {"name": "aggregate", "connect_timeout": "1s", "lb_policy": "CLUSTER_PROVIDED",
                 "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                     "clusters": ["backend_v2", "backend"]}}}
    return {"admin": {"address": {"socket_address": {"address": HOST, "port_value": admin}}},
            "static_resources": {"listeners": listeners,
                                 "clusters": [_cluster("backend", backend), _cluster("backend_v2", None),
                                              _cluster("context", backend), aggregate]}}


HTTPCALL = """
function envoy_on_request(handle)
  local h, body = handle:httpCall("context", {[":method"] = "GET", [":path"] = "/ctx/" ..
    (handle:headers():get("x-request-id") or ""), [":authority"] = "context"}, "", 1000)
  if body then handle:headers():replace("x-app-name", body) end
  handle:clearRouteCache()
end
"""


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind((HOST, 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run(n: int) -> dict[str, Any]:
    backend = start_responder()
    *listen, admin = free_ports(len(VARIANTS) + 1)
    ports = dict(zip(VARIANTS, listen, strict=True))
    proxy = proxy_from_node("sidecar~127.0.0.1~mocka-v2.default~default.svc.cluster.local",
                            {"NAMESPACE": "default", "LABELS": {"app": "mocka", "ASM_TRAFFIC_TAG": "v2"},
                             "INSTANCE_IPS": "127.0.0.1"}, Locality("", "", ""))
    label = decode_object("istio.alibabacloud.com", "TrafficLabel", {
        "metadata": {"name": "tl", "namespace": "default"}, "spec": {"rules": [{"labels": [
            {"name": "x-app-name", "valueFrom": ["$getExternalInboundRequestHeader(appname, x-request-id)"]},
            {"name": "x-colour", "valueFrom": ["$getLabel(ASM_TRAFFIC_TAG)"]}]}]}})
    out_script = outbound_script(proxy, [label], [])
    in_script = inbound_script(proxy, [label])
    assert out_script and in_script
    scripts = {"label": out_script, "record": in_script, "httpcall": HTTPCALL}
    # The entry the outbound lookup finds (as the inbound recorder would have written it).
    shm = "/dev/shm/" if os.path.isdir("/dev/shm") else "/tmp/"
    entry = Path(shm + context_prefix(proxy) + "bench-request.appname")
    entry.write_text("shop")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "envoy.yaml"
        cfg.write_text(yaml.safe_dump(config(backend, admin, ports, scripts)))
        proc = subprocess.Popen(["envoy", "-c", str(cfg), "--concurrency", "1", "--disable-hot-restart",
                                 "-l", "error", "--base-id", str(os.getpid() % 60000)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            conns = {v: _connect(p) for v, p in ports.items()}
            headers = {"x-asm-prefer-tag": "v2", "x-request-id": "bench-request", "appname": "shop"}
            lat: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for v in VARIANTS:  # warm up
                for _ in range(200):
                    _get(conns[v], headers)
            rounds = 20
            for _ in range(rounds):
                for v in VARIANTS:
                    c = conns[v]
                    for _ in range(max(1, n // rounds)):
                        t = time.perf_counter()
                        _get(c, headers)
                        lat[v].append((time.perf_counter() - t) * 1e6)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            entry.unlink(missing_ok=True)
    base = statistics.fmean(lat["plain"])
    res: dict[str, Any] = {}
    for v in VARIANTS:
        xs = sorted(lat[v])
        mean = statistics.fmean(xs)
        res[v] = {"n": len(xs), "mean_us": round(mean, 1), "p50_us": round(xs[len(xs) // 2], 1),
                  "p99_us": round(xs[int(len(xs) * 0.99) - 1], 1), "added_us": round(mean - base, 1),
                  "ratio": round(mean / base, 3)}
    return res


def _connect(port: int) -> http.client.HTTPConnection:
    deadline = time.monotonic() + 20
    while True:
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=5)
            c.request("GET", "/")
            c.getresponse().read()
            return c
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _get(c: http.client.HTTPConnection, headers: dict[str, str]) -> None:
    c.request("GET", "/", headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"status {r.status}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=2000, help="requests per variant")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    res = run(a.n)
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    print("| variant | mean µs | p50 µs | p99 µs | added to plain, µs | ratio |")
    print("|---|---|---|---|---|---|")
    for v, r in res.items():
        print(f"| {v} | {r['mean_us']} | {r['p50_us']} | {r['p99_us']} | {r['added_us']} | {r['ratio']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
