"""Auto-registration: the instance's WorkloadEntry, created when its proxy is connected, marked unhealthy while its
readiness probe fails, deleted when it leaves (Istio's WorkloadGroup auto-registration and health checks).

Why through the Kubernetes-compatible HTTP API with a plain HTTP client: it is the same path every other client
takes (kubectl, controllers), so registration goes through validation, the store and the watch that feeds xDS,
and the agent needs no privileged channel into the control plane. Health is reported the way Istio does it: a
``Healthy`` condition in the WorkloadEntry's status (written through the ``/status`` subresource), which the
ServiceEntry registry turns into the endpoint's health status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from meshplane.agent.config import AgentConfig

log = logging.getLogger(__name__)

CLUSTER_LABEL = "topology.istio.io/cluster"
WORKLOAD_LABEL = "meshplane.io/workload"
TLS_MODE_LABEL = "security.istio.io/tlsMode"  # "istio": this endpoint accepts ISTIO_MUTUAL (auto mTLS)
GROUP_PATH = "/apis/networking.istio.io/v1"


class RegistrationError(Exception):
    """The API refused a registration request; the message carries the API's status and reason."""


def workload_entry(cfg: AgentConfig) -> dict[str, Any]:
    """The WorkloadEntry describing this instance (labels carry the cluster, as Istio's topology label)."""
    labels = dict(cfg.labels)
    labels.setdefault(CLUSTER_LABEL, cfg.cluster)
    labels.setdefault(WORKLOAD_LABEL, cfg.workload)
    if cfg.ca:
        labels[TLS_MODE_LABEL] = "istio"  # the agent serves a mesh certificate to this Envoy
    spec: dict[str, Any] = {
        "address": cfg.address,
        "labels": labels,
        "serviceAccount": cfg.service_account,
    }
    if cfg.ports:
        spec["ports"] = {p.name or f"port-{p.port}": p.port for p in cfg.ports}
    if cfg.network:
        spec["network"] = cfg.network
    if cfg.locality:
        spec["locality"] = cfg.locality
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {
            "name": cfg.name,
            "namespace": cfg.namespace,
            "labels": {CLUSTER_LABEL: cfg.cluster, WORKLOAD_LABEL: cfg.workload},
            "annotations": {"meshplane.io/registered-by": "meshplane-agent", "meshplane.io/node-id": cfg.node_id},
        },
        "spec": spec,
    }


def health_condition(healthy: bool, message: str = "") -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "type": "Healthy",
        "status": "True" if healthy else "False",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": "" if healthy else "ReadinessProbeFailed",
        "message": message,
    }


class Registration:
    """Creates, updates the health of, and deletes one WorkloadEntry."""

    def __init__(self, cfg: AgentConfig, session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        self.session = session
        base = cfg.api.rstrip("/")
        self.collection = f"{base}{GROUP_PATH}/namespaces/{cfg.namespace}/workloadentries"
        self.item = f"{self.collection}/{cfg.name}"
        self.registered = False
        self.healthy: bool | None = None

    def _headers(self, content_type: str = "application/json") -> dict[str, str]:
        h = {"Content-Type": content_type, "Accept": "application/json"}
        if self.cfg.api_token:
            h["Authorization"] = f"Bearer {self.cfg.api_token}"
        return h

    async def _call(self, method: str, url: str, body: Mapping[str, Any] | None = None,
                    content_type: str = "application/json", ok: tuple[int, ...] = (200, 201)) -> int:
        async with self.session.request(method, url, json=body, headers=self._headers(content_type),
                                        timeout=aiohttp.ClientTimeout(total=5)) as r:
            if r.status not in ok:
                text = await r.text()
                raise RegistrationError(f"{method} {url}: HTTP {r.status}: {text[:300]}")
            return r.status

    async def register(self, healthy: bool) -> None:
        """Create the WorkloadEntry; one left by an earlier run of this instance (a crash) is replaced."""
        obj = workload_entry(self.cfg)
        obj["status"] = {"conditions": [health_condition(healthy)]}
        status = await self._call("POST", self.collection, obj, ok=(200, 201, 409))
        if status == 409:
            await self._call("DELETE", self.item, ok=(200, 202, 404))
            await self._call("POST", self.collection, obj)
        self.registered = True
        await self.set_health(healthy, force=True)
        log.info("registered WorkloadEntry %s/%s (%s)", self.cfg.namespace, self.cfg.name, self.cfg.address)

    async def set_health(self, healthy: bool, message: str = "", *, force: bool = False) -> None:
        """Write the Healthy condition when it changed (status subresource, JSON merge patch)."""
        if not self.registered or (self.healthy == healthy and not force):
            return
        patch = {"status": {"conditions": [health_condition(healthy, message)]}}
        await self._call("PATCH", self.item + "/status", patch, content_type="application/merge-patch+json")
        self.healthy = healthy
        log.info("WorkloadEntry %s/%s healthy=%s %s", self.cfg.namespace, self.cfg.name, healthy, message)

    async def deregister(self) -> None:
        if not self.registered:
            return
        await self._call("DELETE", self.item, ok=(200, 202, 404))
        self.registered = False
        log.info("deleted WorkloadEntry %s/%s", self.cfg.namespace, self.cfg.name)
