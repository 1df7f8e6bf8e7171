"""A gateway's TLS credentials (``credentialName``): fetched from the control plane, served to Envoy over the
agent's local SDS.

Why the agent and not SDS over ADS: the gateway's listeners already name ``kubernetes://<credentialName>`` on the
``sds-grpc`` cluster (``translate.gateway``), the agent's SDS server already pushes secrets and follows their
ACKs, and the agent holds the one credential that proves which workload it is (its bootstrap token, bound to a
namespace and service account). The control plane hands key material only to that token, only Secrets of the
token's namespace, only those a Gateway names (``GET /management/v1/gateway-credentials``), so a private key
never travels on the xDS stream every proxy reads (which identifies nodes by a self-declared id). The agent polls
every ``policy_poll_s``; a changed Secret reaches Envoy as a new SDS version (Envoy swaps the certificate without
dropping the listener). Key material is kept in memory only, never logged or written to the status file.
"""

from __future__ import annotations

import asyncio
import logging

from meshplane.agent.config import AgentConfig
from meshplane.agent.waits import pause
from meshplane.client import Client, ClientError
from meshplane.rpc.sds import SdsServer

log = logging.getLogger(__name__)

TIMEOUT_S = 3.0

SDS_PREFIX = "kubernetes://"


class GatewayCredentials:
    def __init__(self, cfg: AgentConfig, api: Client, sds: SdsServer) -> None:
        self.cfg, self.api, self.sds = cfg, api, sds
        self.names: list[str] = []
        self.failures = 0

    def __repr__(self) -> str:
        return f"GatewayCredentials(names={self.names})"

    async def refresh(self) -> list[str]:
        """Fetch and push; the changed SDS names. A failure is a ``meshplane.client`` error."""
        secrets: dict[str, tuple[bytes, bytes, bytes]] = {}
        for item in await self.api.gateway_credentials(self.cfg.ca_token, timeout=TIMEOUT_S):
            name = str(item.get("name") or "")
            if name:
                secrets[SDS_PREFIX + name] = (str(item.get("certificateChain") or "").encode(),
                                              str(item.get("privateKey") or "").encode(),
                                              str(item.get("caCertificate") or "").encode())
        self.names = sorted(secrets)
        changed = self.sds.set_tls_secrets(secrets)
        if changed:
            log.info("gateway credentials updated: %s", ", ".join(changed))  # names only
        return changed

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
                self.failures = 0
            except ClientError as e:  # never the answer of success (key material) in it: see meshplane.client
                self.failures += 1
                if self.failures in (1, 10) or self.failures % 100 == 0:
                    log.warning("gateway credentials: %s (keeping the current ones)", e)
            await pause(stop, self.cfg.policy_poll_s)
