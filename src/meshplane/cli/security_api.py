"""The management API of the zero-trust parts: bootstrap tokens, the security audit trail and the trust bundle.

Why these endpoints live beside the Kubernetes-compatible API and not as API objects: a bootstrap token is a
credential (returned once, never stored: only its HMAC key exists, next to the CA), audit events come at run-time
rates into a bounded ring, and the trust bundle is derived from the CA's files. All of them go through the API's
authentication middleware like every other request.

| method and path | what |
|---|---|
| ``POST /management/v1/tokens`` ``{"namespace", "serviceAccount", "ttlSeconds"?}`` | a bootstrap token (201) |
| ``GET /management/v1/security/audit?since=SEQ&kind=PREFIX&limit=N`` | ``SecurityAuditEventList`` |
| ``POST /management/v1/security/audit`` ``{"kind", "subject", "target", "reason", "details"}`` (header
  ``X-Bootstrap-Token``) | an agent reports an authorization decision (kinds ``authz.*`` and ``opa.*`` only);
  ``{"items": [...]}`` reports a batch. The token is the agent's identity: without a valid one 401, an event
  whose ``target`` is not the token's SPIFFE id 403 (both recorded as ``audit.refused``); accepted events carry
  ``details.reportedBy`` = that SPIFFE id |
| ``GET /management/v1/trust-bundle`` | ``{"trustDomain", "pem"}``: every root workloads should trust now |
| ``GET /management/v1/gateway-credentials`` (header ``X-Bootstrap-Token``) | the TLS credentials (core Secrets
  of the token's namespace) that Gateways name in ``credentialName``: for the gateway's agent, which serves them
  to its Envoy over its local SDS. The only read of Secret values; never logged |
| ``POST /management/v1/ca/rotate-root`` ``{"overlapSeconds"}`` | new root and intermediate; the old root stays
  in the bundle for the overlap |
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from meshplane.apiserver.app import STORE_KEY, USER
from meshplane.apiserver.status import ApiError, bad_request
from meshplane.model.resources import GATEWAYS, SECRETS
from meshplane.rpc.ca_service import SecurityPlane
from meshplane.security import InvalidIdentity, TokenRejected
from meshplane.security.ca import MAX_ROOT_OVERLAP
from meshplane.store import Store

TOKEN_HEADER = "X-Bootstrap-Token"

MAX_TOKEN_TTL = datetime.timedelta(days=30)
DEFAULT_TOKEN_TTL = datetime.timedelta(hours=24)
REPORTABLE = ("authz.", "opa.")
MAX_BATCH = 1000

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


def _overlap_seconds(value: Any) -> int:
    """``overlapSeconds``: whole seconds from 0 to the root's lifetime (a JSON number such as 1e30 is refused here,
    not left to overflow the date arithmetic)."""
    limit = int(MAX_ROOT_OVERLAP.total_seconds())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise bad_request(f"overlapSeconds must be a whole number of seconds from 0 to {limit} (the root's "
                          f"lifetime, {MAX_ROOT_OVERLAP.days} days), not {json.dumps(value)[:40]}")
    return value


def _b64(data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64decode(value).decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def gateway_credentials(store: Store, namespace: str) -> list[dict[str, str]]:
    """The Secrets of ``namespace`` that some Gateway names as a server's ``tls.credentialName``, decoded:
    ``{"name", "certificateChain", "privateKey", "caCertificate"}`` (CA from ``ca.crt`` or ``<name>-cacert``)."""
    gateways, _ = store.list(GATEWAYS)
    names = sorted({str(srv["tls"]["credentialName"]) for gw in gateways
                    for srv in (gw.get("spec") or {}).get("servers") or []
                    if isinstance(srv.get("tls"), dict) and srv["tls"].get("credentialName")})
    out: list[dict[str, str]] = []
    for name in names:
        secret = store.get(SECRETS, namespace, name)
        if secret is None:
            continue
        data = secret.get("data") or {}
        cacert = store.get(SECRETS, namespace, f"{name}-cacert")
        ca = _b64(data, "ca.crt") or (_b64(cacert.get("data"), "ca.crt") if cacert else "")
        cert, key = _b64(data, "tls.crt"), _b64(data, "tls.key")
        if cert and key:
            out.append({"name": name, "certificateChain": cert, "privateKey": key, "caCertificate": ca})
        elif ca:
            out.append({"name": name, "certificateChain": "", "privateKey": "", "caCertificate": ca})
    return out


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
            token, expires = plane.issue_token(ns, sa, ttl, requested_by=str(request.get(USER, "")))
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

    def _reporter(request: web.Request) -> tuple[str, str]:
        """The reporting workload's (SPIFFE id, namespace) from its bootstrap token; 401 (recorded) without one.

        Why a bootstrap token and not the API's own authentication: the events speak for a workload, so the
        credential must name one; it is the one the agent already holds for the CA (and gateway credentials)."""
        try:
            namespace, service_account = plane.tokens.verify(request.headers.get(TOKEN_HEADER, ""))
        except TokenRejected as e:
            plane.audit.record("audit.refused", subject=str(request.get(USER, "")), target="security-audit",
                               reason=f"unauthenticated report: {e}")
            raise ApiError(401, "Unauthorized", "a valid bootstrap token (X-Bootstrap-Token) is required") from e
        return plane.ca.identity(namespace, service_account).uri, namespace

    def _check_claims(reporter: tuple[str, str], events: list[dict[str, Any]], user: str) -> None:
        """Every event must speak for the token's workload (``target``, ``details.workload``'s namespace)."""
        spiffe, namespace = reporter
        for e in events:
            workload = e["details"].get("workload", "")
            if e["target"] != spiffe or (workload and workload.partition("/")[0] != namespace):
                claimed = e["target"] or "nobody"
                plane.audit.record("audit.refused", subject=spiffe, target="security-audit",
                                   reason=f"{spiffe} reported an event for {claimed}",
                                   details={"kind": e["kind"], "claimed": claimed, "workload": workload, "user": user})
                raise ApiError(403, "Forbidden", f"{spiffe} may report events only for itself, not for {claimed}")
            e["details"]["reportedBy"] = spiffe

    def _report_one(request: web.Request, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("each report must be a JSON object")
        kind = body.get("kind")
        if not isinstance(kind, str) or not kind.startswith(REPORTABLE):
            raise bad_request(f"kind must start with one of {', '.join(REPORTABLE)}")
        details = body.get("details") or {}
        if not isinstance(details, dict):
            raise bad_request("details must be a map of strings")
        details = {str(k): str(v) for k, v in details.items()}
        return {"kind": kind, "subject": str(body.get("subject") or ""), "target": str(body.get("target") or ""),
                "reason": str(body.get("reason") or ""), "details": details}

    async def report(request: web.Request) -> web.Response:
        reporter = _reporter(request)  # before reading the body: nothing of an anonymous report is trusted
        body = await _body(request)
        batch = isinstance(body.get("items"), list)  # a batch (agents tailing Envoy's decisions): all or nothing
        if batch and len(body["items"]) > MAX_BATCH:
            raise bad_request(f"at most {MAX_BATCH} reports per request")
        checked = [_report_one(request, item) for item in body["items"]] if batch else [_report_one(request, body)]
        _check_claims(reporter, checked, str(request.get(USER, "")))
        events = [plane.audit.record(e.pop("kind"), **e).to_json() for e in checked]
        if not batch:
            return web.json_response(events[0], status=201)
        return web.json_response({"kind": "SecurityAuditEventList", "apiVersion": "meshplane.io/v1",
                                  "items": events}, status=201)

    async def bundle(request: web.Request) -> web.Response:
        return web.json_response({"trustDomain": plane.ca.trust_domain,
                                  "pem": plane.ca.trust_bundle_pem().decode()})

    async def credentials(request: web.Request) -> web.Response:
        # A bootstrap token is the workload's credential: only its namespace's Secrets, only those a Gateway names.
        try:
            namespace, service_account = plane.tokens.verify(request.headers.get(TOKEN_HEADER, ""))
        except TokenRejected as e:
            plane.audit.record("credential.refused", subject=str(request.get(USER, "")), target="gateway-credentials",
                               reason=str(e))
            raise ApiError(401, "Unauthorized", "a valid bootstrap token is required") from e
        items = gateway_credentials(request.app[STORE_KEY], namespace)
        return web.json_response({"kind": "GatewayCredentialList", "apiVersion": "meshplane.io/v1",
                                  "namespace": namespace, "serviceAccount": service_account, "items": items},
                                 headers={"Cache-Control": "no-store"})

    async def rotate(request: web.Request) -> web.Response:
        body = await _body(request)
        overlap = _overlap_seconds(body.get("overlapSeconds", 3600))
        plane.ca.rotate_root(datetime.timedelta(seconds=overlap))
        plane.audit.record("ca.root_rotated", subject=str(request.get(USER, "")), target=plane.ca.trust_domain,
                           reason=f"new root; the previous one stays trusted for {overlap}s")
        return await bundle(request)

    return [
        web.post("/management/v1/tokens", tokens),
        web.get("/management/v1/security/audit", audit),
        web.post("/management/v1/security/audit", report),
        web.get("/management/v1/trust-bundle", bundle),
        web.get("/management/v1/gateway-credentials", credentials),
        web.post("/management/v1/ca/rotate-root", rotate),
    ]
