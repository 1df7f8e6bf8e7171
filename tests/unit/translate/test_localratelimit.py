"""ASMLocalRateLimiter as patches (``translate.localratelimit``): the filter once per listener port before the
router, a bucket on the routes each rule matches (gateway: host, port, route name; sidecar: the inbound port),
overrides as descriptors; the result passes ``envoy --mode validate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _translate_helpers import (
    bookinfo_file,
    bookinfo_registry,
    context,
    envoy_validate,
    gateway,
    hcm_of,
    listeners,
    sidecar,
)
from _translate_helpers import routes as rds
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl

from meshplane.translate import PushContext

FILTER = "envoy.filters.http.local_ratelimit"
REVIEWS = sidecar("reviews", "v1", inbound="http:9080")


def limiter(name: str, *rules: dict[str, Any], gateway: bool = False, selector: dict[str, str] | None = None,
            ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "istio.alibabacloud.com/v1", "kind": "ASMLocalRateLimiter",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"workloadSelector": {"labels": selector or {"app": "reviews"}}, "isGateway": gateway,
                     "configs": list(rules)}}


def rule(port: int, quota: int = 5, host: str = "*", route: str | None = None, **limit: Any) -> dict[str, Any]:
    vh: dict[str, Any] = {"name": host, "port": port}
    if route is not None:
        vh["route"] = {"name_match": route}
    return {"match": {"vhost": vh}, "limit": {"fill_interval": {"seconds": 1}, "quota": quota, **limit}}


def ctx_with(objs: list[dict[str, Any]]) -> PushContext:
    return context([*bookinfo_registry(), *objs])


def _bucket(any_cfg: Any) -> lrl.LocalRateLimit:
    cfg = lrl.LocalRateLimit()
    assert any_cfg.Unpack(cfg)
    return cfg


def test_sidecar_inbound_port_gets_the_filter_and_a_bucket_per_route() -> None:
    overrides = [{"request_match": {"header_match": [{"name": "x-user", "exact_match": "vip"}]},
                  "limit": {"fill_interval": {"seconds": 2}, "quota": 1}}]
    ctx = ctx_with([limiter("rl", {**rule(9080, quota=7, response_header_to_add={"x-a": "b"}),
                                   "limit_overrides": overrides})])
    lst = listeners(REVIEWS, ctx)[f"inbound_{REVIEWS.listen_address}_9080"]
    h = hcm_of(lst.filter_chains[0])
    assert h is not None
    names = [f.name for f in h.http_filters]
    assert names.count(FILTER) == 1 and names.index(FILTER) == names.index("envoy.filters.http.router") - 1
    (vh,) = h.route_config.virtual_hosts
    cfg = _bucket(vh.routes[0].typed_per_filter_config[FILTER])
    assert cfg.token_bucket.max_tokens == 7 and cfg.token_bucket.tokens_per_fill.value == 7
    assert cfg.filter_enforced.default_value.numerator == 100
    assert {h.header.key: h.header.value for h in cfg.response_headers_to_add} == {
        "x-local-rate-limit": "true", "x-a": "b"}
    (d,) = cfg.descriptors
    assert d.token_bucket.max_tokens == 1 and [(e.key, e.value) for e in d.entries] == [("override_headers", "0")]
    assert cfg.rate_limits[0].actions[0].header_value_match.headers[0].string_match.exact == "vip"
    assert cfg.always_consume_default_token_bucket.value is False
    # Outbound is untouched; another workload, or a gateway limiter, does not apply to the sidecar.
    out = hcm_of(listeners(REVIEWS, ctx)[f"{REVIEWS.listen_address}_15001"].filter_chains[0])
    assert out is not None and FILTER not in [f.name for f in out.http_filters]
    other = ctx_with([limiter("rl", rule(9080), selector={"app": "ratings"}),
                      limiter("gw", rule(9080), gateway=True)])
    inbound = hcm_of(listeners(REVIEWS, other)[f"inbound_{REVIEWS.listen_address}_9080"].filter_chains[0])
    assert inbound is not None and FILTER not in [f.name for f in inbound.http_filters]


def test_gateway_rule_limits_the_named_host_and_route_only() -> None:
    gw = gateway({"istio": "ingressgateway"}, ns="default")
    base = [*bookinfo_file("bookinfo-gateway.yaml")]
    before = rds(gw, ctx_with(base))
    route_names = [r.name for rc in before for vh in rc.virtual_hosts for r in vh.routes]
    assert route_names, "the bookinfo gateway has routes"
    target = route_names[0]
    ctx = ctx_with([*base, limiter("gw", rule(80, quota=3, route=target), rule(80, host="nope.example"),
                                   gateway=True, selector={"istio": "ingressgateway"})])
    limited = []
    for rc in rds(gw, ctx):
        for vh in rc.virtual_hosts:
            for r in vh.routes:
                if FILTER in r.typed_per_filter_config:
                    bucket = _bucket(r.typed_per_filter_config[FILTER]).token_bucket
                    limited.append((vh.name, r.name, bucket.max_tokens))
    assert limited == [("*:80", target, 3)]
    filters = [f.name for lst in listeners(gw, ctx).values() for fc in lst.filter_chains
               if (h := hcm_of(fc)) is not None for f in h.http_filters]
    assert filters.count(FILTER) == 1


@pytest.mark.envoy
def test_limited_config_validates(tmp_path: Path) -> None:
    ctx = ctx_with([limiter("rl", rule(9080, custom_response_body="slow", status=503))])
    envoy_validate(REVIEWS, ctx, tmp_path)
