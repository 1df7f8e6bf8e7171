"""Each analyzer code: an Istio-shaped config that triggers it and one that does not (Bookinfo's objects)."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from meshplane.analysis import CATALOGUE, Level, Message, analyze
from meshplane.analysis.merge import Submitted, merged_input
from meshplane.analysis.messages import go_format
from meshplane.model.config import ConfigSnapshot

# The mesh every case starts from: Bookinfo's services and workloads, its gateway and its DestinationRules.
BASE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage.default.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1-0, namespace: default}
spec: {address: 127.0.0.10, labels: {app: reviews, version: v1}, ports: {http: 9080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-v1-0, namespace: default}
spec: {address: 127.0.0.11, labels: {app: productpage, version: v1}, ports: {http: 9080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: istio-ingressgateway-0, namespace: istio-system}
spec: {address: 127.0.0.12, labels: {istio: ingressgateway}, ports: {http2: 80}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(textwrap.dedent(text)) if d]


def run(extra: str = "", *, base: str = BASE) -> list[Message]:
    inp = merged_input(ConfigSnapshot(1), _empty_registry(), [Submitted(d) for d in docs(base) + docs(extra)])
    return analyze(inp)


def _empty_registry() -> Any:
    from meshplane.model.service import RegistrySnapshot

    return RegistrySnapshot()


def codes(messages: list[Message]) -> list[str]:
    return [m.type.code for m in messages]


def lines(messages: list[Message]) -> list[str]:
    return [m.line() for m in messages]


def test_the_base_mesh_is_clean() -> None:
    assert run() == []


def test_catalogue_codes_are_unique_and_use_istios_names() -> None:
    assert len({t.code for t in CATALOGUE}) == len(CATALOGUE)
    by_code = {t.code: t.name for t in CATALOGUE}
    assert by_code["IST0101"] == "ReferencedResourceNotFound"
    assert by_code["IST0162"] == "GatewayPortNotDefinedOnService"
    assert by_code["IST0131"] == "VirtualServiceIneffectiveMatch"


def test_go_format() -> None:
    assert go_format("Referenced %s not found: %q", ["gateway", "x"]) == 'Referenced gateway not found: "x"'
    assert go_format("%v and %d, %t", [["a", "b"], 3, False]) == "[a b] and 3, false"


# --- IST0101 ---------------------------------------------------------------------------------------------------

BOOKINFO_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [{gateway}]
  http:
  - route:
    - destination: {{host: productpage, port: {{number: 9080}}}}
"""


def test_ist0101_missing_gateway_in_istios_format() -> None:
    msgs = run(BOOKINFO_VS.format(gateway="bookinfo-gatewy"))
    assert lines(msgs) == [
        'Error [IST0101] (VirtualService default/bookinfo) Referenced gateway not found: "bookinfo-gatewy"']
    assert run(BOOKINFO_VS.format(gateway="bookinfo-gateway")) == []
    assert run(BOOKINFO_VS.format(gateway="default/bookinfo-gateway")) == []


REVIEWS_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: {host}, subset: {subset}}}
"""


def test_ist0101_missing_subset_and_missing_host() -> None:
    msgs = run(REVIEWS_VS.format(host="reviews", subset="v3"))
    assert lines(msgs) == ["Error [IST0101] (VirtualService default/reviews) Referenced host+subset in "
                           'destinationrule not found: "reviews+v3"']
    assert run(REVIEWS_VS.format(host="reviews", subset="v2")) == []
    msgs = run(REVIEWS_VS.format(host="reviewz", subset="v1"))
    assert lines(msgs) == ['Error [IST0101] (VirtualService default/reviews) Referenced host not found: "reviewz"']


def test_ist0101_port_the_service_does_not_expose() -> None:
    msgs = run(BOOKINFO_VS.format(gateway="bookinfo-gateway").replace("9080", "9090"))
    assert lines(msgs) == ["Error [IST0101] (VirtualService default/bookinfo) Referenced host:port not found: "
                           '"productpage:9090"']


def test_ist0101_destination_rule_host_and_gateway_selector() -> None:
    dr = """
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: ratings, namespace: default}
    spec: {host: ratings}
    """
    assert lines(run(dr)) == ['Error [IST0101] (DestinationRule default/ratings) Referenced host not found: '
                              '"ratings"']
    assert run(dr.replace("ratings}", "reviews}")) == []
    gw = """
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: egress, namespace: default}
    spec:
      selector: {istio: egressgateway}
      servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: [a.example.com], tls: {mode: PASSTHROUGH}}]
    """
    assert lines(run(gw)) == ['Error [IST0101] (Gateway default/egress) Referenced selector not found: '
                              '"istio=egressgateway"']


# --- IST0104 / IST0162 --------------------------------------------------------------------------------------------

GW_8443 = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
"""


