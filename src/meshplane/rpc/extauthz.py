"""An Envoy ext_authz gRPC server (``envoy.service.auth.v3.Authorization/Check``) with the decision injected.

Why in ``meshplane.rpc``: a gRPC service that Envoy calls, not part of xDS. The agent hosts this server on a Unix
socket next to its Envoy and injects the decision function (``meshplane.security.opa.PolicySet.decide`` over the
ASMOPAPolicies selecting the workload); tests inject anything. The server turns a ``CheckRequest`` into OPA-Envoy's
input (the caller's SPIFFE principal that Envoy took from the client certificate, method, path, host, headers),
answers OK or PERMISSION_DENIED with an HTTP 403, and hands every deny to ``on_deny`` (the audit trail).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped,unused-ignore]

from meshplane.rpc._serve import serve
from meshplane.security.opa import Decision, opa_input

log = logging.getLogger(__name__)

SERVICE = "envoy.service.auth.v3.Authorization"
Decide = Callable[[Mapping[str, Any]], Decision]
OnDeny = Callable[[Mapping[str, Any], Decision], None]


def check_input(req: external_auth_pb2.CheckRequest) -> dict[str, Any]:
    a = req.attributes
    http = a.request.http
    sock = a.source.address.socket_address
    return opa_input(principal=a.source.principal, source_address=f"{sock.address}:{sock.port_value}" if
                     sock.address else "", method=http.method, path=http.path, host=http.host,
                     headers=dict(http.headers), destination_principal=a.destination.principal)


class ExtAuthzServer:
    def __init__(self, decide: Decide, on_deny: OnDeny | None = None) -> None:
        self.decide = decide
        self.on_deny = on_deny
        self._server: grpc.aio.Server | None = None
        self.checks = 0
        self.denied = 0

    def generic_handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(
                self._check, request_deserializer=external_auth_pb2.CheckRequest.FromString,
                response_serializer=external_auth_pb2.CheckResponse.SerializeToString),
        })

    async def _check(self, req: external_auth_pb2.CheckRequest,
                     context: grpc.aio.ServicerContext[Any, Any]) -> external_auth_pb2.CheckResponse:
        self.checks += 1
        doc = check_input(req)
        try:
            decision = self.decide(doc)
        except Exception as e:  # a broken policy never opens the door
            log.exception("ext_authz decision failed")
            decision = Decision(False, "", f"evaluation failed: {type(e).__name__}")
        if decision.allowed:
            return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))
        self.denied += 1
        if self.on_deny is not None:
            try:
                self.on_deny(doc, decision)
            except Exception:
                log.exception("recording an OPA deny failed")
        resp = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED,
                                                                        message=decision.reason))
        resp.denied_response.status.code = http_status_pb2.Forbidden
        resp.denied_response.body = "RBAC: access denied (OPA)"
        return resp

    async def start(self, address: str) -> int:
        """Serve on ``address`` (``unix:/path/extauthz.sock`` next to a sidecar; ``127.0.0.1:0`` in tests)."""
        self._server, port = await serve(self.generic_handler(), address, "ext_authz server")
        return port

    async def stop(self, grace: float = 0.2) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
