"""OPA next to the workload: the ASMOPAPolicies selecting this instance, compiled and evaluated for Envoy's ext_authz.

Why in the agent: ASM evaluates OPA policies beside the workload, so a decision costs no network hop and a policy
applies to exactly the instances its ``workloadSelector`` picks. The agent reads the namespace's ASMOPAPolicies
through the API every ``policy_poll_s`` (a list is cheap; the object set changes rarely), recompiles when their
resourceVersions change, and answers checks from the ext_authz server (``meshplane.rpc.extauthz``) with the current
set. Every deny is reported to the control plane's security audit trail (``opa.deny`` with the caller's SPIFFE
id, this workload's id, method and path) from a bounded queue, so a flood of denies never blocks a check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from meshplane.agent.config import AgentConfig
from meshplane.agent.waits import pause
from meshplane.client import Client, ClientError, Refused
from meshplane.security.opa import Decision, PolicySet, RegoError, resolve_policies, selects

log = logging.getLogger(__name__)

API_VERSION, KIND = "istio.alibabacloud.com/v1", "ASMOPAPolicy"
TIMEOUT_S = 3.0


def _references(policy: Mapping[str, Any]) -> bool:
    """Whether a policy uses a shared Rego (``policyRegoID`` without ``policy`` of its own)."""
    spec = policy.get("spec") or {}
    return bool(spec.get("policyRegoID")) and not str(spec.get("policy") or "").strip()


class _DenyAll(PolicySet):
    """What a policy that cannot be compiled becomes: nothing passes (``default allow = false``)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def __len__(self) -> int:
        return 1

    def decide(self, request: Mapping[str, Any]) -> Decision:
        return Decision(False, "", self.reason)


class OpaPolicies:
    def __init__(self, cfg: AgentConfig, api: Client, identity: str) -> None:
        self.cfg = cfg
        self.api = api
        self.identity = identity
        self.policies = PolicySet()
        self.version: tuple[tuple[str, str, str], ...] = ()
        self._reports: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        self.dropped = 0

    def decide(self, request: Mapping[str, Any]) -> Decision:
        return self.policies.decide(request)

    def on_deny(self, request: Mapping[str, Any], decision: Decision) -> None:
        http = request.get("attributes", {}).get("request", {}).get("http", {})
        principal = str(request.get("attributes", {}).get("source", {}).get("principal") or "")
        event = {"kind": "opa.deny", "subject": principal, "target": self.identity, "reason": decision.reason,
                 "details": {"policy": decision.policy, "method": str(http.get("method", "")),
                             "path": str(http.get("path", "")), "workload": f"{self.cfg.namespace}/{self.cfg.name}"}}
        log.info("OPA denied %s %s from %s (%s)", http.get("method"), http.get("path"), principal or "?",
                 decision.policy)
        try:
            self._reports.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def refresh(self) -> None:
        """Read the namespace's policies and recompile when they changed; a failure (a ``meshplane.client`` error)
        keeps the current ones."""
        items = await self.api.list(API_VERSION, KIND, self.cfg.namespace, timeout=TIMEOUT_S)
        mine = sorted((o for o in items if selects(o, self.cfg.namespace, self.cfg.labels)),
                      key=lambda o: str(o["metadata"]["name"]))
        root: list[dict[str, Any]] = []
        if self.cfg.namespace != self.cfg.root_namespace and any(_references(o) for o in mine):
            root = await self.api.list(API_VERSION, KIND, self.cfg.root_namespace, timeout=TIMEOUT_S)
        shared = [o for o in [*items, *root] if (o.get("spec") or {}).get("policyRegoID")]
        version = tuple((str(o["metadata"].get("namespace", "")), str(o["metadata"]["name"]),
                         str(o["metadata"].get("resourceVersion", ""))) for o in [*mine, *shared])
        if version == self.version:
            return
        try:
            self.policies = PolicySet(resolve_policies(mine, items, root))
        except RegoError as e:
            log.error("OPA policies for %s: %s; denying every request until fixed", self.cfg.name, e)
            self.policies = _DenyAll(str(e))
        self.version = version
        log.info("OPA policies for %s: %s", self.cfg.name, [str(o["metadata"]["name"]) for o in mine] or "none")

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the policies current and send deny reports, until ``stop``."""
        sender = asyncio.create_task(self._send_reports())
        try:
            while not stop.is_set():
                try:
                    await self.refresh()
                except ClientError as e:
                    log.debug("OPA policies: %s", e)
                await pause(stop, self.cfg.policy_poll_s)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send_reports(self) -> None:
        while True:
            event = await self._reports.get()
            try:
                await self.api.report_security_events([event], bootstrap_token=self.cfg.ca_token,
                                                      timeout=TIMEOUT_S)
            except Refused as e:
                log.warning("audit report refused: %s", e)
            except ClientError as e:
                log.warning("audit report not sent: %s", e)
