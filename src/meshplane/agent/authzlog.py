"""Envoy's own authorization decisions (RBAC deny and dry-run shadow deny) into the security audit trail.

Why the agent: the decisions are made inside Envoy, which writes them (and only them) as JSON lines to a file
under the instance dir that the agent names in node metadata ``AUTHZ_LOG`` (``translate.accesslog``). The agent
tails that file and reports each decision to ``POST /management/v1/security/audit`` as ``authz.deny`` or
``authz.shadow_deny`` with the caller's SPIFFE id (from the mTLS handshake), this workload's id, method, path and
policy, several per request (``{"items": [...]}``) so a burst of denies costs one request per tick, not one each.
Each report carries the agent's bootstrap token (``X-Bootstrap-Token``): the API records only events a workload
reports about itself, so nobody can forge another workload's audit records.
A bounded backlog drops (and counts) what the control plane cannot take; the file is truncated once read
past ``MAX_FILE_BYTES`` so it never grows without bound. Envoy's 403s from anything but RBAC (ext_authz/OPA
reports itself, applications) are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from meshplane.agent.config import AgentConfig
from meshplane.agent.waits import pause
from meshplane.client import Client, ClientError, Refused

log = logging.getLogger(__name__)

DENIED = re.compile(r"^rbac_access_denied_matched_policy\[(.*)\]$")
BATCH = 200
BACKLOG = 5000
MAX_FILE_BYTES = 8 * 1024 * 1024
TIMEOUT_S = 3.0


def decisions(entry: dict[str, Any], identity: str, workload: str) -> list[dict[str, Any]]:
    """The audit reports of one access log line (none, one enforced deny, and/or shadow denies)."""
    out: list[dict[str, Any]] = []
    base = {"method": str(entry.get("method") or ""), "path": str(entry.get("path") or ""), "workload": workload,
            "source": str(entry.get("source") or "")}
    principal = str(entry.get("principal") or "")
    details = str(entry.get("details") or "")
    m = DENIED.match(details)
    if str(entry.get("code")) == "403" and (m or details.startswith("rbac_access_denied")):
        policy = m.group(1) if m else "none"
        out.append({"kind": "authz.deny", "subject": principal, "target": identity,
                    "reason": f"denied by {policy}", "details": {**base, "policy": policy, "dryRun": "false"}})
    for action in ("deny", "allow"):
        if entry.get(f"{action}ShadowResult") == "denied":
            policy = str(entry.get(f"{action}ShadowPolicy") or "none")
            out.append({"kind": "authz.shadow_deny", "subject": principal, "target": identity,
                        "reason": f"would be denied by {policy} (dry run)",
                        "details": {**base, "policy": policy, "dryRun": "true", "action": action.upper()}})
    return out


class AuthzLog:
    def __init__(self, cfg: AgentConfig, api: Client, path: Path, identity: str) -> None:
        self.cfg, self.api, self.path, self.identity = cfg, api, path, identity
        self.workload = f"{cfg.namespace}/{cfg.name}"
        self._offset = 0
        self._partial = b""
        self.backlog: list[dict[str, Any]] = []
        self.reported = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"AuthzLog({self.path}, reported={self.reported}, dropped={self.dropped})"

    def prepare(self) -> None:
        """An empty file before Envoy opens it (decisions of an earlier run were reported by that run)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")
        self.path.chmod(0o600)

    def read_new(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self._offset:  # truncated (by us, or recreated): start over
            self._offset, self._partial = 0, b""
        if size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(size - self._offset)
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        out: list[dict[str, Any]] = []
        for line in lines:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out += decisions(entry, self.identity, self.workload)
        if self._offset > MAX_FILE_BYTES and not self._partial:
            with open(self.path, "r+b") as f:  # Envoy appends (O_APPEND): it writes at the new end
                f.truncate(0)
            self._offset = 0
        return out

    async def flush(self) -> None:
        new = self.read_new()
        room = BACKLOG - len(self.backlog)
        if len(new) > room:
            self.dropped += len(new) - max(room, 0)
            new = new[:max(room, 0)]
        self.backlog += new
        while self.backlog:
            batch = self.backlog[:BATCH]
            try:
                await self.api.report_security_events(batch, bootstrap_token=self.cfg.ca_token, timeout=TIMEOUT_S)
            except Refused as e:
                log.warning("authz audit reports refused: %s", e)
                if 400 <= e.code < 500:
                    self.dropped += len(batch)  # they will not be taken later either
                    del self.backlog[:BATCH]
                return
            self.reported += len(batch)
            del self.backlog[:BATCH]

    async def run(self, stop: asyncio.Event, period_s: float = 0.5) -> None:
        while not stop.is_set():
            try:
                await self.flush()
            except ClientError as e:
                log.debug("authz audit reports: %s (kept for the next tick)", e)
            await pause(stop, period_s)
        with contextlib.suppress(ClientError):
            await self.flush()  # what Envoy wrote before it stopped
