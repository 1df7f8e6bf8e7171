"""A small external authorizer behaving as Istio's ext-authz sample, over HTTP and gRPC, for the CUSTOM e2e.

Behaviour (what Istio's ext-authz task relies on): a request carrying ``x-ext-authz: allow`` is allowed; any other
is denied with 403 and the body ``denied by ext_authz for not found header `x-ext-authz: allow` in the request``.
Both answers carry ``x-ext-authz-check-result: allowed|denied``. The HTTP server answers every path (Envoy's
``http_service`` sends the original path after ``pathPrefix``); the gRPC server implements
``envoy.service.auth.v3.Authorization/Check``. Every check is recorded (path, the headers received) so a test can
see what Envoy sent. Our own code, written for these tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped,unused-ignore]

HEADER = "x-ext-authz"
ALLOW = "allow"
RESULT = "x-ext-authz-check-result"
DENY_BODY = f"denied by ext_authz for not found header `{HEADER}: {ALLOW}` in the request"
SERVICE = "envoy.service.auth.v3.Authorization"


@dataclass
class Check:
    protocol: str
    path: str
    headers: dict[str, str]
    allowed: bool


@dataclass
class ExtAuthzSample:
    host: str
    http_port: int = 8000
    grpc_port: int = 9000
    checks: list[Check] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _grpc: grpc.aio.Server | None = None

    async def start(self) -> ExtAuthzSample:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._http_check)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.http_port).start()
        self._grpc = grpc.aio.server()
        self._grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(
                self._grpc_check, request_deserializer=external_auth_pb2.CheckRequest.FromString,
                response_serializer=external_auth_pb2.CheckResponse.SerializeToString)}),))
        self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
        await self._grpc.start()
        return self

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(0.2)
            self._grpc = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _http_check(self, request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        allowed = headers.get(HEADER) == ALLOW
        self.checks.append(Check("http", request.path_qs, headers, allowed))
        if allowed:
            return web.Response(status=200, headers={RESULT: "allowed"})
        return web.Response(status=403, text=DENY_BODY, headers={RESULT: "denied"})

    async def _grpc_check(self, req: external_auth_pb2.CheckRequest,
                          context: grpc.aio.ServicerContext[Any, Any]) -> external_auth_pb2.CheckResponse:
        http = req.attributes.request.http
        headers = {k.lower(): v for k, v in http.headers.items()}
        allowed = headers.get(HEADER) == ALLOW
        self.checks.append(Check("grpc", http.path, headers, allowed))
        result = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=RESULT,
                                                                        value="allowed" if allowed else "denied"))
        if allowed:
            resp = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
            resp.ok_response.headers.append(result)
            return resp
        resp = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED))
        resp.denied_response.status.code = http_status_pb2.Forbidden
        resp.denied_response.body = DENY_BODY
        resp.denied_response.headers.append(result)
        return resp
