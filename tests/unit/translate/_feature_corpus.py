"""Configs exercising every translated feature at once (besides Bookinfo's task files), for envoy-validate."""

from __future__ import annotations

from typing import Any

from _translate_helpers import NS, fqdn, istio_object, service_entry, workload_entry


def vs(name: str, spec: dict[str, Any], ns: str = NS) -> dict[str, Any]:
    return istio_object("VirtualService", name, ns, spec)


def dr(name: str, spec: dict[str, Any], ns: str = NS) -> dict[str, Any]:
    return istio_object("DestinationRule", name, ns, spec)


def gw(name: str, spec: dict[str, Any], ns: str = "istio-system") -> dict[str, Any]:
    return istio_object("Gateway", name, ns, spec)


def sidecar_cr(name: str, spec: dict[str, Any], ns: str = NS) -> dict[str, Any]:
    return istio_object("Sidecar", name, ns, spec)


def feature_objects(certs: str = "/certs") -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = [
        service_entry("httpbin", selector={"app": "httpbin"},
                      ports=[{"number": 8000, "name": "http", "protocol": "HTTP"},
                             {"number": 8443, "name": "grpc", "protocol": "GRPC"}]),
        workload_entry("httpbin-v1", "127.0.3.1", {"app": "httpbin", "version": "v1"}, sa="httpbin",
                       locality="region1/zone1/sub1"),
        workload_entry("httpbin-v2", "127.0.3.2", {"app": "httpbin", "version": "v2"}, sa="httpbin",
                       locality="region1/zone2/sub1", ports={"http": 18000}),
        service_entry("ext-dns", hosts=["api.example.com"], resolution="DNS", location="MESH_EXTERNAL",
                      ports=[{"number": 443, "name": "tls", "protocol": "TLS"},
                             {"number": 80, "name": "http", "protocol": "HTTP"}]),
        service_entry("ext-lrr", hosts=["lrr.example.com"], resolution="DNS_ROUND_ROBIN", location="MESH_EXTERNAL",
                      ports=[{"number": 80, "name": "http", "protocol": "HTTP"}]),
        service_entry("ext-none", hosts=["*.wild.example.com"], resolution="NONE", location="MESH_EXTERNAL",
                      ports=[{"number": 80, "name": "http", "protocol": "HTTP"}]),
        service_entry("db", hosts=["db.internal"], addresses=["240.240.0.10"],
                      ports=[{"number": 5432, "name": "tcp", "protocol": "TCP"}],
                      endpoints=[{"address": "127.0.4.1", "labels": {"version": "a"}},
                                 {"address": "127.0.4.2", "labels": {"version": "b"}, "weight": 3}]),
        service_entry("tcp-echo", hosts=["tcp-echo.internal"],
                      ports=[{"number": 9000, "name": "tcp", "protocol": "TCP"}],
                      endpoints=[{"address": "127.0.4.3", "labels": {"version": "v1"}},
                                 {"address": "127.0.4.4", "labels": {"version": "v2"}}]),
        dr("httpbin", {
            "host": "httpbin",
            "trafficPolicy": {
                "loadBalancer": {"simple": "ROUND_ROBIN"},
                "connectionPool": {"tcp": {"maxConnections": 100, "connectTimeout": "3s",
                                           "tcpKeepalive": {"time": "7200s", "interval": "75s", "probes": 9}},
                                   "http": {"http1MaxPendingRequests": 10, "http2MaxRequests": 1000,
                                            "maxRequestsPerConnection": 5, "maxRetries": 4, "idleTimeout": "30s"}},
                "outlierDetection": {"consecutive5xxErrors": 5, "consecutiveGatewayErrors": 3, "interval": "10s",
                                     "baseEjectionTime": "30s", "maxEjectionPercent": 50, "minHealthPercent": 20},
                "tls": {"mode": "ISTIO_MUTUAL"},
                "portLevelSettings": [{"port": {"number": 8443}, "loadBalancer": {"simple": "RANDOM"}}],
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"},
                 "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}},
                {"name": "v2", "labels": {"version": "v2"},
                 "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "c", "ttl": "60s"},
                                                                       "maglev": {"tableSize": 65537}}}}},
                {"name": "v3", "labels": {"version": "v3"},
                 "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": True}}}},
                {"name": "v4", "labels": {"version": "v4"},
                 "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpQueryParameterName": "u",
                                                                       "ringHash": {"minimumRingSize": 2048}}}}},
            ],
        }),
        dr("ext-dns", {"host": "api.example.com", "trafficPolicy": {
            "loadBalancer": {"simple": "LEAST_REQUEST"},
            "portLevelSettings": [
                {"port": {"number": 443}, "tls": {"mode": "SIMPLE", "sni": "api.example.com",
                                                  "caCertificates": f"{certs}/ca.pem",
                                                  "subjectAltNames": ["api.example.com"]}},
                {"port": {"number": 80}, "tls": {"mode": "MUTUAL", "clientCertificate": f"{certs}/cert.pem",
                                                 "privateKey": f"{certs}/key.pem",
                                                 "caCertificates": f"{certs}/ca.pem"}},
            ]}}),
        dr("ext-lrr", {"host": "lrr.example.com", "trafficPolicy": {"tls": {"mode": "MUTUAL",
                                                                           "credentialName": "lrr-cred"}}}),
        dr("db", {"host": "db.internal", "trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}},
                  "subsets": [{"name": "a", "labels": {"version": "a"}}, {"name": "b", "labels": {"version": "b"}}]}),
        service_entry("lb", selector={"app": "lb"}),
        workload_entry("lb-1", "127.0.5.1", {"app": "lb"}, locality="region1/zone1/sub1"),
        workload_entry("lb-2", "127.0.5.2", {"app": "lb"}, locality="region2/zone1/sub1"),
        dr("lb", {"host": "lb", "trafficPolicy": {"loadBalancer": {"localityLbSetting": {
            "distribute": [{"from": "region1/*", "to": {"region1/*": 70, "region2/*": 30}}]}}}}),
        dr("tcp-echo", {"host": "tcp-echo.internal",
                        "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                    {"name": "v2", "labels": {"version": "v2"}}]}),
        vs("httpbin", {
            "hosts": ["httpbin"],
            "http": [
                {"name": "delegated", "match": [{"uri": {"prefix": "/team"}}],
                 "delegate": {"name": "httpbin-team", "namespace": NS}},
                {"name": "redirect", "match": [{"uri": {"exact": "/old"}}],
                 "redirect": {"uri": "/new", "authority": "httpbin.org", "redirectCode": 308}},
                {"name": "direct", "match": [{"uri": {"exact": "/teapot"}}],
                 "directResponse": {"status": 418, "body": {"string": "short and stout"}}},
                {"name": "regex", "match": [{"uri": {"regex": "/status/[0-9]+"}, "ignoreUriCase": True}],
                 "rewrite": {"uriRegexRewrite": {"match": "^/status/(.*)$", "rewrite": "/code/\\1"}},
                 "route": [{"destination": {"host": "httpbin", "subset": "v1", "port": {"number": 8000}}}]},
                {"name": "matches",
                 "match": [{"headers": {"x-a": {"exact": "1"}, "x-b": {"prefix": "p"}, "x-c": {"regex": "c+"}},
                            "withoutHeaders": {"x-no": {}}, "queryParams": {"q": {"exact": "1"}, "r": {"regex": "x"}},
                            "method": {"exact": "POST"}, "authority": {"prefix": "httpbin"}, "port": 8000,
                            "sourceLabels": {"app": "productpage"}, "sourceNamespace": NS, "gateways": ["mesh"]}],
                 "rewrite": {"uri": "/anything", "authority": "httpbin.local"},
                 "route": [{"destination": {"host": "httpbin", "subset": "v2"}, "weight": 30,
                            "headers": {"request": {"set": {"x-dest": "v2"}}}},
                           {"destination": {"host": "httpbin", "subset": "v1"}, "weight": 70}],
                 "timeout": "2.5s",
                 "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx,gateway-error,503"},
                 "fault": {"delay": {"fixedDelay": "7s", "percent": 50},
                           "abort": {"httpStatus": 500, "percentage": {"value": 12.5}}},
                 "mirror": {"host": "httpbin", "subset": "v2"}, "mirrorPercentage": {"value": 25.0},
                 "headers": {"request": {"set": {"x-set": "1"}, "add": {"x-add": "2"}, "remove": ["x-rm"]},
                             "response": {"set": {"x-resp": "1"}, "remove": ["server"]}},
                 "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}, {"regex": ".*\\.b\\.example"}],
                                "allowMethods": ["GET", "POST"], "allowHeaders": ["x-a"],
                                "exposeHeaders": ["x-b"], "maxAge": "24h", "allowCredentials": True}},
                {"name": "grpc-abort", "match": [{"uri": {"prefix": "/grpc"}}],
                 "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 1}}},
                 "route": [{"destination": {"host": "httpbin", "port": {"number": 8443}}}],
                 "retries": {"attempts": 0}},
                {"name": "unknown", "match": [{"uri": {"prefix": "/nowhere"}}],
                 "route": [{"destination": {"host": "nosuch"}},
                           {"destination": {"host": "httpbin", "subset": "nope"}}]},
                {"name": "default", "route": [{"destination": {"host": "httpbin", "port": {"number": 8000}}}],
                 "mirrors": [{"destination": {"host": "httpbin", "subset": "v1"}, "percentage": {"value": 5}}]},
            ],
        }),
        vs("httpbin-team", {"http": [
            {"match": [{"uri": {"prefix": "/team/a"}}],
             "route": [{"destination": {"host": "httpbin", "subset": "v1"}}]},
            {"route": [{"destination": {"host": "httpbin", "subset": "v2"}}]},
        ]}),
        vs("db", {"hosts": ["db.internal"], "tcp": [{"match": [{"port": 5432}], "route": [
            {"destination": {"host": "db.internal", "subset": "a"}, "weight": 50},
            {"destination": {"host": "db.internal", "subset": "b"}, "weight": 50}]}]}),
        vs("ext-tls", {"hosts": ["api.example.com"], "tls": [{"match": [{"port": 443, "sniHosts": ["api.example.com"]}],
                                                             "route": [{"destination": {"host": "api.example.com",
                                                                                        "port": {"number": 443}}}]}]}),
        # Gateways: HTTP (with httpsRedirect), HTTPS with credentialName and with files, TLS passthrough, TCP.
        gw("main", {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]},
            {"port": {"number": 80, "name": "http-redir", "protocol": "HTTP"}, "hosts": ["secure.example.com"],
             "tls": {"httpsRedirect": True}},
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["httpbin.example.com"],
             "tls": {"mode": "SIMPLE", "credentialName": "httpbin-credential"}},
            {"port": {"number": 443, "name": "https-files", "protocol": "HTTPS"}, "hosts": ["files.example.com"],
             "tls": {"mode": "MUTUAL", "serverCertificate": f"{certs}/cert.pem", "privateKey": f"{certs}/key.pem",
                     "caCertificates": f"{certs}/ca.pem"}},
        ]}),
        gw("passthrough", {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 9443, "name": "tls", "protocol": "TLS"}, "hosts": ["*.example.com"],
             "tls": {"mode": "PASSTHROUGH"}},
            {"port": {"number": 31400, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]},
        ]}),
        vs("gw-http", {"hosts": ["*"], "gateways": ["istio-system/main"], "http": [
            {"match": [{"uri": {"prefix": "/httpbin"}}], "rewrite": {"uri": "/"},
             "route": [{"destination": {"host": "httpbin", "port": {"number": 8000}}}]},
            {"match": [{"uri": {"prefix": "/mesh-only"}, "gateways": ["mesh"]}],
             "route": [{"destination": {"host": "httpbin", "port": {"number": 8000}}}]},
        ]}),
        vs("gw-https", {"hosts": ["httpbin.example.com", "files.example.com", "secure.example.com"],
                        "gateways": ["istio-system/main"],
                        "http": [{"route": [{"destination": {"host": fqdn("httpbin"), "port": {"number": 8000}}}]}]}),
        vs("gw-tls", {"hosts": ["api.example.com"], "gateways": ["istio-system/passthrough"], "tls": [
            {"match": [{"port": 9443, "sniHosts": ["api.example.com"]}],
             "route": [{"destination": {"host": "api.example.com", "port": {"number": 443}}}]}]}),
        vs("gw-tcp", {"hosts": ["*"], "gateways": ["istio-system/passthrough"], "tcp": [
            {"match": [{"port": 31400}], "route": [{"destination": {"host": "tcp-echo.internal", "subset": "v1"},
                                                    "weight": 80},
                                                   {"destination": {"host": "tcp-echo.internal", "subset": "v2"},
                                                    "weight": 20}]}]}),
    ]
    return objs