def test_ist0104_gateway_port_not_on_the_workload() -> None:
    msgs = run(GW_8443)
    assert lines(msgs) == ["Warning [IST0104] (Gateway default/secure) The gateway refers to a port that is not "
                           "exposed on the workload (pod selector istio=ingressgateway; port 8443)"]
    assert run(GW_8443.replace("8443", "80")) == []


def test_ist0162_gateway_port_not_on_its_service() -> None:
    gateway_service = """
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: istio-ingressgateway, namespace: istio-system}
    spec:
      hosts: [istio-ingressgateway.istio-system.svc.cluster.local]
      ports: [{number: 80, name: http2, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]
      workloadSelector: {labels: {istio: ingressgateway}}
    ---
    apiVersion: networking.istio.io/v1
    kind: WorkloadEntry
    metadata: {name: istio-ingressgateway-1, namespace: istio-system}
    spec: {address: 127.0.0.13, labels: {istio: ingressgateway}, ports: {http2: 80, https: 8443}}
    """
    msgs = run(GW_8443 + "---\n" + textwrap.dedent(gateway_service))
    assert codes(msgs) == ["IST0162"]
    assert msgs[0].text.startswith("The gateway is listening on a target port (port 8443) that is not defined in "
                                   "the Service associated with its workload instances (Pod selector "
                                   "istio=ingressgateway).")
    fixed = gateway_service.replace("{number: 443,", "{number: 443, targetPort: 8443,")
    assert run(GW_8443 + "---\n" + textwrap.dedent(fixed)) == []


# --- IST0106 -----------------------------------------------------------------------------------------------------


def test_ist0106_schema_error_from_admission() -> None:
    bad = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: reviews, namespace: default}
    spec:
      hosts: [reviews]
      http:
      - timeout: 5
        route: [{destination: {host: reviews}}]
    """
    msgs = run(bad)
    assert codes(msgs) == ["IST0106"]
    assert msgs[0].line().startswith("Error [IST0106] (VirtualService default/reviews) Schema validation error: ")
    assert "timeout" in msgs[0].text
    assert run(bad.replace("timeout: 5", "timeout: 5s")) == []


# --- IST0108 -----------------------------------------------------------------------------------------------------


def test_ist0108_unknown_istio_annotation() -> None:
    dr = """
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata:
      name: productpage
      namespace: default
      annotations: {{"{key}": "true", "example.com/other": "x"}}
    spec: {{host: productpage}}
    """
    msgs = run(dr.format(key="networking.istio.io/exportTO"))
    assert lines(msgs) == ["Warning [IST0108] (DestinationRule default/productpage) Unknown annotation: "
                           "networking.istio.io/exportTO"]
    assert run(dr.format(key="networking.istio.io/exportTo")) == []


# --- IST0109 -----------------------------------------------------------------------------------------------------


def test_ist0109_two_mesh_virtual_services_for_one_host() -> None:
    other = REVIEWS_VS.format(host="reviews", subset="v1").replace("name: reviews,", "name: reviews-v1,")
    msgs = run(REVIEWS_VS.format(host="reviews", subset="v2") + "---\n" + other)
    assert codes(msgs) == ["IST0109", "IST0109"]
    assert msgs[0].text.startswith("The VirtualServices default/reviews,default/reviews-v1 associated with mesh "
                                   "gateway define the same host reviews.default.svc.cluster.local")
    exported_here = other.replace("spec:\n", "spec:\n  exportTo: [.]\n")
    assert run(REVIEWS_VS.format(host="reviews", subset="v2") + "---\n" + exported_here) == []


# --- IST0113 -----------------------------------------------------------------------------------------------------


def test_ist0113_destination_rule_disables_mtls_against_strict() -> None:
    conf = """
    apiVersion: security.istio.io/v1
    kind: PeerAuthentication
    metadata: {{name: default, namespace: istio-system}}
    spec: {{mtls: {{mode: STRICT}}}}
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {{name: productpage, namespace: default}}
    spec:
      host: productpage
      trafficPolicy: {{tls: {{mode: {mode}}}}}
    """
    msgs = run(conf.format(mode="DISABLE"))
    assert lines(msgs) == [
        "Error [IST0113] (DestinationRule default/productpage) A DestinationRule and Policy are in conflict with "
        "regards to mTLS for host productpage.default.svc.cluster.local. The DestinationRule "
        '"default/productpage" specifies that mTLS must be false but the Policy object "istio-system/default" '
        "specifies STRICT."]
    assert run(conf.format(mode="ISTIO_MUTUAL")) == []


# --- IST0128 / IST0129 -----------------------------------------------------------------------------------------


def test_ist0128_and_ist0129_tls_without_ca_certificates() -> None:
    external = """
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: httpbin, namespace: default}
    spec:
      hosts: [httpbin.org]
      location: MESH_EXTERNAL
      resolution: DNS
      ports: [{number: 443, name: https, protocol: TLS}]
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: httpbin, namespace: default}
    spec:
      host: httpbin.org
      trafficPolicy:
        tls: {mode: SIMPLE}
        portLevelSettings:
        - port: {number: 443}
          tls: {mode: SIMPLE}
    """
    msgs = run(external)
    assert lines(msgs) == [
        "Warning [IST0128] (DestinationRule default/httpbin) DestinationRule default/httpbin in namespace default "
        "has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: httpbin.org",
        "Warning [IST0129] (DestinationRule default/httpbin) DestinationRule default/httpbin in namespace default "
        "has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: "
        "httpbin.org at port number:443"]
    verified = external.replace("{mode: SIMPLE}", "{mode: SIMPLE, caCertificates: /etc/certs/ca.pem}")
    assert run(verified) == []


# --- IST0130 / IST0131 -----------------------------------------------------------------------------------------

RULES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - name: jason-again
    match: [{name: dup, headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"""


