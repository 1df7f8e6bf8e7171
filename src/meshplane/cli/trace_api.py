"""The management API of the trace collector: recent traces and one trace's spans (``rpc.otlp``).

Why beside the Kubernetes-compatible API and not as API objects: spans arrive at request rates into a bounded
ring in memory; they are observations, not configuration. Both endpoints go through the API's authentication.

| method and path | what |
|---|---|
| ``GET /management/v1/traces?service=NAME&limit=N`` | ``TraceList``: the most recent traces, newest first (``limit``
  default 20, at most 1000), each ``{"traceId", "rootService", "rootName", "spans", "services", "startTimeUnixNano",
  "durationMs", "errors"}``; ``service``: only traces with a span of that workload |
| ``GET /management/v1/traces/{traceId}`` | ``Trace``: ``{"traceId", "spans": [...]}`` by start time, each span
  ``{"traceId", "spanId", "parentSpanId", "service", "name", "kind", "startTimeUnixNano", "endTimeUnixNano",
  "durationMs", "status", "attributes"}``; 404 when no span of it is kept |
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from meshplane.apiserver.status import ApiError, bad_request
from meshplane.rpc.otlp import SpanStore

API_VERSION = "meshplane.io/v1"
MAX_LIMIT = 1000
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "20")
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise bad_request(f"limit: must be an integer between 1 and {MAX_LIMIT}, got {text!r}")
    return int(text)


def trace_routes(store: SpanStore) -> list[web.RouteDef]:
    async def traces(request: web.Request) -> web.Response:
        items = store.traces(service=request.query.get("service", ""), limit=_limit(request))
        return web.json_response({"kind": "TraceList", "apiVersion": API_VERSION, "items": items})

    async def trace(request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"]
        if not _TRACE_ID.match(trace_id):
            raise bad_request(f"traceId: {trace_id!r} is not 32 hexadecimal digits")
        spans = store.trace(trace_id)
        if not spans:
            raise ApiError(404, "NotFound", f"trace {trace_id} not found (never received, or no longer kept)")
        return web.json_response({"kind": "Trace", "apiVersion": API_VERSION, "traceId": trace_id.lower(),
                                  "spans": [s.to_json() for s in spans]})

    return [web.get("/management/v1/traces", traces), web.get("/management/v1/traces/{trace_id}", trace)]


__all__ = ["trace_routes"]
