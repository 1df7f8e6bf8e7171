"""The lanes sample (``meshplane demo up --scenario lanes``): ASM's mocka -> mockb -> mockc call chain in three lanes.

Why this layout: it is the chain ASM's traffic-lane guides use, so their ASMSwimLaneGroup / ASMSwimLane YAML
applies with only the gateway name changed. Lane v1 (the base) has every service; lane v2 has mocka and mockc only
(a hop to mockb must fall back to v1 and the next hop return to v2); lane v3 has all three and runs in the second
member cluster, so one lane spans clusters. Every workload carries ``version`` and ``ASM_TRAFFIC_TAG`` labels (lanes
may select either; TrafficLabel auto-colouring reads the latter). The mocks are the demo application in
``--forward-x`` mode: they propagate every ``x-`` header plus trace context and baggage, and report what they
received. The ingress gateway is the demo's; a Gateway object (port 80, any host) is the only routing config at
start: no lane exists until the user applies one.
"""

from __future__ import annotations

from typing import Any

import yaml

from meshplane.runtime.demo import CLUSTERS

PORT = 8000
SERVICES = ("mocka", "mockb", "mockc")

# workload name -> (service, version, clusters)
WORKLOADS = (
    ("mocka-v1", "mocka", "v1", ("cluster-1",)),
    ("mockb-v1", "mockb", "v1", ("cluster-1",)),
    ("mockc-v1", "mockc", "v1", ("cluster-1",)),
    ("mocka-v2", "mocka", "v2", ("cluster-1",)),
    ("mockc-v2", "mockc", "v2", ("cluster-1",)),
    ("mocka-v3", "mocka", "v3", ("cluster-2",)),
    ("mockb-v3", "mockb", "v3", ("cluster-2",)),
    ("mockc-v3", "mockc", "v3", ("cluster-2",)),
)

GATEWAY_CONFIG = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-ingressgateway
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
"""


def lanes_manifest() -> dict[str, Any]:
    workloads: list[dict[str, Any]] = [{
        "name": "istio-ingressgateway",
        "namespace": "istio-system",
        "role": "gateway",
        "clusters": ["cluster-1"],
        "labels": {"istio": "ingressgateway", "app": "istio-ingressgateway"},
        "serviceAccount": "istio-ingressgateway-service-account",
        "ports": [{"port": 80, "name": "http2", "protocol": "HTTP"}],
    }]
    for name, service, version, clusters in WORKLOADS:
        workloads.append({
            "name": name,
            "namespace": "default",
            "clusters": list(clusters),
            "replicas": 1,
            "labels": {"app": service, "version": version, "ASM_TRAFFIC_TAG": version},
            "serviceAccount": service,
            "ports": [{"port": PORT, "name": "http", "protocol": "HTTP"}],
            "command": ["{python}", "-m", "meshplane.runtime.demoapp", "--service", service, "--version", version,
                        "--listen", "{listen}", "--port", str(PORT), "--forward-x"],
            "readiness": {"httpGet": {"path": "/healthz"}},
        })
    return {
        "apiVersion": "meshplane.io/v1alpha1",
        "kind": "LocalMesh",
        "name": "lanes",
        "clusters": [dict(c) for c in CLUSTERS],
        "workloads": workloads,
        "services": [{"name": s, "namespace": "default", "ports": [{"port": PORT, "name": "http", "protocol": "HTTP"}],
                      "selector": {"app": s}} for s in SERVICES],
        "config": list(yaml.safe_load_all(GATEWAY_CONFIG)),
    }


def lanes_manifest_yaml() -> str:
    return str(yaml.safe_dump(lanes_manifest(), sort_keys=False))