def test_ist0130_and_ist0131_unreachable_rule_and_ineffective_match() -> None:
    msgs = run(RULES)
    assert lines(msgs) == [
        'Warning [IST0130] (VirtualService default/reviews) VirtualService rule "jason-again" not used (all matches '
        "used by prior rules).",
        'Info [IST0131] (VirtualService default/reviews) VirtualService rule "jason-again" match "dup" is not used '
        '(duplicate/overlapping match in rule "jason").']
    assert run(RULES.replace("{name: dup, headers: {end-user: {exact: jason}}}",
                             "{name: dup, headers: {end-user: {exact: mary}}}")) == []
    catch_all_first = RULES.replace("  - route: [{destination: {host: reviews, subset: v1}}]\n", "").replace(
        "  http:\n", "  http:\n  - route: [{destination: {host: reviews, subset: v1}}]\n")
    assert ("Warning [IST0130] (VirtualService default/reviews) VirtualService rule \"jason\" not used (route "
            "without matches defined before).") in lines(run(catch_all_first))


# --- IST0132 / IST0145 ------------------------------------------------------------------------------------------


def test_ist0132_virtual_service_host_not_in_its_gateway() -> None:
    gw = """
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: shop, namespace: default}
    spec:
      selector: {istio: ingressgateway}
      servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com]}]
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: shop, namespace: default}
    spec:
      hosts: [HOST]
      gateways: [shop]
      http: [{route: [{destination: {host: productpage}}]}]
    """
    msgs = run(gw.replace("HOST", "bookinfo.example.com"))
    assert "IST0132" in codes(msgs)
    assert "IST0132" not in codes(run(gw.replace("HOST", "shop.example.com")))


def test_ist0145_conflicting_gateways() -> None:
    second = """
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: other-gateway, namespace: default}
    spec:
      selector: {istio: ingressgateway}
      servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [HOSTS]}]
    """
    msgs = run(second.replace("HOSTS", '"*"'))
    assert lines(msgs) == [
        "Error [IST0145] (Gateway default/bookinfo-gateway) Conflict with gateways default/other-gateway (workload "
        "selector istio=ingressgateway, port 80, hosts *).",
        "Error [IST0145] (Gateway default/other-gateway) Conflict with gateways default/bookinfo-gateway (workload "
        "selector istio=ingressgateway, port 80, hosts *)."]
    assert run(second.replace("HOSTS", "shop.example.com")) == []


# --- MPL codes (ASM kinds) --------------------------------------------------------------------------------------

LANE_GROUP = """
apiVersion: istio.alibabacloud.com/v1
kind: ASMSwimLaneGroup
metadata: {name: bookinfo, namespace: istio-system}
spec:
  ingress: {gateway: {name: GATEWAY, namespace: default, type: ASM}}
  isPermissive: true
  permissiveModeConfiguration: {routeHeader: x-asm-prefer-tag, fallbackTarget: FALLBACK}
  services: [{name: SERVICE, namespace: default}]
---
apiVersion: istio.alibabacloud.com/v1
kind: ASMSwimLane
metadata: {name: v1, namespace: istio-system, labels: {swimlane-group: bookinfo}}
spec:
  labelSelector: {version: v1}
  services: [{name: reviews, namespace: default}]
"""


def lane_group(gateway: str = "bookinfo-gateway", fallback: str = "v1", service: str = "reviews") -> str:
    return LANE_GROUP.replace("GATEWAY", gateway).replace("FALLBACK", fallback).replace("SERVICE", service)


