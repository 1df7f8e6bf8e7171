"""The agent's API calls through meshplane.client against the real API server (in process, 127.0.0.1):
registration replaces an entry left by a crash, writes health through the status subresource, and deletes twice
without error; authorization reports refused with 4xx are dropped, with 5xx kept for the next tick."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from meshplane.agent.authzlog import AuthzLog
from meshplane.agent.config import AgentConfig
from meshplane.agent.registration import Registration, workload_entry
from meshplane.client import Client, NotFound
from tests.support.server import in_process_api

TOKEN = "agent-token"
WE = ("networking.istio.io/v1", "WorkloadEntry")


@pytest.fixture
async def api() -> AsyncIterator[str]:
    async with in_process_api({TOKEN: "agent"}) as url:
        yield url


def _cfg(api: str) -> AgentConfig:
    return AgentConfig.from_json({"name": "web-0", "namespace": "default", "workload": "web",
                                  "address": "127.0.0.7", "xds": "127.0.0.1:1", "api": api, "api_token": TOKEN})


def _healthy(obj: dict[str, object]) -> str:
    (cond,) = obj["status"]["conditions"]  # type: ignore[index]
    return str(cond["status"])


async def test_register_replaces_a_leftover_and_follows_health(api: str) -> None:
    cfg = _cfg(api)
    async with Client(cfg.api, token=cfg.api_token) as c:
        leftover = workload_entry(cfg)
        leftover["spec"]["address"] = "127.0.0.99"  # an earlier run of this instance, killed hard
        await c.create(leftover)
        reg = Registration(cfg, c)
        await reg.register(healthy=False)
        live = await c.get(*WE, "web-0")
        assert live["spec"]["address"] == "127.0.0.7" and _healthy(live) == "False"
        await reg.set_health(True, "ok")
        assert _healthy(await c.get(*WE, "web-0")) == "True"
        await reg.deregister()
        with pytest.raises(NotFound):
            await c.get(*WE, "web-0")
        reg.registered = True
        await reg.deregister()  # already gone: not an error


class _Audit:
    def __init__(self, status: int) -> None:
        self.status = status
        self.posts = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        return web.json_response({"kind": "Status", "message": "no", "reason": "X", "code": self.status},
                                 status=self.status)


@pytest.mark.parametrize(("status", "kept"), [(400, 0), (503, 1)])
async def test_refused_authz_reports_are_dropped_only_when_the_api_will_never_take_them(
        tmp_path: Path, status: int, kept: int) -> None:
    fake = _Audit(status)
    app = web.Application()
    app.router.add_post("/management/v1/security/audit", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with Client(url) as c:
            log = AuthzLog(_cfg(url), c, tmp_path / "authz.log", "spiffe://cluster.local/ns/default/sa/web")
            log.prepare()
            with open(log.path, "a") as f:
                f.write(json.dumps({"code": "403", "details": "rbac_access_denied_matched_policy[p]"}) + "\n")
            await log.flush()
            assert fake.posts == 1 and len(log.backlog) == kept and log.dropped == 1 - kept and log.reported == 0
    finally:
        await runner.cleanup()
