"""The management API of the zero-trust parts: bootstrap tokens, the security audit trail and the trust bundle.

Why these endpoints live beside the Kubernetes-compatible API and not as API objects: a bootstrap token is a
credential (returned once, never stored: only its HMAC key exists, next to the CA), audit events come at run-time
rates into a bounded ring, and the trust bundle is derived from the CA's files. All of them go through the API's
authentication middleware like every other request.

| method and path | what |
|---|---|
| ``POST /management/v1/tokens`` ``{"namespace", "serviceAccount", "ttlSeconds"?}`` | a bootstrap token (201) |
| ``GET /management/v1/security/audit?since=SEQ&kind=PREFIX&limit=N`` | ``SecurityAuditEventList`` |
| ``POST /management/v1/security/audit`` ``{"kind", "subject", "target", "reason", "details"}`` | an agent reports
  an authorization decision (kinds ``authz.*`` and ``opa.*`` only) |
| ``GET /management/v1/trust-bundle`` | ``{"trustDomain", "pem"}``: every root workloads should trust now |
| ``POST /management/v1/ca/rotate-root`` ``{"overlapSeconds"}`` | new root and intermediate; the old root stays
  in the bundle for the overlap |
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from meshplane.apiserver.status import bad_request
from meshplane.security import InvalidIdentity
from meshplane.xds.ca_service import SecurityPlane

MAX_TOKEN_TTL = datetime.timedelta(days=30)
DEFAULT_TOKEN_TTL = datetime.timedelta(hours=24)
REPORTABLE = ("authz.", "opa.")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as e:
        raise bad_request("the body must be a JSON object") from e
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise bad_request(f"{what} must be an integer") from e


def security_routes(plane: SecurityPlane) -> list[web.RouteDef]:
    async def tokens(request: web.Request) -> web.Response:
        body = await _body(request)
        ns, sa = body.get("namespace"), body.get("serviceAccount")
        if not isinstance(ns, str) or not isinstance(sa, str) or not ns or not sa:
            raise bad_request("namespace and serviceAccount are required strings")
        ttl = DEFAULT_TOKEN_TTL
        if body.get("ttlSeconds") is not None:
            seconds = _int(body["ttlSeconds"], "ttlSeconds")
            if seconds <= 0:
                raise bad_request("ttlSeconds must be positive")
            ttl = min(datetime.timedelta(seconds=seconds), MAX_TOKEN_TTL)
        try:
            token, expires = plane.issue_token(ns, sa, ttl, requested_by=str(request.get("user", "")))
        except InvalidIdentity as e:
            raise bad_request(str(e)) from e
        return web.json_response({
            "kind": "BootstrapToken", "apiVersion": "meshplane.io/v1", "namespace": ns, "serviceAccount": sa,
            "spiffeId": plane.ca.identity(ns, sa).uri, "token": token,
            "expiresAt": expires.isoformat(timespec="seconds")}, status=201)

    async def audit(request: web.Request) -> web.Response:
        since = _int(request.query.get("since", "0") or 0, "since")
        limit = min(_int(request.query.get("limit", "500") or 500, "limit"), 10_000)
        kind = request.query.get("kind") or None
        return web.json_response(plane.audit.to_json(since=since, kind=kind, limit=limit))

    async def report(request: web.Request) -> web.Response:
        body = await _body(request)
        kind = body.get("kind")
        if not isinstance(kind, str) or not kind.startswith(REPORTABLE):
            raise bad_request(f"kind must start with one of {', '.join(REPORTABLE)}")
        details = body.get("details") or {}
        if not isinstance(details, dict):
            raise bad_request("details must be a map of strings")
        details = {str(k): str(v) for k, v in details.items()}
        details["reportedBy"] = str(request.get("user", ""))
        ev = plane.audit.record(kind, subject=str(body.get("subject") or ""), target=str(body.get("target") or ""),
                                reason=str(body.get("reason") or ""), details=details)
        return web.json_response(ev.to_json(), status=201)

    async def bundle(request: web.Request) -> web.Response:
        return web.json_response({"trustDomain": plane.ca.trust_domain,
                                  "pem": plane.ca.trust_bundle_pem().decode()})

    async def rotate(request: web.Request) -> web.Response:
        body = await _body(request)
        overlap = _int(body.get("overlapSeconds", 3600), "overlapSeconds")
        plane.ca.rotate_root(datetime.timedelta(seconds=max(overlap, 0)))
        plane.audit.record("ca.root_rotated", subject=str(request.get("user", "")), target=plane.ca.trust_domain,
                           reason=f"new root; the previous one stays trusted for {overlap}s")
        return await bundle(request)

    return [
        web.post("/management/v1/tokens", tokens),
        web.get("/management/v1/security/audit", audit),
        web.post("/management/v1/security/audit", report),
        web.get("/management/v1/trust-bundle", bundle),
        web.post("/management/v1/ca/rotate-root", rotate),
    ]