def test_mpl_lane_group_codes() -> None:
    assert run(lane_group()) == []
    assert lines(run(lane_group(gateway="bookinfo-gw"))) == [
        "Error [MPL0001] (ASMSwimLaneGroup istio-system/bookinfo) The lane group's ingress gateway "
        "default/bookinfo-gw is not a Gateway: no ingress VirtualService is generated for its lanes"]
    assert lines(run(lane_group(fallback="base"))) == [
        'Error [MPL0002] (ASMSwimLaneGroup istio-system/bookinfo) fallbackTarget "base" is not a lane of this group '
        "(lanes: [v1]): requests for a lane without the service have no base lane to fall back to"]
    assert codes(run(lane_group(service="ratings"))) == ["MPL0004"]


def test_mpl0003_traffic_label_selecting_nothing() -> None:
    tl = """
    apiVersion: istio.alibabacloud.com/v1
    kind: TrafficLabel
    metadata: {name: lanes, namespace: default}
    spec:
      workloadSelector: {labels: {app: APP}}
      rules:
      - labels: [{name: x-asm-prefer-tag, valueFrom: ["$getLabel(version)"]}]
    """
    msgs = run(tl.replace("APP", "reviewz"))
    assert lines(msgs) == ["Warning [MPL0003] (TrafficLabel default/lanes) The TrafficLabel's workloadSelector "
                           "app=reviewz selects no workload instance in namespace default: it labels no traffic"]
    assert run(tl.replace("APP", "reviews")) == []


def test_mpl0005_template_binding_without_its_template_or_version() -> None:
    objs = """
    apiVersion: istio.alibabacloud.com/v1
    kind: EnvoyFilterTemplate
    metadata: {name: lua-header, namespace: istio-system}
    spec:
      templates:
      - istioVersion: 1.20-MAX_VERSION
        value: |
          apiVersion: networking.istio.io/v1alpha3
          kind: EnvoyFilter
          spec:
            configPatches:
            - applyTo: CLUSTER
              patch: {operation: MERGE, value: {connect_timeout: 2s}}
    ---
    apiVersion: istio.alibabacloud.com/v1
    kind: EnvoyFilterTemplateBinding
    metadata: {name: reviews, namespace: default}
    spec:
      templateRef: {name: "@REF@", istioVersion: "@VER@"}
    """

    def binding(ref: str, version: str) -> list[Message]:
        return run(objs.replace("@REF@", ref).replace("@VER@", version))

    assert binding("lua-header", "1.40") == []
    assert lines(binding("lua-headr", "1.40")) == [
        "Error [MPL0005] (EnvoyFilterTemplateBinding default/reviews) The binding applies nothing: "
        "no EnvoyFilterTemplate 'lua-headr' in namespace default or istio-system"]
    assert lines(binding("lua-header", "1.19")) == [
        "Error [MPL0005] (EnvoyFilterTemplateBinding default/reviews) The binding applies nothing: "
        "EnvoyFilterTemplate istio-system/lua-header has no value for istioVersion 1.19 "
        "(its versions: 1.20-MAX_VERSION)"]


# --- the run as a whole -----------------------------------------------------------------------------------------


def test_namespace_filter_and_threshold() -> None:
    msgs = run(RULES + "---\n" + LANE_GROUP.replace("GATEWAY", "x").replace("FALLBACK", "v1")
               .replace("SERVICE", "reviews"))
    assert {m.resource.namespace for m in msgs} == {"default", "istio-system"}
    inp = merged_input(ConfigSnapshot(1), _empty_registry(),
                       [Submitted(d) for d in docs(BASE) + docs(RULES)])
    assert codes(analyze(inp, namespace="istio-system")) == []
    assert codes(analyze(inp, threshold=Level.WARNING)) == ["IST0130"]


def test_merged_input_replaces_the_live_object_and_names_the_file() -> None:
    live = merged_input(ConfigSnapshot(1), _empty_registry(),
                        [Submitted(d) for d in docs(BASE) + docs(REVIEWS_VS.format(host="reviews", subset="v1"))])
    assert analyze(live) == []
    inp = merged_input(live.config, _empty_registry(),
                       [Submitted(docs(REVIEWS_VS.format(host="reviews", subset="v9"))[0], origin="reviews.yaml")])
    assert lines(analyze(inp)) == ["Error [IST0101] (VirtualService default/reviews reviews.yaml) Referenced "
                                   'host+subset in destinationrule not found: "reviews+v9"']


@pytest.mark.parametrize("doc", [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}])
def test_unknown_kind_is_a_schema_error(doc: dict[str, Any]) -> None:
    inp = merged_input(ConfigSnapshot(1), _empty_registry(), [Submitted(doc, "d.yaml")])
    assert codes(analyze(inp)) == ["IST0106"]
