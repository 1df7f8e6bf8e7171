"""ASMLocalRateLimiter on an ingress gateway (``isGateway: true``), in the form of ASM's gateway example: a real
gateway Envoy (``istio: ingressgateway``) in front of httpbin limits the VirtualService route a rule names, for its
host and Gateway port, and leaves the other routes and hosts alone.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_objects import service_entry, workload_entry
from envoy_harness import Harness, free_port, wait_until

from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate
from meshplane.model.resources import GATEWAYS, LOCAL_RATE_LIMITERS, SERVICE_ENTRIES, VIRTUAL_SERVICES, WORKLOAD_ENTRIES
from meshplane.store import MemoryStore
from meshplane.xds import SyncState
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy

GATEWAY = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
           "metadata": {"name": "httpbin-gateway", "namespace": "foo"},
           "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
               {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}}
DEST = {"destination": {"host": "httpbin.foo.svc.cluster.local", "port": {"number": 8000}}}
VS = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
      "metadata": {"name": "httpbin", "namespace": "foo"},
      "spec": {"hosts": ["www.example1.com", "www.example2.com"], "gateways": ["httpbin-gateway"], "http": [
          {"name": "test1", "match": [{"uri": {"prefix": "/limited"}}], "route": [DEST]},
          {"name": "open", "route": [DEST]}]}}
LIMITER = {"apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "ASMLocalRateLimiter",
           "metadata": {"name": "for-api-test", "namespace": "istio-system"},
           "spec": {"workloadSelector": {"labels": {"istio": "ingressgateway"}}, "isGateway": True, "configs": [
               {"match": {"vhost": {"name": "www.example1.com", "port": 80, "route": {"name_match": "test1"}}},
                "limit": {"fill_interval": {"seconds": 60}, "quota": 2}}]}}


async def test_gateway_limits_the_named_route_of_the_named_host(store: MemoryStore, harness: Harness,
                                                                 xds: Any) -> None:
    info = default_registry().by_kind("istio.alibabacloud.com", "ASMLocalRateLimiter")
    assert info is not None and validate(info, LIMITER) == []
    server, address = await xds(DefaultTranslator())
    httpbin = await harness.backend("httpbin")
    await store.create(SERVICE_ENTRIES, service_entry("httpbin", "httpbin.foo.svc.cluster.local", port=8000,
                                                      namespace="foo", selector={"app": "httpbin"}), actor="test")
    await store.create(WORKLOAD_ENTRIES, workload_entry("httpbin", httpbin.host, {"app": "httpbin"},
                                                        ports={"http-8000": httpbin.port}, namespace="foo"),
                       actor="test")
    port = free_port("127.0.0.1")
    gw = await harness.envoy("ingressgateway", address, namespace="istio-system", workload="istio-ingressgateway",
                             router=True, metadata={"LABELS": {"istio": "ingressgateway"},
                                                    "GATEWAY_PORTS": {"80": port}})
    await store.create(GATEWAYS, GATEWAY, actor="test")
    await store.create(VIRTUAL_SERVICES, VS, actor="test")

    async def get(path: str, host: str) -> tuple[int, Any]:
        # A new connection each: one kept alive from before the limit stays on the listener's old filter chain.
        status, _, headers = await harness.get(f"http://{gw.listen_host}:{port}{path}", host=host,
                                               headers={"connection": "close"})
        return status, headers

    async def up() -> bool:
        return (await get("/open", "www.example1.com"))[0] == 200

    await server.wait_idle()
    await wait_until(up, what="the gateway routes")
    await store.create(LOCAL_RATE_LIMITERS, LIMITER, actor="test")
    await server.wait_idle()

    async def has_limit() -> bool:
        st = [s for s in server.proxy_status() if s.node_id == gw.node_id]
        dump = await gw.config_dump()
        return bool(st) and st[0].state is SyncState.SYNCED and "max_tokens" in str(dump)  # the route's bucket

    await wait_until(has_limit, what="the gateway has the limit")
    got = [await get("/limited", "www.example1.com") for _ in range(3)]
    assert [s for s, _ in got] == [200, 200, 429]
    assert got[2][1].get("x-local-rate-limit") == "true"
    assert [(await get("/open", "www.example1.com"))[0] for _ in range(3)] == [200] * 3, "another route"
    assert [(await get("/limited", "www.example2.com"))[0] for _ in range(3)] == [200] * 3, "another host"
