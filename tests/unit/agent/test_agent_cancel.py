"""The agent's background loops end cancelled when cancelled, also when ``stop`` is set in the same step.

Why: on Python 3.11 ``asyncio.wait_for`` returned the awaited result instead of raising when the cancel and the
result arrived in the same event-loop step (CPython gh-86296). These loops waited for ``stop`` that way, so a
cancel that met ``stop.set()`` was lost: the loop returned as if it had simply been stopped (or, had ``stop`` not
been set, ran on). Each case delivers both in one step on purpose, as tests/unit/kube/test_kube_cancel.py does
for the Kubernetes reflector, and expects the task to end cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from meshplane.agent.authzlog import AuthzLog
from meshplane.agent.certs import CertificateManager
from meshplane.agent.config import AgentConfig
from meshplane.agent.credentials import GatewayCredentials
from meshplane.agent.opa import OpaPolicies
from meshplane.client import Client
from meshplane.rpc.sds import SdsServer
from meshplane.security import SpiffeId

ME = "spiffe://cluster.local/ns/default/sa/web"

# (API client, tmp dir, stop, turned) -> the loop's coroutine; ``turned`` is set by the stubbed work of each turn,
# after which the loop's next await is its wait for ``stop``.
Case = Callable[[Client, Path, asyncio.Event, asyncio.Event], Coroutine[Any, Any, Any]]


def _cfg() -> AgentConfig:
    return AgentConfig.from_json({"name": "web", "namespace": "default", "workload": "web",
                                  "address": "127.0.0.1", "xds": "127.0.0.1:1", "api": "http://127.0.0.1:1",
                                  "policy_poll_s": 60})


def _certs() -> CertificateManager:
    # No CA is reached: every case stubs the issuing.
    return CertificateManager(SpiffeId("cluster.local", "default", "web"), None, "", SdsServer())  # type: ignore[arg-type]


def _authz_log(api: Client, tmp: Path, stop: asyncio.Event,
               turned: asyncio.Event) -> Coroutine[Any, Any, Any]:
    log = AuthzLog(_cfg(), api, tmp / "authz.log", ME)

    async def flush() -> None:
        turned.set()

    log.flush = flush  # type: ignore[method-assign]
    return log.run(stop, period_s=60)


def _credentials(api: Client, tmp: Path, stop: asyncio.Event,
                 turned: asyncio.Event) -> Coroutine[Any, Any, Any]:
    creds = GatewayCredentials(_cfg(), api, SdsServer())

    async def refresh() -> list[str]:
        turned.set()
        return []

    creds.refresh = refresh  # type: ignore[method-assign]
    return creds.run(stop)


def _opa(api: Client, tmp: Path, stop: asyncio.Event,
         turned: asyncio.Event) -> Coroutine[Any, Any, Any]:
    opa = OpaPolicies(_cfg(), api, ME)

    async def refresh() -> None:
        turned.set()

    opa.refresh = refresh  # type: ignore[method-assign]
    return opa.run(stop)


def _certs_obtain(api: Client, tmp: Path, stop: asyncio.Event,
                  turned: asyncio.Event) -> Coroutine[Any, Any, Any]:
    mgr = _certs()

    async def try_issue() -> bool:  # the CA refuses: obtain waits its backoff for stop
        turned.set()
        return False

    mgr._try_issue = try_issue  # type: ignore[method-assign]
    return mgr.obtain(stop)


def _certs_run(api: Client, tmp: Path, stop: asyncio.Event,
               turned: asyncio.Event) -> Coroutine[Any, Any, Any]:
    mgr = _certs()

    async def follow_bundle() -> bool:  # each turn polls the trust bundle first
        turned.set()
        return False

    async def bundle() -> bytes:
        return b""

    mgr._bundle_source = bundle
    mgr.bundle_poll_s = 60
    mgr._follow_bundle = follow_bundle  # type: ignore[method-assign]
    return mgr.run(stop)


CASES: dict[str, Case] = {"authz-log": _authz_log, "gateway-credentials": _credentials, "opa": _opa,
                          "certs-obtain": _certs_obtain, "certs-run": _certs_run}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_a_cancel_arriving_with_stop_ends_the_loop_cancelled(case: Case, tmp_path: Path) -> None:
    async with Client(_cfg().api) as api:
        stop, turned = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(case(api, tmp_path, stop, turned))
        await asyncio.wait_for(turned.wait(), 5)  # the loop now waits for stop
        # Stop and the cancel in one step.
        stop.set()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        if not done:
            task.cancel()
        assert done, "the loop did not end after being cancelled"
        assert task.cancelled(), "the cancel was lost: the loop returned as if only stopped"


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_stop_alone_still_ends_the_loop(case: Case, tmp_path: Path) -> None:
    async with Client(_cfg().api) as api:
        stop, turned = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(case(api, tmp_path, stop, turned))
        await asyncio.wait_for(turned.wait(), 5)
        stop.set()
        done, _ = await asyncio.wait([task], timeout=5)
        if not done:
            task.cancel()
        assert done and not task.cancelled() and task.exception() is None
