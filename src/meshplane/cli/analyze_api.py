"""The management API of config analysis (``meshplane.analysis``), what ``meshplane analyze`` calls.

| method and path | what |
|---|---|
| ``GET /management/v1/analyze?namespace=NS`` | ``AnalysisResult``: the messages about the live config of ``NS``
  (absent or empty: every namespace), worst first |
| ``POST /management/v1/analyze`` | body ``{"namespace": NS, "defaultNamespace": "default", "objects": [{"object":
  {...}, "origin": "file.yaml"}]}``: the same, with those objects validated as the API would and merged over the
  live config (``istioctl analyze -f``); nothing is stored |

Each item: ``{"code", "name", "level" (Error|Warning|Info), "origin" ("VirtualService default/bookinfo"),
"reference"? (the file), "message", "resource": {"kind", "namespace", "name"}}``.

Why a management endpoint: the analysis needs the registry (services of member clusters, workload instances) the
server holds, and the snapshot translation used, which no client can rebuild from the API's objects alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from meshplane.analysis import AnalysisInput, Message, analyze
from meshplane.analysis.merge import Submitted, merged_input
from meshplane.apiserver.status import bad_request
from meshplane.model.config import ConfigSnapshot
from meshplane.model.service import RegistrySnapshot
from meshplane.model.spec import RESOURCES, ConfigObject, DecodeError, decode_resource
from meshplane.store.interface import Store

API_VERSION = "meshplane.io/v1"
MAX_OBJECTS = 5000

View = Callable[[], Awaitable[tuple[ConfigSnapshot, RegistrySnapshot]]]


def message_json(msg: Message) -> dict[str, Any]:
    r = msg.resource
    return {**msg.to_json(), "resource": {"kind": r.kind, "namespace": r.namespace, "name": r.name}}


def xds_view(config: Callable[[], ConfigSnapshot], registry: Callable[[], RegistrySnapshot],
             wait_idle: Callable[[], Awaitable[None]], *, idle_timeout_s: float = 5.0) -> View:
    """The snapshots the xDS server pushed, once what it has seen is pushed (at most ``idle_timeout_s``)."""
    async def view() -> tuple[ConfigSnapshot, RegistrySnapshot]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wait_idle(), idle_timeout_s)
        return config(), registry()

    return view


def store_view(store: Store) -> View:
    """Without an xDS server: the store's objects, decoded, and no registry beyond their ServiceEntries."""
    async def view() -> tuple[ConfigSnapshot, RegistrySnapshot]:
        objects: dict[Any, tuple[ConfigObject[Any], ...]] = {}
        rv = store.current_rv
        for gr in RESOURCES:
            items, rv = store.list(gr)
            decoded = []
            for o in items:
                with contextlib.suppress(DecodeError):
                    decoded.append(decode_resource(gr, o))
            if decoded:
                objects[gr] = tuple(decoded)
        return ConfigSnapshot(rv, objects), RegistrySnapshot()

    return view


def _result(namespace: str, messages: list[Message]) -> web.Response:
    return web.json_response({"kind": "AnalysisResult", "apiVersion": API_VERSION, "namespace": namespace,
                              "items": [message_json(m) for m in messages]})


def _submitted(body: Any) -> tuple[str, str, list[Submitted]]:
    if not isinstance(body, dict):
        raise bad_request("body: expected an object with 'objects'")
    ns = body.get("namespace") or ""
    default_ns = body.get("defaultNamespace") or "default"
    items = body.get("objects")
    if not isinstance(ns, str) or not isinstance(default_ns, str):
        raise bad_request("namespace, defaultNamespace: expected strings")
    if not isinstance(items, list):
        raise bad_request("objects: expected a list of {object, origin}")
    if len(items) > MAX_OBJECTS:
        raise bad_request(f"objects: at most {MAX_OBJECTS}, got {len(items)}")
    out = []
    for i, item in enumerate(items):
        obj = item.get("object") if isinstance(item, dict) else None
        origin = item.get("origin", "") if isinstance(item, dict) else ""
        if not isinstance(obj, dict) or not isinstance(origin, str):
            raise bad_request(f"objects[{i}]: expected {{object: {{...}}, origin: string}}")
        out.append(Submitted(obj, origin))
    return ns, default_ns, out


def analyze_routes(view: View, root_namespace: Callable[[], str],
                   live: Callable[[], Sequence[Message]] | None = None) -> list[web.RouteDef]:
    """``live``: messages about what the running proxies do with the config (EnvoyFilter patches Envoy rejects,
    ``xds.filterstatus``), added to the analyzers' about the live config."""
    def with_live(ns: str, messages: list[Message]) -> list[Message]:
        extra = [m for m in (live() if live is not None else ()) if not ns or m.resource.namespace == ns]
        return sorted([*messages, *extra], key=lambda m: m.sort_key) if extra else messages

    async def get(request: web.Request) -> web.Response:
        ns = request.query.get("namespace", "")
        config, registry = await view()
        return _result(ns, with_live(ns, analyze(AnalysisInput(config, registry), namespace=ns or None,
                                                 root_namespace=root_namespace())))

    async def post(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError as e:
            raise bad_request(f"body: not JSON: {e}") from e
        ns, default_ns, submitted = _submitted(body)
        config, registry = await view()
        inp = merged_input(config, registry, submitted, default_namespace=default_ns)
        return _result(ns, with_live(ns, analyze(inp, namespace=ns or None, root_namespace=root_namespace())))

    return [web.get("/management/v1/analyze", get), web.post("/management/v1/analyze", post)]


__all__ = ["analyze_routes", "message_json", "store_view", "xds_view"]
