"""The demo mesh: a Bookinfo-shaped application on two clusters of one network (``meshplane demo up``), or of two
networks (``--networks 2``: cluster-2 on network-2, each network's east-west gateway carrying the calls between
them, as Istio's multi-primary-on-different-networks install).

Why it is laid out like Istio's Bookinfo (namespace ``default``, services on 9080, deployments named
``reviews-v1``..., service accounts ``bookinfo-*``, gateway ``istio-ingressgateway`` in ``istio-system`` with
label ``istio: ingressgateway``): Istio's Bookinfo task YAMLs then apply unchanged. cluster-1 runs reviews v1 and
v2, cluster-2 runs v1 and v3, so which versions answer shows locality and cross-cluster routing at a glance.
"""

from __future__ import annotations

from typing import Any

import yaml

CLUSTERS = (
    {"name": "cluster-1", "network": "network-1", "region": "region-1", "zone": "zone-a"},
    {"name": "cluster-2", "network": "network-1", "region": "region-1", "zone": "zone-b"},
)

SERVICES = ("productpage", "details", "reviews", "ratings")

# workload name -> (service, version, clusters)
WORKLOADS = (
    ("productpage-v1", "productpage", "v1", ("cluster-1", "cluster-2")),
    ("details-v1", "details", "v1", ("cluster-1", "cluster-2")),
    ("reviews-v1", "reviews", "v1", ("cluster-1", "cluster-2")),
    ("reviews-v2", "reviews", "v2", ("cluster-1",)),
    ("reviews-v3", "reviews", "v3", ("cluster-2",)),
    ("ratings-v1", "ratings", "v1", ("cluster-1", "cluster-2")),
)

# Istio's samples/bookinfo/networking/bookinfo-gateway.yaml (the objects it declares, in namespace default).
GATEWAY_CONFIG = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: default
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo
  namespace: default
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {exact: /productpage}
    - uri: {prefix: /static}
    - uri: {exact: /login}
    - uri: {exact: /logout}
    - uri: {prefix: /api/v1/products}
    route:
    - destination:
        host: productpage
        port: {number: 9080}
"""


def demo_manifest(networks: int = 1) -> dict[str, Any]:
    workloads: list[dict[str, Any]] = [{
        "name": "istio-ingressgateway",
        "namespace": "istio-system",
        "role": "gateway",
        "clusters": ["cluster-1", "cluster-2"],
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
            "labels": {"app": service, "version": version},
            "serviceAccount": f"bookinfo-{service}",
            "ports": [{"port": 9080, "name": "http", "protocol": "HTTP"}],
            "command": ["{python}", "-m", "meshplane.runtime.demoapp", "--service", service, "--version", version,
                        "--listen", "{listen}", "--cluster", "{cluster}", "--zone", "{zone}", "--instance", "{name}"],
            "readiness": {"httpGet": {"path": "/healthz"}},
        })
    return {
        "apiVersion": "meshplane.io/v1alpha1",
        "kind": "LocalMesh",
        "name": "bookinfo",
        "clusters": [dict(c, network=f"network-{min(i + 1, networks)}") for i, c in enumerate(CLUSTERS)],
        "mesh": {"eastWestGateways": networks > 1},
        "workloads": workloads,
        "services": [{"name": s, "namespace": "default", "ports": [{"port": 9080, "name": "http",
                                                                     "protocol": "HTTP"}],
                      "selector": {"app": s}} for s in SERVICES],
        "config": list(yaml.safe_load_all(GATEWAY_CONFIG)),
    }


def demo_manifest_yaml(networks: int = 1) -> str:
    return str(yaml.safe_dump(demo_manifest(networks), sort_keys=False))
