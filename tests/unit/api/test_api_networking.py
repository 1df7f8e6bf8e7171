"""Rules of DestinationRule, Gateway, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar and EnvoyFilter."""

from __future__ import annotations

from typing import Any

import pytest
from _api_helpers import assert_cause, causes, ok


def dr(**spec: Any) -> dict[str, Any]:
    return {"host": "reviews", **spec}


def tp(**policy: Any) -> dict[str, Any]:
    return dr(trafficPolicy=policy)


OD = {"consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "3m"}


def gw(*servers: dict[str, Any]) -> dict[str, Any]:
    return {"selector": {"istio": "ingressgateway"}, "servers": list(servers)}


def server(protocol: str = "HTTP", number: int = 80, name: str = "http", hosts: list[str] | None = None,
           **extra: Any) -> dict[str, Any]:
    return {"port": {"number": number, "name": name, "protocol": protocol}, "hosts": hosts or ["*"], **extra}


def se(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"hosts": ["api.example.com"], "ports": [{"number": 443, "name": "https",
                                                                     "protocol": "HTTPS"}],
                            "resolution": "DNS", "location": "MESH_EXTERNAL"}
    return {**base, **spec}


FAILING: list[tuple[str, str, dict[str, Any], str, str, str]] = [
    # DestinationRule
    ("dr-host", "DestinationRule", dr(host="bad host"), "spec.host", "FieldValueInvalid", ""),
    ("dr-host-missing", "DestinationRule", {"subsets": []}, "spec.host", "FieldValueRequired", ""),
    ("dr-subset-name", "DestinationRule", dr(subsets=[{"name": "V1", "labels": {"version": "v1"}}]),
     "spec.subsets[0].name", "FieldValueInvalid", "RFC 1123 label"),
    ("dr-subset-dup", "DestinationRule", dr(subsets=[{"name": "v1", "labels": {"version": "v1"}},
                                                     {"name": "v1", "labels": {"version": "v2"}}]),
     "spec.subsets[1].name", "FieldValueDuplicate", '"v1"'),
    ("dr-subset-labels", "DestinationRule", dr(subsets=[{"name": "v1"}]), "spec.subsets[0].labels",
     "FieldValueRequired", ""),
    ("dr-subset-label-value", "DestinationRule", dr(subsets=[{"name": "v1", "labels": {"version": "v 1"}}]),
     "spec.subsets[0].labels", "FieldValueInvalid", ""),
    ("dr-empty-policy", "DestinationRule", tp(), "spec.trafficPolicy", "FieldValueRequired", "at least one field"),
    ("dr-lb-both", "DestinationRule", tp(loadBalancer={"simple": "ROUND_ROBIN",
                                                       "consistentHash": {"useSourceIp": True}}),
     "spec.trafficPolicy.loadBalancer", "FieldValueInvalid", "only one of simple or consistentHash"),
    ("dr-lb-simple-enum", "DestinationRule", tp(loadBalancer={"simple": "FASTEST"}),
     "spec.trafficPolicy.loadBalancer.simple", "FieldValueNotSupported", ""),
    ("dr-hash-none", "DestinationRule", tp(loadBalancer={"consistentHash": {}}),
     "spec.trafficPolicy.loadBalancer.consistentHash", "FieldValueRequired", ""),
    ("dr-hash-two", "DestinationRule", tp(loadBalancer={"consistentHash": {"useSourceIp": True,
                                                                           "httpHeaderName": "x-user"}}),
     "spec.trafficPolicy.loadBalancer.consistentHash", "FieldValueInvalid", "only one of"),
    ("dr-maglev-prime", "DestinationRule", tp(loadBalancer={"consistentHash": {"useSourceIp": True,
                                                                               "maglev": {"tableSize": 1000}}}),
     "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize", "FieldValueInvalid", "prime"),
    ("dr-locality-two", "DestinationRule",
     tp(loadBalancer={"localityLbSetting": {"distribute": [{"from": "r1/*", "to": {"r1/*": 100}}],
                                            "failover": [{"from": "r1", "to": "r2"}]}}, outlierDetection=OD),
     "spec.trafficPolicy.loadBalancer.localityLbSetting", "FieldValueInvalid", "only one of distribute"),
    ("dr-locality-weights", "DestinationRule",
     tp(loadBalancer={"localityLbSetting": {"distribute": [{"from": "us-west/zone1/*",
                                                            "to": {"us-west/zone1/*": 70, "us-west/zone2/*": 20}}]}}),
     "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to", "FieldValueInvalid",
     "total locality weight 90 != 100"),
    ("dr-locality-wildcard", "DestinationRule",
     tp(loadBalancer={"localityLbSetting": {"distribute": [{"from": "*/zone1", "to": {"r/*": 100}}]}}),
     "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from", "FieldValueInvalid", "at the end"),
    ("dr-failover-same", "DestinationRule",
     tp(loadBalancer={"localityLbSetting": {"failover": [{"from": "r1", "to": "r1"}]}}, outlierDetection=OD),
     "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]", "FieldValueInvalid", "different regions"),
    ("dr-outlier-percent", "DestinationRule", tp(outlierDetection={"maxEjectionPercent": 120}),
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "FieldValueInvalid", "0..100"),
    ("dr-outlier-interval", "DestinationRule", tp(outlierDetection={"interval": "1"}),
     "spec.trafficPolicy.outlierDetection.interval", "FieldValueInvalid", "valid duration"),
    ("dr-outlier-local-origin", "DestinationRule", tp(outlierDetection={"consecutiveLocalOriginFailures": 3}),
     "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures", "FieldValueInvalid",
     "splitExternalLocalOriginErrors"),
    ("dr-pool-empty", "DestinationRule", tp(connectionPool={}), "spec.trafficPolicy.connectionPool",
     "FieldValueRequired", ""),
    ("dr-pool-negative", "DestinationRule", tp(connectionPool={"http": {"http1MaxPendingRequests": -1}}),
     "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests", "FieldValueInvalid", ""),
    ("dr-pool-timeout", "DestinationRule", tp(connectionPool={"tcp": {"connectTimeout": "30"}}),
     "spec.trafficPolicy.connectionPool.tcp.connectTimeout", "FieldValueInvalid", "valid duration"),
    ("dr-pool-h2", "DestinationRule", tp(connectionPool={"http": {"h2UpgradePolicy": "UPGRADE",
                                                                  "useClientProtocol": True}}),
     "spec.trafficPolicy.connectionPool.http.useClientProtocol", "FieldValueInvalid", "UPGRADE"),
    ("dr-tls-mode", "DestinationRule", tp(tls={"mode": "STRICT"}), "spec.trafficPolicy.tls.mode",
     "FieldValueNotSupported", "ISTIO_MUTUAL"),
    ("dr-tls-istio-certs", "DestinationRule", tp(tls={"mode": "ISTIO_MUTUAL", "clientCertificate": "/c.pem"}),
     "spec.trafficPolicy.tls.clientCertificate", "FieldValueForbidden", "ISTIO_MUTUAL"),
    ("dr-tls-mutual-key", "DestinationRule", tp(tls={"mode": "MUTUAL", "clientCertificate": "/c.pem"}),
     "spec.trafficPolicy.tls.privateKey", "FieldValueRequired", ""),
    ("dr-tls-credential", "DestinationRule", tp(tls={"mode": "SIMPLE", "credentialName": "c", "caCertificates": "x"}),
     "spec.trafficPolicy.tls.caCertificates", "FieldValueForbidden", "credentialName"),
    ("dr-port-level-port", "DestinationRule", tp(portLevelSettings=[{"tls": {"mode": "DISABLE"}}]),
     "spec.trafficPolicy.portLevelSettings[0].port", "FieldValueRequired", ""),
    ("dr-subset-policy", "DestinationRule",
     dr(subsets=[{"name": "v1", "labels": {"v": "1"},
                  "trafficPolicy": {"outlierDetection": {"minHealthPercent": -5}}}]),
     "spec.subsets[0].trafficPolicy.outlierDetection.minHealthPercent", "FieldValueInvalid", ""),
    ("dr-tunnel", "DestinationRule", tp(tunnel={"protocol": "PUT", "targetHost": "h.example.com", "targetPort": 80}),
     "spec.trafficPolicy.tunnel.protocol", "FieldValueNotSupported", ""),
    # Gateway
    ("gw-name", "Gateway", gw(server()), "metadata.name", "FieldValueInvalid", "DNS-1123 label"),
    ("gw-no-servers", "Gateway", gw(), "spec.servers", "FieldValueRequired", "at least one server"),
    ("gw-port-number", "Gateway", gw(server(number=0)), "spec.servers[0].port.number", "FieldValueInvalid", ""),
    ("gw-protocol", "Gateway", gw(server(protocol="SMTP")), "spec.servers[0].port.protocol",
     "FieldValueNotSupported", ""),
    ("gw-port-name-dup", "Gateway", gw(server(), server(number=8080, hosts=["a.example.com"])),
     "spec.servers[1].port.name", "FieldValueDuplicate", '"http"'),
    ("gw-host-short", "Gateway", gw(server(hosts=["reviews"])), "spec.servers[0].hosts[0]", "FieldValueInvalid",
     "short names"),
    ("gw-host-ns", "Gateway", gw(server(hosts=["Bad_NS/*.example.com"])), "spec.servers[0].hosts[0]",
     "FieldValueInvalid", "invalid namespace"),
    ("gw-host-partial", "Gateway", gw(server(hosts=["*foo.example.com"])), "spec.servers[0].hosts[0]",
     "FieldValueInvalid", ""),
    ("gw-https-no-tls", "Gateway", gw(server("HTTPS", 443, "https")), "spec.servers[0].tls", "FieldValueRequired",
     "TLS settings"),
    ("gw-http-with-cert", "Gateway", gw(server(tls={"credentialName": "c"})), "spec.servers[0].tls",
     "FieldValueForbidden", "plain text"),
    ("gw-tcp-with-tls", "Gateway", gw(server("TCP", 31400, "tcp", tls={"mode": "SIMPLE"})), "spec.servers[0].tls",
     "FieldValueForbidden", "non HTTPS/TLS"),
    ("gw-simple-no-cert", "Gateway", gw(server("HTTPS", 443, "https", tls={"mode": "SIMPLE"})),
     "spec.servers[0].tls.serverCertificate", "FieldValueRequired", "credentialName"),
    ("gw-mutual-no-ca", "Gateway", gw(server("HTTPS", 443, "https", tls={
        "mode": "MUTUAL", "serverCertificate": "/s.pem", "privateKey": "/k.pem"})),
     "spec.servers[0].tls.caCertificates", "FieldValueRequired", ""),
    ("gw-credential-and-cert", "Gateway", gw(server("HTTPS", 443, "https", tls={
        "mode": "SIMPLE", "credentialName": "c", "serverCertificate": "/s.pem"})),
     "spec.servers[0].tls.serverCertificate", "FieldValueForbidden", "credentialName"),
    ("gw-istio-mutual-cert", "Gateway", gw(server("TLS", 15443, "tls", tls={"mode": "ISTIO_MUTUAL",
                                                                             "credentialName": "c"})),
     "spec.servers[0].tls.credentialName", "FieldValueForbidden", ""),
    ("gw-target-port", "Gateway", gw(server(port={"number": 80, "name": "http", "protocol": "HTTP",
                                                  "targetPort": 8080})),
     "spec.servers[0].port.targetPort", "FieldValueForbidden", ""),
    # ServiceEntry
    ("se-host-star", "ServiceEntry", se(hosts=["*"]), "spec.hosts[0]", "FieldValueInvalid", "cannot be '*'"),
    ("se-host-invalid", "ServiceEntry", se(hosts=["bad_host.com"]), "spec.hosts[0]", "FieldValueInvalid", ""),
    ("se-port-dup-number", "ServiceEntry", se(ports=[{"number": 80, "name": "http", "protocol": "HTTP"},
                                                     {"number": 80, "name": "http2", "protocol": "HTTP"}]),
     "spec.ports[1].number", "FieldValueDuplicate", "80"),
    ("se-port-dup-name", "ServiceEntry", se(ports=[{"number": 80, "name": "http", "protocol": "HTTP"},
                                                   {"number": 81, "name": "http", "protocol": "HTTP"}]),
     "spec.ports[1].name", "FieldValueDuplicate", ""),
    ("se-port-name", "ServiceEntry", se(ports=[{"number": 80, "name": "HTTP_web", "protocol": "HTTP"}]),
     "spec.ports[0].name", "FieldValueInvalid", "invalid port name"),
    ("se-port-number", "ServiceEntry", se(ports=[{"number": 0, "name": "http", "protocol": "HTTP"}]),
     "spec.ports[0].number", "FieldValueInvalid", ""),
    ("se-protocol", "ServiceEntry", se(ports=[{"number": 80, "name": "http", "protocol": "FTP"}]),
     "spec.ports[0].protocol", "FieldValueNotSupported", ""),
    ("se-address", "ServiceEntry", se(addresses=["10.0.0.256"]), "spec.addresses[0]", "FieldValueInvalid", ""),
    ("se-cidr-dns", "ServiceEntry", se(addresses=["10.0.0.0/24"]), "spec.addresses[0]", "FieldValueInvalid",
     "NONE/STATIC"),
    ("se-selector-and-endpoints", "ServiceEntry",
     se(resolution="STATIC", workloadSelector={"labels": {"app": "vm"}}, endpoints=[{"address": "10.0.0.1"}]),
     "spec.endpoints", "FieldValueForbidden", "workloadSelector"),
    ("se-none-endpoints", "ServiceEntry", se(resolution="NONE", endpoints=[{"address": "10.0.0.1"}]),
     "spec.endpoints", "FieldValueForbidden", "resolution NONE"),
    ("se-static-fqdn", "ServiceEntry", se(resolution="STATIC", endpoints=[{"address": "vm.example.com"}]),
     "spec.endpoints[0].address", "FieldValueInvalid", "IP"),
    ("se-static-port-name", "ServiceEntry", se(resolution="STATIC", endpoints=[{"address": "10.0.0.1",
                                                                                 "ports": {"web": 8443}}]),
     "spec.endpoints[0].ports[web]", "FieldValueInvalid", "not defined by the service entry"),
    ("se-dns-wildcard", "ServiceEntry", se(hosts=["*.example.com"]), "spec.hosts[0]", "FieldValueInvalid",
     "must be FQDN"),
    ("se-dns-rr", "ServiceEntry", se(resolution="DNS_ROUND_ROBIN", endpoints=[{"address": "a.example.com"},
                                                                               {"address": "b.example.com"}]),
     "spec.endpoints", "FieldValueInvalid", "0 or 1"),
    ("se-multi-host-tcp", "ServiceEntry", se(hosts=["a.example.com", "b.example.com"],
                                             ports=[{"number": 5432, "name": "pg", "protocol": "TCP"}]),
     "spec.ports[0].protocol", "FieldValueInvalid", "multiple hosts"),
    ("se-export-none", "ServiceEntry", se(exportTo=["~", "ns1"]), "spec.exportTo", "FieldValueInvalid", "no one"),
    ("se-location", "ServiceEntry", se(location="OUTSIDE"), "spec.location", "FieldValueNotSupported", ""),
    # WorkloadEntry
    ("we-address-or-network", "WorkloadEntry", {"labels": {"app": "vm"}}, "spec.address", "FieldValueRequired", ""),
    ("we-address", "WorkloadEntry", {"address": "not an address"}, "spec.address", "FieldValueInvalid", ""),
    ("we-unix-ports", "WorkloadEntry", {"address": "unix:///var/run/a.sock", "ports": {"http": 80}},
     "spec.ports", "FieldValueForbidden", "unix"),
    ("we-port", "WorkloadEntry", {"address": "10.0.0.1", "ports": {"http": 70000}}, "spec.ports[http]",
     "FieldValueInvalid", ""),
    ("we-label", "WorkloadEntry", {"address": "10.0.0.1", "labels": {"app": "bad value"}}, "spec.labels",
     "FieldValueInvalid", ""),
    # WorkloadGroup
    ("wg-template", "WorkloadGroup", {"metadata": {"labels": {"app": "vm"}}}, "spec.template", "FieldValueRequired",
     ""),
    ("wg-probe-none", "WorkloadGroup", {"template": {}, "probe": {"periodSeconds": 5}}, "spec.probe",
     "FieldValueRequired", "one of httpGet"),
    ("wg-probe-two", "WorkloadGroup", {"template": {}, "probe": {"httpGet": {"port": 80}, "tcpSocket": {"port": 80}}},
     "spec.probe", "FieldValueInvalid", "only one of"),
    ("wg-probe-port", "WorkloadGroup", {"template": {}, "probe": {"tcpSocket": {"port": 0}}},
     "spec.probe.tcpSocket.port", "FieldValueInvalid", ""),
    ("wg-probe-negative", "WorkloadGroup", {"template": {}, "probe": {"periodSeconds": -1, "exec": {"command": ["x"]}}},
     "spec.probe.periodSeconds", "FieldValueInvalid", ""),
    ("wg-labels", "WorkloadGroup", {"metadata": {"labels": {"a b": "c"}}, "template": {}}, "spec.metadata.labels",
     "FieldValueInvalid", ""),
    # Sidecar
    ("sc-empty", "Sidecar", {"workloadSelector": {"labels": {"app": "a"}}}, "spec.egress", "FieldValueRequired",
     "empty configuration"),
    ("sc-egress-host-form", "Sidecar", {"egress": [{"hosts": ["reviews.default.svc.cluster.local"]}]},
     "spec.egress[0].hosts[0]", "FieldValueInvalid", "namespace/dnsName"),
    ("sc-egress-host-ns", "Sidecar", {"egress": [{"hosts": ["Bad_Ns/*"]}]}, "spec.egress[0].hosts[0]",
     "FieldValueInvalid", "invalid namespace"),
    ("sc-egress-short", "Sidecar", {"egress": [{"hosts": ["./reviews"]}]}, "spec.egress[0].hosts[0]",
     "FieldValueInvalid", "short names"),
    ("sc-egress-no-hosts", "Sidecar", {"egress": [{"hosts": []}]}, "spec.egress[0].hosts", "FieldValueRequired", ""),
    ("sc-catch-all-last", "Sidecar", {"egress": [{"hosts": ["./*"]}, {"port": {"number": 80, "protocol": "HTTP",
                                                                               "name": "http"}, "hosts": ["./*"]}]},
     "spec.egress[0].port", "FieldValueInvalid", "last"),
    ("sc-outbound-mode", "Sidecar", {"outboundTrafficPolicy": {"mode": "DENY_ALL"}},
     "spec.outboundTrafficPolicy.mode", "FieldValueNotSupported", "REGISTRY_ONLY"),
    ("sc-egress-proxy", "Sidecar", {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY", "egressProxy": {
        "host": "egress.example.com", "port": {"number": 80}}}}, "spec.outboundTrafficPolicy.egressProxy",
     "FieldValueForbidden", "ALLOW_ANY"),
    ("sc-ingress-port-dup", "Sidecar", {"ingress": [
        {"port": {"number": 9080, "protocol": "HTTP", "name": "a"}, "defaultEndpoint": "127.0.0.1:8080"},
        {"port": {"number": 9080, "protocol": "HTTP", "name": "b"}, "defaultEndpoint": "127.0.0.1:8081"}]},
     "spec.ingress[1].port.number", "FieldValueDuplicate", ""),
    ("sc-default-endpoint", "Sidecar", {"ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "a"},
                                                     "defaultEndpoint": "10.0.0.1:8080"}]},
     "spec.ingress[0].defaultEndpoint", "FieldValueInvalid", "127.0.0.1"),
    ("sc-selector-wildcard", "Sidecar", {"workloadSelector": {"labels": {"app": "*"}}, "egress": [{"hosts": ["./*"]}]},
     "spec.workloadSelector.labels", "FieldValueInvalid", "wildcard"),
    # EnvoyFilter
    ("ef-patch", "EnvoyFilter", {"configPatches": [{"applyTo": "HTTP_FILTER"}]}, "spec.configPatches[0].patch",
     "FieldValueRequired", ""),
    ("ef-apply-to", "EnvoyFilter", {"configPatches": [{"patch": {"operation": "REMOVE"}}]},
     "spec.configPatches[0].applyTo", "FieldValueRequired", ""),
    ("ef-value", "EnvoyFilter", {"configPatches": [{"applyTo": "CLUSTER", "patch": {"operation": "MERGE"}}]},
     "spec.configPatches[0].patch.value", "FieldValueRequired", "MERGE"),
    ("ef-operation", "EnvoyFilter", {"configPatches": [{"applyTo": "CLUSTER", "patch": {"operation": "UPSERT"}}]},
     "spec.configPatches[0].patch.operation", "FieldValueNotSupported", ""),
    ("ef-proxy-version", "EnvoyFilter", {"configPatches": [{"applyTo": "CLUSTER", "match": {"proxy": {
        "proxyVersion": "^1\\.2(?=4)"}}, "patch": {"operation": "REMOVE"}}]},
     "spec.configPatches[0].match.proxy.proxyVersion", "FieldValueInvalid", "RE2"),
    ("ef-unknown-type", "EnvoyFilter", {"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {
        "operation": "ADD", "value": {"name": "x", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope"}}}}]},
     "spec.configPatches[0].patch.value", "FieldValueInvalid", "unknown @type"),
    ("ef-unknown-field", "EnvoyFilter", {"configPatches": [{"applyTo": "CLUSTER", "patch": {
        "operation": "MERGE", "value": {"connectTimeout": "1s", "bogus": 1}}}]},
     "spec.configPatches[0].patch.value", "FieldValueInvalid", "bogus"),
    ("ef-typed-field", "EnvoyFilter", {"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {
        "operation": "ADD", "value": {"name": "x", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua", "inline_code": 5}}}}]},
     "spec.configPatches[0].patch.value", "FieldValueInvalid", "inline_code"),
    ("ef-typed-struct", "EnvoyFilter", {"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {
        "operation": "ADD", "value": {"name": "x", "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "value": {"stat_prefix": "x", "token_bukket": {}}}}}}]},
     "spec.configPatches[0].patch.value", "FieldValueInvalid", "token_bukket"),
    ("ef-extension-config", "EnvoyFilter", {"configPatches": [{"applyTo": "EXTENSION_CONFIG", "patch": {
        "operation": "ADD", "value": {"name": "x"}}}]},
     "spec.configPatches[0].applyTo", "FieldValueForbidden", "ECDS"),
    ("ef-bootstrap", "EnvoyFilter", {"configPatches": [{"applyTo": "BOOTSTRAP", "patch": {
        "operation": "MERGE", "value": {}}}]},
     "spec.configPatches[0].applyTo", "FieldValueForbidden", "bootstrap"),
    ("ef-target-service", "EnvoyFilter", {"targetRefs": [{"kind": "Service", "group": "", "name": "reviews"}],
                                          "configPatches": []},
     "spec.targetRefs[0].kind", "FieldValueNotSupported", ""),
    ("ef-match-kind", "EnvoyFilter", {"configPatches": [{"applyTo": "CLUSTER", "match": {"listener": {
        "portNumber": 80}}, "patch": {"operation": "REMOVE"}}]},
     "spec.configPatches[0].match", "FieldValueForbidden", "cluster match"),
    ("ef-subfilter", "EnvoyFilter", {"configPatches": [{"applyTo": "NETWORK_FILTER", "match": {"listener": {
        "filterChain": {"filter": {"name": "a", "subFilter": {"name": "b"}}}}}, "patch": {"operation": "REMOVE"}}]},
     "spec.configPatches[0].match.listener.filterChain.filter.subFilter", "FieldValueForbidden", "HTTP_FILTER"),
    ("ef-filter-class", "EnvoyFilter", {"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {
        "operation": "ADD", "filterClass": "AUTHZ", "value": {"name": "x"}}}]},
     "spec.configPatches[0].patch.filterClass", "FieldValueForbidden", ""),
]


@pytest.mark.parametrize(("kind", "spec", "field", "reason", "text"), [c[1:] for c in FAILING],
                         ids=[c[0] for c in FAILING])
def test_networking_rule_fails(kind: str, spec: dict[str, Any], field: str, reason: str, text: str) -> None:
    name = "bad.name" if field == "metadata.name" else "x"
    assert_cause(causes(kind, spec, name=name), field, reason, text)


PASSING: list[tuple[str, str, dict[str, Any]]] = [
    ("dr-subsets", "DestinationRule", dr(subsets=[{"name": "v1", "labels": {"version": "v1"}},
                                                  {"name": "v2-mysql", "labels": {"version": "v2-mysql"}}])),
    ("dr-lb-simple", "DestinationRule", tp(loadBalancer={"simple": "LEAST_REQUEST"})),
    ("dr-lb-hash", "DestinationRule", tp(loadBalancer={"consistentHash": {"httpCookie": {"name": "u", "ttl": "0s"},
                                                                          "maglev": {"tableSize": 65537}}})),
    ("dr-locality-distribute", "DestinationRule", tp(loadBalancer={"localityLbSetting": {"distribute": [
        {"from": "us-west/zone1/*", "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 20}}]}})),
    ("dr-locality-failover", "DestinationRule", tp(loadBalancer={"localityLbSetting": {
        "failover": [{"from": "us-east", "to": "eu-west"}]}}, outlierDetection=OD)),
    ("dr-locality-priority", "DestinationRule", tp(loadBalancer={"localityLbSetting": {"failoverPriority": [
        "topology.istio.io/network", "topology.kubernetes.io/region=us-east"]}}, outlierDetection=OD)),
    ("dr-locality-disabled", "DestinationRule", tp(loadBalancer={"localityLbSetting": {"enabled": False}})),
    ("dr-circuit-breaker", "DestinationRule", tp(connectionPool={
        "tcp": {"maxConnections": 100, "connectTimeout": "30ms", "tcpKeepalive": {"time": "7200s", "interval": "75s"}},
        "http": {"http2MaxRequests": 1000, "maxRequestsPerConnection": 10, "idleTimeout": "1h"}},
        outlierDetection={"consecutive5xxErrors": 7, "interval": "5m", "baseEjectionTime": "15m"})),
    ("dr-tls", "DestinationRule", tp(tls={"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem",
                                          "sni": "a.example.com"})),
    ("dr-tls-credential", "DestinationRule", tp(tls={"mode": "SIMPLE", "credentialName": "client-credential"})),
    ("dr-port-level", "DestinationRule", tp(portLevelSettings=[{"port": {"number": 80},
                                                                "loadBalancer": {"simple": "RANDOM"}}])),
    ("dr-selector", "DestinationRule", dr(workloadSelector={"matchLabels": {"app": "ratings"}}, exportTo=["."])),
    ("gw-bookinfo", "Gateway", gw(server())),
    ("gw-https", "Gateway", gw(server("HTTPS", 443, "https", ["ns1/bookinfo.example.com", "*/*.example.com"],
                                      tls={"mode": "SIMPLE", "credentialName": "bookinfo-cert"}))),
    ("gw-https-redirect", "Gateway", gw(server(hosts=["bookinfo.example.com"], tls={"httpsRedirect": True}),
                                        server("HTTPS", 443, "https", ["bookinfo.example.com"], tls={
                                            "mode": "SIMPLE", "serverCertificate": "/s.pem", "privateKey": "/k.pem"}))),
    ("gw-east-west", "Gateway", gw(server("TLS", 15443, "tls", ["*.local"], tls={"mode": "AUTO_PASSTHROUGH"}))),
    ("gw-ip-host", "Gateway", gw(server(hosts=["10.0.0.1"]))),
    ("se-external", "ServiceEntry", se()),
    ("se-static", "ServiceEntry", se(hosts=["mysql.vm.internal"], resolution="STATIC", location="MESH_INTERNAL",
                                     ports=[{"number": 3306, "name": "mysql", "protocol": "MYSQL"}],
                                     addresses=["240.0.0.10"],
                                     endpoints=[{"address": "10.0.0.2", "ports": {"mysql": 3306},
                                                 "labels": {"app": "mysql"}, "locality": "us-west/zone1"}])),
    ("se-selector", "ServiceEntry", se(hosts=["vm.example.com"], resolution="STATIC",
                                       workloadSelector={"labels": {"app": "vm"}})),
    ("se-none-cidr", "ServiceEntry", se(hosts=["db.example.com"], resolution="NONE", addresses=["10.1.0.0/16"],
                                        ports=[{"number": 5432, "name": "tcp", "protocol": "TCP"}])),
    ("se-wildcard-none", "ServiceEntry", se(hosts=["*.wikipedia.org"], resolution="NONE")),
    ("se-dns-endpoints", "ServiceEntry", se(hosts=["*.example.com"], endpoints=[{"address": "lb.example.com"}])),
    ("we-ip", "WorkloadEntry", {"address": "10.0.0.5", "labels": {"app": "ratings"}, "ports": {"http": 9080},
                                "serviceAccount": "ratings", "network": "vm-net", "locality": "us-west/zone1"}),
    ("we-network-only", "WorkloadEntry", {"network": "network2", "labels": {"app": "a"}}),
    ("we-fqdn", "WorkloadEntry", {"address": "vm1.example.com"}),
    ("wg", "WorkloadGroup", {"metadata": {"labels": {"app": "ratings"}}, "template": {"serviceAccount": "ratings",
                                                                                        "ports": {"http": 9080}},
                             "probe": {"httpGet": {"port": 9080, "path": "/ready", "scheme": "HTTP"},
                                       "periodSeconds": 5}}),
    ("sc-egress", "Sidecar", {"workloadSelector": {"labels": {"app": "ratings"}},
                              "egress": [{"hosts": ["./*", "istio-system/*", "*/api.example.com", "~/*"]}],
                              "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}),
    ("sc-ingress", "Sidecar", {"ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                                            "defaultEndpoint": "127.0.0.1:8080"}],
                               "egress": [{"port": {"number": 3306, "protocol": "MYSQL", "name": "mysql"},
                                           "hosts": ["*/mysql.example.com"]}, {"hosts": ["./*"]}]}),
    ("sc-egress-proxy", "Sidecar", {"outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": {
        "host": "egress.example.com", "port": {"number": 80}}}}),
    ("ef", "EnvoyFilter", {"workloadSelector": {"labels": {"app": "reviews"}}, "configPatches": [
        {"applyTo": "HTTP_FILTER", "match": {"context": "SIDECAR_INBOUND", "listener": {"filterChain": {
            "filter": {"name": "envoy.filters.network.http_connection_manager"}}}},
         "patch": {"operation": "INSERT_BEFORE", "value": {"name": "envoy.lua", "typed_config": {
             "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua", "inlineCode": "x"}}}},
        {"applyTo": "CLUSTER", "match": {"cluster": {"name": "outbound|80||x"}}, "patch": {"operation": "REMOVE"}}]}),
]


@pytest.mark.parametrize(("kind", "spec"), [c[1:] for c in PASSING], ids=[c[0] for c in PASSING])
def test_networking_rule_passes(kind: str, spec: dict[str, Any]) -> None:
    ok(kind, spec)


def test_failover_without_outlier_detection_warns() -> None:
    warnings = ok("DestinationRule", tp(loadBalancer={"localityLbSetting": {"failover": [{"from": "a", "to": "b"}]}}))
    assert any("localityLbSetting" in w and "outlierDetection" in w for w in warnings)


def test_gateway_https_redirect_on_tcp_and_passthrough_certs_warn() -> None:
    warnings = ok("Gateway", gw(server("TLS", 443, "tls", ["a.example.com"], tls={
        "mode": "PASSTHROUGH", "serverCertificate": "/s.pem", "httpsRedirect": True})))
    assert any("httpsRedirect" in w for w in warnings)
    assert any("does not use certificates" in w for w in warnings)
