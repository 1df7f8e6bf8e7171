"""The asynchronous client of meshplane's own API: objects under /api and /apis, and the management endpoints.

Why one client: the agent, the local runtime and the CLI all talk to the same API; each call here resolves its
path through the kind registry, sends the bearer token, bounds its time and reports every failure as one of
:mod:`meshplane.client.errors`, so callers differ only in what they do with an answer or an error.

Objects (``api_version`` and ``kind`` as in a manifest; ``namespace`` defaults to ``default`` for namespaced kinds
and is ignored for cluster-scoped ones):

| call | request | returns |
|---|---|---|
| ``get`` | ``GET .../{name}`` | the object |
| ``list`` | ``GET .../{plural}`` | its items |
| ``create`` / ``replace`` | ``POST`` the collection / ``PUT`` the object | the stored object |
| ``apply`` | create, or on 409 replace at the live resourceVersion | ``created`` or ``configured`` |
| ``patch`` | ``PATCH`` (JSON merge patch), optionally of a subresource (``status``) | the stored object |
| ``delete`` | ``DELETE .../{name}`` | None (NotFound when it was not there) |

Management (``/management/v1``): ``proxies``, ``bootstrap_token``, ``trust_bundle``, ``rotate_root``,
``gateway_credentials``,
``report_security_events``, ``security_audit``, ``audit``, ``traces``, ``trace``; and ``serving`` (does ``GET /api``
answer?).

Every call takes ``timeout`` (seconds) to override the client's default for that call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp

from meshplane.api.kinds import KindRegistry, default_registry
from meshplane.client.errors import BadResponse, ClientError, Conflict
from meshplane.client.paths import resolve, target_of
from meshplane.client.transport import Transport

MERGE_PATCH = "application/merge-patch+json"
MANAGEMENT = "/management/v1"
TOKEN_HEADER = "X-Bootstrap-Token"  # a workload's proof of identity (gateway credentials, audit reports)

Object = dict[str, Any]
Objects = list[dict[str, Any]]


def _object(doc: Any, what: str) -> Object:
    if not isinstance(doc, dict):
        raise BadResponse(what, "the answer is not a JSON object")
    return doc


def _items(doc: Any, what: str) -> Objects:
    items = _object(doc, what).get("items") or []
    if not isinstance(items, list):
        raise BadResponse(what, "the answer's items are not a list")
    return [i for i in items if isinstance(i, dict)]


class Client:
    def __init__(self, base: str, *, token: str = "", timeout: float = 10.0, registry: KindRegistry | None = None,
                 session: aiohttp.ClientSession | None = None, trust_env: bool = False) -> None:
        self.transport = Transport(base, token=token, timeout=timeout, session=session, trust_env=trust_env)
        self.registry = registry or default_registry()

    def __repr__(self) -> str:
        return f"Client({self.base!r})"

    @property
    def base(self) -> str:
        return self.transport.base

    async def close(self) -> None:
        """Close the connection pool, unless it was handed in (its owner closes it)."""
        await self.transport.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # --- objects -----------------------------------------------------------------------------------------

    async def get(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
                  timeout: float | None = None) -> Object:
        t = resolve(self.registry, "get", api_version, kind, namespace, name)
        what = t.describe("get")
        return _object(await self.transport.call("GET", t.item(), what, timeout=timeout), what)

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   timeout: float | None = None) -> Objects:
        t = resolve(self.registry, "list", api_version, kind, namespace)
        what = t.describe("list")
        return _items(await self.transport.call("GET", t.collection, what, timeout=timeout), what)

    async def create(self, obj: Mapping[str, Any], *, timeout: float | None = None) -> Object:
        t = target_of(self.registry, "create", obj)
        what = t.describe("create")
        return _object(await self.transport.call("POST", t.collection, what, body=obj, timeout=timeout), what)

    async def replace(self, obj: Mapping[str, Any], *, timeout: float | None = None) -> Object:
        """Replace the object; its metadata.resourceVersion, when set, must be the live one (else Conflict)."""
        t = target_of(self.registry, "replace", obj)
        what = t.describe("replace")
        return _object(await self.transport.call("PUT", t.item(), what, body=obj, timeout=timeout), what)

    async def apply(self, obj: Mapping[str, Any], *, timeout: float | None = None) -> str:
        """Create ``obj``, or replace it when it exists. Returns ``created`` or ``configured``."""
        try:
            await self.create(obj, timeout=timeout)
            return "created"
        except Conflict:
            pass
        md = obj.get("metadata") or {}
        live = await self.get(str(obj.get("apiVersion")), str(obj.get("kind")), str(md.get("name")),
                              str(md.get("namespace") or ""), timeout=timeout)
        new = dict(obj)
        new["metadata"] = {**dict(md), "resourceVersion": (live.get("metadata") or {}).get("resourceVersion")}
        await self.replace(new, timeout=timeout)
        return "configured"

    async def patch(self, api_version: str, kind: str, name: str, patch: Mapping[str, Any],
                    namespace: str | None = None, *, subresource: str = "", timeout: float | None = None) -> Object:
        """A JSON merge patch (RFC 7386) of the object or of its ``subresource`` (``status``)."""
        t = resolve(self.registry, "patch", api_version, kind, namespace, name)
        what = t.describe("patch", subresource)
        doc = await self.transport.call("PATCH", t.item(subresource), what, body=patch, content_type=MERGE_PATCH,
                                        timeout=timeout)
        return _object(doc, what)

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
                     timeout: float | None = None) -> None:
        t = resolve(self.registry, "delete", api_version, kind, namespace, name)
        await self.transport.call("DELETE", t.item(), t.describe("delete"), timeout=timeout, decode=False)

    # --- management --------------------------------------------------------------------------------------

    async def _management(self, method: str, path: str, *, what: str = "", body: Any = None,
                          query: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                          timeout: float | None = None, decode: bool = True) -> Any:
        return await self.transport.call(method, MANAGEMENT + path, what or f"{method} {MANAGEMENT}{path}",
                                         body=body, query=query, headers=headers, timeout=timeout, decode=decode)

    async def serving(self, *, timeout: float = 1.0) -> bool:
        """Whether the API answers (``GET /api``); never raises."""
        try:
            await self.transport.call("GET", "/api", "GET /api", timeout=timeout, decode=False)
        except ClientError:
            return False
        return True

    async def proxies(self, *, timeout: float | None = None) -> Objects:
        """The connected proxies and their sync state per xDS type (``ProxyStatusList`` items)."""
        return _items(await self._management("GET", "/proxies", timeout=timeout), "GET /management/v1/proxies")

    async def control_plane_version(self, *, timeout: float | None = None) -> Object:
        """Which control plane answers: its ``id``, ``xds`` address and ``version``."""
        what = "GET /management/v1/version"
        return _object(await self._management("GET", "/version", timeout=timeout), what)

    async def bootstrap_token(self, namespace: str, service_account: str, ttl_s: int, *,
                              timeout: float | None = None) -> str:
        """A bootstrap token for the CA, bound to ``namespace`` and ``service_account``; for one agent."""
        what = f"bootstrap token for {namespace}/{service_account}"
        body = {"namespace": namespace, "serviceAccount": service_account, "ttlSeconds": ttl_s}
        doc = _object(await self._management("POST", "/tokens", what=what, body=body, timeout=timeout), what)
        token = doc.get("token")
        if not isinstance(token, str) or not token:
            raise BadResponse(what, "the answer has no token")
        return token

    async def trust_bundle(self, *, timeout: float | None = None) -> str:
        """The PEM of every root workloads should trust now ("" when the answer has none)."""
        what = "GET /management/v1/trust-bundle"
        return str(_object(await self._management("GET", "/trust-bundle", timeout=timeout), what).get("pem") or "")

    async def rotate_root(self, overlap_s: float, *, timeout: float | None = None) -> str:
        """A new CA root (and intermediate); the previous root stays trusted for ``overlap_s`` seconds (the server
        refuses anything but whole seconds within the root's lifetime: BadRequest). Returns the new trust bundle."""
        what = "POST /management/v1/ca/rotate-root"
        value: float | int = int(overlap_s) if float(overlap_s).is_integer() else overlap_s
        doc = await self._management("POST", "/ca/rotate-root", what=what, body={"overlapSeconds": value},
                                     timeout=timeout)
        return str(_object(doc, what).get("pem") or "")

    async def gateway_credentials(self, bootstrap_token: str, *, timeout: float | None = None) -> Objects:
        """The TLS credentials the Gateways of the token's namespace name (``credentialName``), with key material:
        ``{"name", "certificateChain", "privateKey", "caCertificate"}`` each. Keep them out of logs."""
        doc = await self._management("GET", "/gateway-credentials", headers={TOKEN_HEADER: bootstrap_token},
                                     timeout=timeout)
        return _items(doc, "GET /management/v1/gateway-credentials")

    async def report_security_events(self, events: Sequence[Mapping[str, Any]], *, bootstrap_token: str,
                                     timeout: float | None = None) -> None:
        """Report authorization decisions (kinds ``authz.*``, ``opa.*``) to the security audit trail, as one batch
        (the API takes all of them or none). ``bootstrap_token`` is the reporting workload's identity: every event's
        ``target`` must be its SPIFFE id (else Refused 403; no valid token: Refused 401)."""
        await self._management("POST", "/security/audit", body={"items": list(events)}, timeout=timeout,
                               headers={TOKEN_HEADER: bootstrap_token}, decode=False)

    async def security_audit(self, *, since: int = 0, limit: int = 500, kind: str = "",
                             timeout: float | None = None) -> Objects:
        """Security events after sequence number ``since``, oldest first (a server without a CA: NotFound)."""
        query = {"since": str(since), "limit": str(limit), **({"kind": kind} if kind else {})}
        doc = await self._management("GET", "/security/audit", query=query, timeout=timeout)
        return _items(doc, "GET /management/v1/security/audit")

    async def traces(self, *, service: str = "", limit: int = 20, timeout: float | None = None) -> Objects:
        """Summaries of the most recent traces the server's collector holds, newest first."""
        query = {"limit": str(limit), **({"service": service} if service else {})}
        return _items(await self._management("GET", "/traces", query=query, timeout=timeout),
                      "GET /management/v1/traces")

    async def trace(self, trace_id: str, *, timeout: float | None = None) -> Objects:
        """The spans of one trace, by start time (NotFound when the collector keeps none of it)."""
        what = f"GET /management/v1/traces/{trace_id}"
        doc = _object(await self._management("GET", f"/traces/{trace_id}", what=what, timeout=timeout), what)
        spans = doc.get("spans")
        if not isinstance(spans, list) or not all(isinstance(s, dict) for s in spans):
            raise BadResponse(what, "the answer has no list of spans")
        return spans

    async def analyze(self, *, namespace: str = "", objects: Sequence[Mapping[str, Any]] | None = None,
                      default_namespace: str = "default", timeout: float | None = None) -> Objects:
        """Config analysis messages about ``namespace`` ("" : every namespace): of the live config, or with
        ``objects`` (``{"object": {...}, "origin": "file.yaml"}`` each) merged over it, nothing stored."""
        what = "analyze"
        if objects is None:
            doc = await self._management("GET", "/analyze", query={"namespace": namespace}, what=what,
                                         timeout=timeout)
        else:
            body = {"namespace": namespace, "defaultNamespace": default_namespace, "objects": list(objects)}
            doc = await self._management("POST", "/analyze", body=body, what=what, timeout=timeout)
        return _items(doc, what)

    async def audit(self, *, since: int = 0, limit: int = 500, timeout: float | None = None) -> Objects:
        """The store's change records after resourceVersion ``since``, oldest first."""
        doc = await self._management("GET", "/audit", query={"since": str(since), "limit": str(limit)},
                                     timeout=timeout)
        return _items(doc, "GET /management/v1/audit")
