"""Admission through the real API server (in process, memory store, 127.0.0.1): the semantic rules judge the typed
spec, a retry policy without attempts is refused as Istio's webhook refuses it, every undecodable field is named in
one 422, and a refused object is not stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.server import in_process_api

TOKEN = "admission-test-token"
PATH = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"


@pytest.fixture
async def api() -> AsyncIterator[str]:
    async with in_process_api({TOKEN: "admin"}) as url:
        yield url


def _vs(name: str, **http: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}], **http}]}}


async def _post(url: str, obj: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s, s.post(url + PATH, json=obj) as resp:
        return resp.status, await resp.json()


async def _stored(url: str, name: str) -> int:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s, s.get(f"{url}{PATH}/{name}") as resp:
        return resp.status


async def test_per_try_timeout_without_attempts_is_refused_naming_the_field(api: str) -> None:
    status, body = await _post(api, _vs("no-attempts", retries={"perTryTimeout": "1s"}))
    assert status == 422, body
    causes = body["details"]["causes"]
    assert {"field": "spec.http[0].retries.attempts", "reason": "FieldValueInvalid",
            "message": "Invalid value: 0: http retry policy configured when attempts are set to 0 (disabled)"} in causes
    assert await _stored(api, "no-attempts") == 404


async def test_with_attempts_it_is_stored(api: str) -> None:
    status, body = await _post(api, _vs("with-attempts", retries={"attempts": 2, "perTryTimeout": "1s"}))
    assert status == 201, body
    assert await _stored(api, "with-attempts") == 200


async def test_every_undecodable_duration_is_named_in_one_answer(api: str) -> None:
    status, body = await _post(api, _vs("durations", timeout="5", fault={"delay": {"fixedDelay": "7s,"}}))
    assert status == 422, body
    fields = sorted((c["field"], c["reason"]) for c in body["details"]["causes"])
    assert fields == [("spec.http[0].fault.delay.fixedDelay", "FieldValueInvalid"),
                      ("spec.http[0].timeout", "FieldValueInvalid")]
    assert await _stored(api, "durations") == 404
