"""Local rate limiting through real Envoys: Istio's task YAML (an EnvoyFilter with TypedStruct values, unchanged)
and ASM's ASMLocalRateLimiter limit a sidecar's inbound requests with 429 and ``x-local-rate-limit: true``.

One mesh (a ``productpage`` server sidecar on port 9080 and a ``ratings`` client, mTLS) is shared by the steps:
Istio's listener-wide bucket, Istio's per-route bucket, then an ASMLocalRateLimiter with a bucket of its own for
``x-user: vip``. Every object passes admission (``api.validation``) before it is stored. Each step waits until
the productpage proxy has the new config (its config dump), then spends a fresh bucket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy_harness import wait_until
from security_mesh import SecurityMesh

from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate
from meshplane.model.resources import ENVOY_FILTERS, LOCAL_RATE_LIMITERS
from meshplane.store import GroupResource

pytestmark = pytest.mark.envoy

DATA = Path(__file__).resolve().parent.parent / "data" / "ratelimit"
PRODUCTPAGE = "productpage.default.svc.cluster.local:9080"


def _load(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((DATA / name).read_text())
    group, _, version = obj["apiVersion"].partition("/")
    info = default_registry().by_kind(group, obj["kind"])
    assert info is not None and version in info.versions, obj["apiVersion"]
    assert validate(info, obj) == []  # admission accepts it as it is, without a warning
    return obj


async def _route_limit_in_dump(sec: SecurityMesh, marker: str) -> bool:
    dump = await sec.workloads["productpage"].envoy.config_dump()
    return marker in json.dumps(dump)


async def _calls(sec: SecurityMesh, n: int, headers: dict[str, str] | None = None,
                 ) -> list[tuple[int, dict[str, Any], Any]]:
    e = sec.workloads["ratings"].envoy
    out = []
    for _ in range(n):
        out.append(await sec.h.get(f"http://{e.listen_host}:15001/productpage", host=PRODUCTPAGE, headers=headers))
    return out


async def _replace(sec: SecurityMesh, gr: GroupResource, old: tuple[str, str] | None, obj: dict[str, Any]) -> None:
    if old is not None:
        await sec.store.delete(gr, old[0], old[1], actor="test")
    await sec.store.create(gr, obj, actor="test")
    await sec.synced()


async def test_istio_task_and_asm_local_rate_limiter_answer_429(sec: SecurityMesh) -> None:
    await sec.workload("productpage", ports={9080: 9080})
    await sec.workload("ratings", serve=False)
    await sec.synced()
    await sec.eventually("ratings", "/productpage", 200, host=PRODUCTPAGE)

    # Istio's task, the listener-wide bucket: 4 tokens a minute, then 429 with x-local-rate-limit: true.
    await _replace(sec, ENVOY_FILTERS, None, _load("istio-local-ratelimit-listener.yaml"))
    await wait_until(lambda: _route_limit_in_dump(sec, "local_rate_limit_enforced"), what="the listener's bucket")
    got = await _calls(sec, 5)
    assert [s for s, _, _ in got] == [200, 200, 200, 200, 429]
    assert got[4][2].get("x-local-rate-limit") == "true"
    assert got[0][2].get("x-local-rate-limit") is None

    # Istio's task, the bucket on the inbound route inbound|http|9080 (the filter itself has none).
    route = _load("istio-local-ratelimit-route.yaml")
    await _replace(sec, ENVOY_FILTERS, ("istio-system", "filter-local-ratelimit-svc"), route)

    async def route_bucket() -> bool:
        dump = json.dumps(await sec.workloads["productpage"].envoy.config_dump())
        return '"typedPerFilterConfig"' in dump or '"typed_per_filter_config"' in dump

    await wait_until(route_bucket, what="the route's bucket")
    got = await _calls(sec, 5)
    assert [s for s, _, _ in got] == [200, 200, 200, 200, 429]
    assert got[4][2].get("x-local-rate-limit") == "true"

    # ASM's ASMLocalRateLimiter: 2 a minute on port 9080; x-user: vip has a bucket of its own (1 a minute).
    await sec.store.delete(ENVOY_FILTERS, "istio-system", "filter-local-ratelimit-svc", actor="test")
    await _replace(sec, LOCAL_RATE_LIMITERS, None, _load("asm-local-ratelimiter.yaml"))
    await wait_until(lambda: _route_limit_in_dump(sec, "x-limited-by"), what="the ASM limiter's bucket")
    got = await _calls(sec, 3)
    assert [s for s, _, _ in got] == [200, 200, 429]
    limited = got[2]
    assert limited[2].get("x-local-rate-limit") == "true" and limited[2].get("x-limited-by") == "asm"
    assert limited[1] == {"limited": "yes"}  # custom_response_body
    vip = await _calls(sec, 2, headers={"x-user": "vip"})
    assert [s for s, _, _ in vip] == [200, 429], "vip requests spend their own bucket, not the depleted one"

    # Deleting the limiter lifts the limit.
    await sec.store.delete(LOCAL_RATE_LIMITERS, "default", "productpage", actor="test")
    await sec.synced()
    await sec.eventually("ratings", "/productpage", 200, host=PRODUCTPAGE)
