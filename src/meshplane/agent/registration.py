"""Auto-registration: the instance's WorkloadEntry, created when its proxy is connected, marked unhealthy while its
readiness probe fails, deleted when it leaves (Istio's WorkloadGroup auto-registration and health checks).

Why through the Kubernetes-compatible HTTP API (``meshplane.client``): it is the same path every other client
takes (kubectl, controllers), so registration goes through validation, the store and the watch that feeds xDS,
and the agent needs no privileged channel into the control plane. Health is reported the way Istio does it: a
``Healthy`` condition in the WorkloadEntry's status (written through the ``/status`` subresource), which the
ServiceEntry registry turns into the endpoint's health status.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from meshplane.agent.config import AgentConfig
from meshplane.client import Client, Conflict, NotFound
from meshplane.model.peer import AGENT_WORKLOAD_LABEL

log = logging.getLogger(__name__)

CLUSTER_LABEL = "topology.istio.io/cluster"
WORKLOAD_LABEL = AGENT_WORKLOAD_LABEL
TLS_MODE_LABEL = "security.istio.io/tlsMode"  # "istio": this endpoint accepts ISTIO_MUTUAL (auto mTLS)
API_VERSION, KIND = "networking.istio.io/v1", "WorkloadEntry"
TIMEOUT_S = 5.0


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
        "apiVersion": API_VERSION,
        "kind": KIND,
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
    """Creates, updates the health of, and deletes one WorkloadEntry. Failures are ``meshplane.client`` errors."""

    def __init__(self, cfg: AgentConfig, api: Client) -> None:
        self.cfg = cfg
        self.api = api
        self.registered = False
        self.healthy: bool | None = None

    async def _delete(self) -> None:
        with contextlib.suppress(NotFound):  # gone already
            await self.api.delete(API_VERSION, KIND, self.cfg.name, self.cfg.namespace, timeout=TIMEOUT_S)

    async def register(self, healthy: bool) -> None:
        """Create the WorkloadEntry; one left by an earlier run of this instance (a crash) is replaced."""
        obj = workload_entry(self.cfg)
        obj["status"] = {"conditions": [health_condition(healthy)]}
        try:
            await self.api.create(obj, timeout=TIMEOUT_S)
        except Conflict:
            await self._delete()
            await self.api.create(obj, timeout=TIMEOUT_S)
        self.registered = True
        await self.set_health(healthy, force=True)
        log.info("registered WorkloadEntry %s/%s (%s)", self.cfg.namespace, self.cfg.name, self.cfg.address)

    async def set_health(self, healthy: bool, message: str = "", *, force: bool = False) -> None:
        """Write the Healthy condition when it changed (status subresource, JSON merge patch)."""
        if not self.registered or (self.healthy == healthy and not force):
            return
        patch = {"status": {"conditions": [health_condition(healthy, message)]}}
        await self.api.patch(API_VERSION, KIND, self.cfg.name, patch, self.cfg.namespace, subresource="status",
                             timeout=TIMEOUT_S)
        self.healthy = healthy
        log.info("WorkloadEntry %s/%s healthy=%s %s", self.cfg.namespace, self.cfg.name, healthy, message)

    async def deregister(self) -> None:
        if not self.registered:
            return
        await self._delete()
        self.registered = False
        log.info("deleted WorkloadEntry %s/%s", self.cfg.namespace, self.cfg.name)
