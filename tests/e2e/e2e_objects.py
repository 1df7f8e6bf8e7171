"""Istio objects as the store holds them, for e2e tests (plain JSON, like kubectl would send)."""

from __future__ import annotations

from typing import Any

NET = "networking.istio.io"


def service_entry(name: str, host: str, *, port: int = 80, namespace: str = "default",
                  selector: dict[str, str] | None = None, endpoints: list[dict[str, Any]] | None = None,
                  annotations: dict[str, str] | None = None, protocol: str = "HTTP") -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": [host], "ports": [{"number": port, "name": f"http-{port}",
                                                        "protocol": protocol}],
                            "location": "MESH_INTERNAL", "resolution": "STATIC"}
    if selector is not None:
        spec["workloadSelector"] = {"labels": selector}
    if endpoints is not None:
        spec["endpoints"] = endpoints
    md: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        md["annotations"] = annotations
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": md, "spec": spec}


def workload_entry(name: str, address: str, labels: dict[str, str], *, ports: dict[str, int] | None = None,
                   namespace: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {"address": address, "labels": labels}
    if ports:
        spec["ports"] = ports
    return {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def virtual_service(name: str, hosts: list[str], http: list[dict[str, Any]], *, namespace: str = "default",
                    gateways: list[str] | None = None, tls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": hosts}
    if http:
        spec["http"] = http
    if tls:
        spec["tls"] = tls
    if gateways:
        spec["gateways"] = gateways
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def destination_rule(name: str, host: str, *, subsets: list[dict[str, Any]] | None = None,
                     traffic_policy: dict[str, Any] | None = None, namespace: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host}
    if subsets:
        spec["subsets"] = subsets
    if traffic_policy:
        spec["trafficPolicy"] = traffic_policy
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def gateway(name: str, servers: list[dict[str, Any]], selector: dict[str, str], *,
            namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": selector, "servers": servers}}
