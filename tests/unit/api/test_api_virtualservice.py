"""VirtualService semantic rules: each has a failing case (exact field and reason) and a passing one."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from _api_helpers import assert_cause, causes, ok


def route(host: str = "reviews", **extra: Any) -> dict[str, Any]:
    return {"destination": {"host": host, **extra.pop("dest", {})}, **extra}


def vs(*http: dict[str, Any], hosts: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"hosts": ["reviews"] if hosts is None else hosts, **spec}
    if http:
        body["http"] = list(http)
    return body


def h(**extra: Any) -> dict[str, Any]:
    """An http route with one destination plus ``extra``."""
    return {"route": [route()], **extra}


FAILING: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("host-invalid", vs(h(), hosts=["bad_host"]), "spec.hosts[0]", "FieldValueInvalid", "label 'bad_host' invalid"),
    ("host-wildcard-mesh", vs(h(), hosts=["*"]), "spec.hosts[0]", "FieldValueInvalid",
     "not allowed for virtual services bound to the mesh gateway"),
    ("host-duplicate", vs(h(), hosts=["a.example.com", "*.example.com"]), "spec.hosts[1]", "FieldValueDuplicate",
     '"*.example.com"'),
    ("no-routes", vs(), "spec.http", "FieldValueRequired", "http, tcp or tls must be provided"),
    ("gateway-name", vs(h(), gateways=["ns/Bad_Gw"]), "spec.gateways[0]", "FieldValueInvalid",
     "invalid value for gateway name"),
    ("gateway-empty-ns", vs(h(), gateways=["/gw"]), "spec.gateways[0]", "FieldValueInvalid", "cannot be empty"),
    ("delegate-with-gateways", vs(h(), hosts=[], gateways=["gw"]), "spec.gateways", "FieldValueForbidden",
     "delegate"),
    ("delegate-with-tcp", vs(h(), hosts=[], tcp=[{"route": [route()]}]), "spec.tcp", "FieldValueForbidden",
     "delegate"),
    ("weights-not-100", vs({"route": [route(dest={"subset": "v1"}, weight=80),
                                      route(dest={"subset": "v2"}, weight=10)]}),
     "spec.http[0].route", "FieldValueInvalid", "total destination weight 90 != 100"),
    ("weights-missing", vs({"route": [route(dest={"subset": "v1"}), route(dest={"subset": "v2"})]}),
     "spec.http[0].route", "FieldValueInvalid", "!= 100"),
    ("single-weight-50", vs({"route": [route(weight=50)]}), "spec.http[0].route[0].weight", "FieldValueInvalid",
     "single destination"),
    ("weight-negative", vs({"route": [route(weight=-10), route(weight=110)]}), "spec.http[0].route[0].weight",
     "FieldValueInvalid", "greater than or equal to 0"),
    ("destination-star", vs({"route": [route("*")]}), "spec.http[0].route[0].destination.host",
     "FieldValueInvalid", "invalid destination host"),
    ("destination-subset", vs({"route": [route(dest={"subset": "V_1"})]}),
     "spec.http[0].route[0].destination.subset", "FieldValueInvalid", "RFC 1123 label"),
    ("destination-port", vs({"route": [route(dest={"port": {"number": 70000}})]}),
     "spec.http[0].route[0].destination.port.number", "FieldValueInvalid", "1..65535"),
    ("no-action", vs({"match": [{"uri": {"prefix": "/"}}]}), "spec.http[0].route", "FieldValueRequired",
     "one of route, redirect, directResponse or delegate"),
    ("route-and-redirect", vs(h(redirect={"uri": "/x"})), "spec.http[0].redirect", "FieldValueForbidden",
     "together with route"),
    ("route-and-direct", vs(h(directResponse={"status": 200})), "spec.http[0].directResponse",
     "FieldValueForbidden", "together with route"),
    ("route-and-delegate", vs(h(delegate={"name": "d"})), "spec.http[0].delegate", "FieldValueForbidden",
     "together with route"),
    ("rewrite-with-redirect", vs({"redirect": {"uri": "/x"}, "rewrite": {"uri": "/y"}}), "spec.http[0].rewrite",
     "FieldValueForbidden", "redirect"),
    ("fault-with-redirect", vs({"redirect": {"uri": "/x"}, "fault": {"abort": {"httpStatus": 500}}}),
     "spec.http[0].fault", "FieldValueForbidden", "redirect"),
    ("delegate-in-delegate", vs({"delegate": {"name": "d"}}, hosts=[]), "spec.http[0].delegate",
     "FieldValueForbidden", "cannot delegate again"),
    ("delegate-name", vs({"delegate": {"namespace": "x"}}), "spec.http[0].delegate.name", "FieldValueRequired", ""),
    ("match-two-kinds", vs(h(match=[{"uri": {"exact": "/a", "prefix": "/a"}}])), "spec.http[0].match[0].uri",
     "FieldValueInvalid", "exactly one of exact, prefix or regex"),
    ("match-empty-uri", vs(h(match=[{"uri": {}}])), "spec.http[0].match[0].uri", "FieldValueRequired",
     "one of exact, prefix or regex"),
    ("match-regex-lookahead", vs(h(match=[{"uri": {"regex": "/(?=api)"}}])), "spec.http[0].match[0].uri.regex",
     "FieldValueInvalid", "RE2"),
    ("match-regex-broken", vs(h(match=[{"headers": {"x-user": {"regex": "(jason"}}}])),
     "spec.http[0].match[0].headers[x-user].regex", "FieldValueInvalid", "error parsing regexp"),
    ("match-query-regex", vs(h(match=[{"queryParams": {"q": {"regex": r"(a)\1"}}}])),
     "spec.http[0].match[0].queryParams[q].regex", "FieldValueInvalid", "backreferences"),
    ("match-header-name", vs(h(match=[{"headers": {"bad header": {"exact": "x"}}}])),
     "spec.http[0].match[0].headers[bad header]", "FieldValueInvalid", "valid header name"),
    ("match-jwt-claim-mesh", vs(h(match=[{"headers": {"@request.auth.claims.group": {"exact": "x"}}}])),
     "spec.http[0].match[0].headers[@request.auth.claims.group]", "FieldValueInvalid", "only supported for gateways"),
    ("match-port", vs(h(match=[{"port": 70000}])), "spec.http[0].match[0].port", "FieldValueInvalid", "1..65535"),
    ("match-source-ns", vs(h(match=[{"sourceNamespace": "Bad.NS"}])), "spec.http[0].match[0].sourceNamespace",
     "FieldValueInvalid", ""),
    ("timeout-format", vs(h(timeout="5")), "spec.http[0].timeout", "FieldValueInvalid", "valid duration"),
    ("timeout-zero", vs(h(timeout="0s")), "spec.http[0].timeout", "FieldValueInvalid", "greater than 1ms"),
    ("per-try-timeout", vs(h(retries={"attempts": 3, "perTryTimeout": "1x"})), "spec.http[0].retries.perTryTimeout",
     "FieldValueInvalid", "valid duration"),
    ("retries-negative", vs(h(retries={"attempts": -1})), "spec.http[0].retries.attempts", "FieldValueInvalid",
     "negative"),
    ("retries-zero-with-policy", vs(h(retries={"attempts": 0, "retryOn": "5xx"})), "spec.http[0].retries.attempts",
     "FieldValueInvalid", "attempts are set to 0"),
    ("retry-on", vs(h(retries={"attempts": 2, "retryOn": "5xx,sometimes"})), "spec.http[0].retries.retryOn",
     "FieldValueInvalid", "'sometimes' is not a valid retryOn policy"),
    ("fault-empty", vs(h(fault={})), "spec.http[0].fault", "FieldValueRequired", "abort and/or a delay"),
    ("fault-abort-status", vs(h(fault={"abort": {"httpStatus": 600}})), "spec.http[0].fault.abort.httpStatus",
     "FieldValueInvalid", "not in range 200-599"),
    ("fault-abort-percentage", vs(h(fault={"abort": {"httpStatus": 500, "percentage": {"value": 101}}})),
     "spec.http[0].fault.abort.percentage.value", "FieldValueInvalid", "[0.0001, 100]"),
    ("fault-abort-percent", vs(h(fault={"abort": {"httpStatus": 500, "percent": 150}})),
     "spec.http[0].fault.abort.percent", "FieldValueInvalid", "0..100"),
    ("fault-abort-two", vs(h(fault={"abort": {"httpStatus": 500, "grpcStatus": "UNAVAILABLE"}})),
     "spec.http[0].fault.abort", "FieldValueInvalid", "only one of"),
    ("fault-abort-grpc", vs(h(fault={"abort": {"grpcStatus": "BROKEN"}})), "spec.http[0].fault.abort.grpcStatus",
     "FieldValueNotSupported", ""),
    ("fault-abort-none", vs(h(fault={"abort": {"percentage": {"value": 10}}})),
     "spec.http[0].fault.abort.httpStatus", "FieldValueRequired", ""),
    ("fault-delay-duration", vs(h(fault={"delay": {"fixedDelay": "7", "percentage": {"value": 1}}})),
     "spec.http[0].fault.delay.fixedDelay", "FieldValueInvalid", "valid duration"),
    ("fault-delay-missing", vs(h(fault={"delay": {"percentage": {"value": 1}}})),
     "spec.http[0].fault.delay.fixedDelay", "FieldValueRequired", ""),
    ("mirror-percentage", vs(h(mirror={"host": "shadow"}, mirrorPercentage={"value": 120})),
     "spec.http[0].mirrorPercentage.value", "FieldValueInvalid", "[0.0001, 100]"),
    ("mirror-percent-old", vs(h(mirror={"host": "shadow"}, mirror_percent=150)), "spec.http[0].mirror_percent",
     "FieldValueInvalid", "0..100"),
    ("mirror-host", vs(h(mirror={"host": "bad host"})), "spec.http[0].mirror.host", "FieldValueInvalid", ""),
    ("mirrors-percentage", vs(h(mirrors=[{"destination": {"host": "s"}, "percentage": {"value": -1}}])),
     "spec.http[0].mirrors[0].percentage.value", "FieldValueInvalid", ""),
    ("redirect-empty", vs({"redirect": {"redirectCode": 301}}), "spec.http[0].redirect", "FieldValueRequired",
     "redirect must specify"),
    ("redirect-code", vs({"redirect": {"uri": "/x", "redirectCode": 200}}), "spec.http[0].redirect.redirectCode",
     "FieldValueInvalid", "must be 3xx"),
    ("redirect-scheme", vs({"redirect": {"scheme": "ftp"}}), "spec.http[0].redirect.scheme",
     "FieldValueNotSupported", '"http", "https"'),
    ("direct-status", vs({"directResponse": {"status": 100}}), "spec.http[0].directResponse.status",
     "FieldValueInvalid", "200-599"),
    ("rewrite-both", vs(h(rewrite={"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}})),
     "spec.http[0].rewrite", "FieldValueInvalid", "only contain one of uri or uriRegexRewrite"),
    ("rewrite-empty", vs(h(rewrite={})), "spec.http[0].rewrite", "FieldValueRequired", "at least one of"),
    ("rewrite-regex", vs(h(rewrite={"uriRegexRewrite": {"match": "(?!x)", "rewrite": "/"}})),
     "spec.http[0].rewrite.uriRegexRewrite.match", "FieldValueInvalid", "RE2"),
    ("cors-method", vs(h(corsPolicy={"allowMethods": ["GET", "FETCH"]})), "spec.http[0].corsPolicy.allowMethods[1]",
     "FieldValueNotSupported", ""),
    ("cors-origin", vs(h(corsPolicy={"allowOrigins": [{"exact": ""}]})),
     "spec.http[0].corsPolicy.allowOrigins[0].exact", "FieldValueInvalid", "may not be empty"),
    ("cors-origin-regex", vs(h(corsPolicy={"allowOrigins": [{"regex": "(?<=x)"}]})),
     "spec.http[0].corsPolicy.allowOrigins[0].regex", "FieldValueInvalid", "RE2"),
    ("cors-header", vs(h(corsPolicy={"allowHeaders": ["x y"]})), "spec.http[0].corsPolicy.allowHeaders[0]",
     "FieldValueInvalid", ""),
    ("cors-max-age", vs(h(corsPolicy={"maxAge": "1.5s"})), "spec.http[0].corsPolicy.maxAge", "FieldValueInvalid",
     "seconds precision"),
    ("header-set-pseudo", vs(h(headers={"request": {"set": {":path": "/x"}}})),
     "spec.http[0].headers.request.set[:path]", "FieldValueInvalid", 'cannot have ":" prefix'),
    ("header-remove-host", vs(h(headers={"response": {"remove": ["Host"]}})),
     "spec.http[0].headers.response.remove[0]", "FieldValueInvalid", "Host"),
    ("header-value", vs({"route": [route(headers={"request": {"add": {"x": "50%"}}})]}),
     "spec.http[0].route[0].headers.request.add[x]", "FieldValueInvalid", "'%'"),
    ("tcp-route-missing", vs(tcp=[{"match": [{"port": 3306}]}]), "spec.tcp[0].route", "FieldValueRequired", ""),
    ("tcp-weights", vs(tcp=[{"route": [route(weight=50), route(dest={"subset": "b"}, weight=40)]}]),
     "spec.tcp[0].route", "FieldValueInvalid", "!= 100"),
    ("tcp-subnet", vs(tcp=[{"match": [{"destinationSubnets": ["10.0.0.0/40"]}], "route": [route()]}]),
     "spec.tcp[0].match[0].destinationSubnets[0]", "FieldValueInvalid", "CIDR"),
    ("tls-sni-missing", vs(tls=[{"match": [{"sniHosts": []}], "route": [route()]}]),
     "spec.tls[0].match[0].sniHosts", "FieldValueRequired", ""),
    ("tls-sni-foreign", vs(tls=[{"match": [{"sniHosts": ["other.com"]}], "route": [route()]}], hosts=["*.example.com"]),
     "spec.tls[0].match[0].sniHosts[0]", "FieldValueInvalid", "not a compatible subset"),
    ("tls-weights", vs(tls=[{"match": [{"sniHosts": ["reviews"]}], "route": [route(weight=20), route(weight=20)]}]),
     "spec.tls[0].route", "FieldValueInvalid", "!= 100"),
    ("export-to", vs(h(), exportTo=["*", "ns1"]), "spec.exportTo", "FieldValueInvalid", "public"),
    ("export-to-dup", vs(h(), exportTo=[".", "default"]), "spec.exportTo[1]", "FieldValueDuplicate", ""),
]


@pytest.mark.parametrize(("spec", "field", "reason", "text"), [c[1:] for c in FAILING], ids=[c[0] for c in FAILING])
def test_virtual_service_rule_fails(spec: dict[str, Any], field: str, reason: str, text: str) -> None:
    assert_cause(causes("VirtualService", spec), field, reason, text)


PASSING: list[tuple[str, dict[str, Any]]] = [
    ("single-weight-omitted", vs(h())),
    ("single-weight-100", vs({"route": [route(weight=100)]})),
    ("single-weight-0", vs({"route": [route(weight=0)]})),
    ("split-80-20", vs({"route": [route(dest={"subset": "v1"}, weight=80), route(dest={"subset": "v2"}, weight=20)]})),
    ("three-way-split", vs({"route": [route(weight=34), route(weight=33), route(weight=33)]})),
    ("gateway-star-host", vs(h(), hosts=["*"], gateways=["istio-system/ingress", "bookinfo-gateway"])),
    ("fqdn-and-wildcard-hosts", vs(h(), hosts=["reviews.default.svc.cluster.local", "*.bookinfo.com"])),
    ("ip-host", vs(h(), hosts=["10.1.2.3"])),
    ("delegate-vs", vs(h(match=[{"uri": {"prefix": "/api"}}]), hosts=[])),
    ("root-delegate", vs({"match": [{"uri": {"prefix": "/r"}}], "delegate": {"name": "d", "namespace": "ns"}})),
    ("redirect", vs({"redirect": {"uri": "/v2", "authority": "new.example.com", "redirectCode": 308}})),
    ("direct-response", vs({"directResponse": {"status": 503, "body": {"string": "unavailable"}}})),
    ("matches", vs(h(match=[{"uri": {"regex": "^/api/v[0-9]+/.*$"}, "headers": {"end-user": {"exact": "jason"},
                                                                              "x-present": {}},
                             "queryParams": {"debug": {"exact": "1"}}, "withoutHeaders": {"x-skip": {}},
                             "port": 9080, "sourceLabels": {"app": "productpage"}, "ignoreUriCase": True}]))),
    ("go-durations", vs(h(timeout="1.5s", retries={"attempts": 3, "perTryTimeout": "100ms",
                                                    "retryOn": "gateway-error,connect-failure,503"}))),
    ("fault-both", vs(h(fault={"abort": {"httpStatus": 503, "percentage": {"value": 0.5}},
                               "delay": {"fixedDelay": "7s", "percentage": {"value": 100}}}))),
    ("fault-grpc", vs(h(fault={"abort": {"grpcStatus": "UNAVAILABLE"}}))),
    ("mirror", vs(h(mirror={"host": "reviews", "subset": "v2"}, mirrorPercentage={"value": 50}))),
    ("mirrors", vs(h(mirrors=[{"destination": {"host": "shadow"}, "percentage": {"value": 10}}]))),
    ("cors", vs(h(corsPolicy={"allowOrigins": [{"exact": "https://example.com"}, {"regex": ".*\\.example\\.com"}],
                              "allowMethods": ["GET", "POST"], "allowHeaders": ["*", "x-custom"],
                              "maxAge": "24h", "allowCredentials": True}))),
    ("rewrite", vs(h(rewrite={"uri": "/", "authority": "backend"}))),
    ("regex-rewrite", vs(h(rewrite={"uriRegexRewrite": {"match": "^/service/([^/]+)(/.*)$", "rewrite": "\\2"}}))),
    ("header-ops", vs(h(headers={"request": {"set": {"x-env": "%HOSTNAME%", ":authority": "a"},
                                             "remove": ["x-debug"]}, "response": {"add": {"x-served-by": "mesh"}}}))),
    ("tcp", vs(tcp=[{"match": [{"port": 27017, "destinationSubnets": ["10.0.0.0/8"]}],
                     "route": [route("mongo", dest={"port": {"number": 27017}})]}], hosts=["mongo"])),
    ("tls", vs(tls=[{"match": [{"port": 443, "sniHosts": ["login.bookinfo.com"]}], "route": [route("login")]}],
               hosts=["*.bookinfo.com"], gateways=["gw"])),
    ("export-to", vs(h(), exportTo=[".", "istio-system"])),
]


@pytest.mark.parametrize("spec", [c[1] for c in PASSING], ids=[c[0] for c in PASSING])
def test_virtual_service_rule_passes(spec: dict[str, Any]) -> None:
    ok("VirtualService", spec)


def test_deprecated_fields_warn() -> None:
    warnings = ok("VirtualService", vs(h(fault={"abort": {"httpStatus": 500, "percent": 100}}, mirror={"host": "s"},
                                         mirrorPercent=10)))
    assert 'spec.http[0].fault.abort.percent: using deprecated field "percent"; use "percentage"' in warnings
    assert any('"mirrorPercent"; use "mirrorPercentage"' in w for w in warnings)


def test_legacy_gateway_name_warns() -> None:
    warnings = ok("VirtualService", vs(h(), gateways=["bookinfo-gateway.default"]))
    assert any("prefer the <namespace>/<name> format" in w and '"default/bookinfo-gateway"' in w for w in warnings)


def test_every_http_route_is_checked() -> None:
    spec = vs(h(), h(timeout="x"), h(timeout="y"))
    fields = [c.field for c in causes("VirtualService", spec)]
    assert fields == ["spec.http[1].timeout", "spec.http[2].timeout"]


def test_the_object_is_not_changed_by_semantic_validation() -> None:
    spec = vs(h(fault={"abort": {"httpStatus": 500, "percent": 100}}))
    before = copy.deepcopy(spec)
    ok("VirtualService", spec)
    assert spec == before
