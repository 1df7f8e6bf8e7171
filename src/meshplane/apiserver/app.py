"""The Kubernetes-compatible HTTP API: what kubectl and Kubernetes clients need, served from the store.

Request flow for a write: decode the body (400 when undecodable, 413 when too large) -> check it names the kind and
namespace of the URL -> validate it (422 with one cause per bad field, 400 for unknown fields under Strict) ->
write through the store with optimistic concurrency (409) -> answer the object in the version asked for.
Reads come from the store's committed state; lists page with ``limit``/``continue`` and filter with selectors;
``watch=true`` streams (see ``watchstream``). Everything is driven by the kind registry.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from meshplane import __version__
from meshplane.api.errors import FieldCause, InvalidObject, StrictDecodingError
from meshplane.api.kinds import KindInfo, KindRegistry
from meshplane.apiserver import (
    discovery,
    kubeproto,
    objects,
    openapi,
    openapi_v2,
    patch,
    tables,
    watchstream,
    workloads,
)
from meshplane.apiserver.request import (
    ResourcePath,
    decode,
    decode_object,
    dry_run,
    field_validation,
    flag,
    metric_labels,
    parse_resource_path,
    read_body,
)
from meshplane.apiserver.selectors import parse_field_selector, parse_label_selector
from meshplane.apiserver.status import ApiError, bad_request, invalid, not_found, status_object
from meshplane.metrics import ControlPlaneMetrics
from meshplane.model.resources import NAMESPACES
from meshplane.store import (
    AlreadyExists,
    Conflict,
    NotFound,
    StorageFailure,
    Store,
    WatchEvent,
)

log = logging.getLogger(__name__)

Validate = Callable[[KindInfo, dict[str, Any], str], list[str]]
SchemaFor = Callable[[KindInfo], dict[str, Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Per-request values the middlewares set for the handlers.
USER = web.RequestKey("user", str)  # who is asking (the audit trail's actor)
DRY_RUN_BODY = web.RequestKey("dry_run_body", bool)  # a DELETE whose DeleteOptions asked for dryRun=All

IMPLICIT_NAMESPACES = ("default", "istio-system")
_CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class ApiServerSettings:
    """``tokens`` maps bearer tokens to user names; empty means no authentication (loopback only)."""

    tokens: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int = 3 * 1024 * 1024
    bookmark_interval: float = 5.0
    # Where request counts and latencies are recorded; None: not recorded.
    metrics: ControlPlaneMetrics | None = None


def _default_validate(info: KindInfo, obj: dict[str, Any], mode: str) -> list[str]:
    from meshplane.api.validation import validate

    warnings: list[str] = validate(info, obj, field_validation=mode)
    return warnings


def _default_schema(info: KindInfo) -> dict[str, Any]:
    from meshplane.api.schemas import openapi_schema

    return openapi_schema(info)


# The store behind the application, for management routes added through ``extra_routes`` (gateway credentials).
STORE_KEY: web.AppKey[Store] = web.AppKey("meshplane-store", Store)


class ApiServer:
    """Builds the aiohttp application. One instance per store."""

    def __init__(
        self,
        store: Store,
        registry: KindRegistry,
        settings: ApiServerSettings | None = None,
        *,
        validate: Validate = _default_validate,
        schema_for: SchemaFor = _default_schema,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings or ApiServerSettings()
        self._validate = validate
        self._schema_for = schema_for
        self._openapi_cache: dict[str, dict[str, Any]] = {}
        self._openapi_hashes: dict[str, str] = {}
        self._openapi_v2_doc: tuple[dict[str, Any], bytes] | None = None
        self.extra_routes: list[web.RouteDef] = []

    # ---- application ---------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_body_bytes + 1,
            middlewares=[self._measure, self._errors, self._auth],
        )
        app[STORE_KEY] = self.store
        app.add_routes(
            [
                web.get("/version", self._version),
                web.get("/version/", self._version),
                web.get("/healthz", self._ok),
                web.get("/livez", self._ok),
                web.get("/readyz", self._ok),
                web.get("/api", self._api_root),
                web.get("/apis", self._apis_root),
                web.get("/openapi/v2", self._openapi_v2),
                web.get("/openapi/v3", self._openapi_index),
                web.get("/openapi/v3/apis/{group}/{version}", self._openapi_group),
                web.get("/openapi/v3/api/v1", self._openapi_core),
                web.route("*", "/api/v1", self._core_root),
                web.route("*", "/api/v1/{tail:.+}", self._core),
                web.get("/apis/{group}", self._group),
                web.get("/apis/{group}/{version}", self._group_version),
                web.route("*", "/apis/{group}/{version}/{tail:.+}", self._resource),
                web.get("/management/v1/audit", self._audit),
                *self.extra_routes,
            ]
        )
        return app

    @web.middleware
    async def _measure(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        metrics = self.settings.metrics
        if metrics is None:
            return await handler(request)
        start = time.monotonic()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as e:
            code = e.status
            raise
        finally:
            verb, resource = metric_labels(
                request, lambda g, v, p: self.registry.by_resource(g, v, p) is not None)
            # Like Kubernetes, a watch (long-running by design) is counted but kept out of the latency histogram.
            metrics.record_api_request(verb, resource, code,
                                       None if verb == "watch" else time.monotonic() - start)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return web.json_response(e.status(), status=e.code)
        except web.HTTPRequestEntityTooLarge:
            e2 = ApiError(413, "RequestEntityTooLarge", "the request body is too large")
            return web.json_response(e2.status(), status=413)
        except web.HTTPException as e:
            if e.status >= 400:
                return web.json_response(status_object(e.status, e.reason, e.text or e.reason), status=e.status)
            raise
        except StorageFailure as e:
            log.error("storage failure on %s %s: %s", request.method, request.path, e)
            return web.json_response(status_object(500, "InternalError", f"storage failure: {e}"), status=500)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as e:
            log.exception("internal error on %s %s", request.method, request.path)
            body = status_object(500, "InternalError", f"an internal error occurred: {type(e).__name__}")
            return web.json_response(body, status=500)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        tokens = self.settings.tokens
        # The console's static files hold no data (its page sends the token with each API call it makes).
        public = request.path in ("/healthz", "/livez", "/readyz", "/console") or request.path.startswith("/console/")
        if tokens and not public:
            header = request.headers.get("Authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else ""
            user = tokens.get(token)
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            request[USER] = user
        else:
            peer = request.remote or "unknown"
            request[USER] = f"system:anonymous@{peer}"
        return await handler(request)

    # ---- small endpoints ------------------------------------------------------------------------------------

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "major": "1",
                "minor": "32",
                "gitVersion": f"v1.32.0-meshplane.{__version__}",
                "gitCommit": "",
                "gitTreeState": "clean",
                "buildDate": "",
                "goVersion": "",
                "compiler": "meshplane",
                "platform": "linux/amd64",
            }
        )

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _api_root(self, request: web.Request) -> web.Response:
        agg = discovery.wants_aggregated(request.headers.get("Accept", ""))
        if agg:
            return _json(discovery.aggregated_core(agg), content_type=agg)
        return web.json_response(discovery.legacy_api_versions())

    async def _apis_root(self, request: web.Request) -> web.Response:
        agg = discovery.wants_aggregated(request.headers.get("Accept", ""))
        if agg:
            return _json(discovery.aggregated_apis(self.registry, agg), content_type=agg)
        return web.json_response(discovery.legacy_group_list(self.registry))

    async def _group(self, request: web.Request) -> web.Response:
        doc = discovery.legacy_group(self.registry, request.match_info["group"])
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(doc)

    async def _group_version(self, request: web.Request) -> web.Response:
        doc = discovery.legacy_resource_list(self.registry, request.match_info["group"], request.match_info["version"])
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(doc)

    def _openapi_doc(self, group: str, version: str) -> dict[str, Any] | None:
        key = f"apis/{group}/{version}" if group else f"api/{version}"
        if key not in self._openapi_cache:
            doc = openapi.group_version_document(self.registry, group, version, self._schema_for)
            if doc is None:
                return None
            if not group:  # the core group lives under /api/v1
                core = f"/api/{version}"
                doc["paths"] = {p.replace(f"/apis//{version}", core, 1): v for p, v in doc["paths"].items()}
            self._openapi_cache[key] = doc
            self._openapi_hashes[key] = openapi.content_hash(doc)
        return self._openapi_cache[key]

    async def _openapi_v2(self, request: web.Request) -> web.Response:
        if self._openapi_v2_doc is None:
            doc = openapi_v2.document(self.registry)
            self._openapi_v2_doc = (doc, openapi_v2.encode(doc))
        doc, proto = self._openapi_v2_doc
        if openapi_v2.wants_protobuf(request.headers.get("Accept", "")):
            return web.Response(body=proto, content_type=openapi_v2.PROTO_CONTENT_TYPE)
        return web.json_response(doc)

    async def _openapi_index(self, request: web.Request) -> web.Response:
        for group, versions in self.registry.groups().items():
            for v in versions:
                self._openapi_doc(group, v)
        named = KindRegistry(k for k in self.registry if k.group)  # the core group is not under /apis
        doc = openapi.index(named, self._openapi_hashes)
        if "api/v1" in self._openapi_hashes:
            doc["paths"]["api/v1"] = {"serverRelativeURL": f"/openapi/v3/api/v1?hash={self._openapi_hashes['api/v1']}"}
        return web.json_response(doc)

    async def _openapi_core(self, request: web.Request) -> web.Response:
        doc = self._openapi_doc("", "v1")
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(doc)

    async def _openapi_group(self, request: web.Request) -> web.Response:
        doc = self._openapi_doc(request.match_info["group"], request.match_info["version"])
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return web.json_response(doc)

    async def _audit(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0") or 0)
            limit = min(int(request.query.get("limit", "500") or 500), 5000)
        except ValueError as e:
            raise bad_request("since and limit must be integers") from e
        records = self.store.audit(since_rv=since, limit=limit)
        items = [
            {
                "resourceVersion": str(r.rv),
                "timestamp": r.timestamp,
                "user": r.actor,
                "verb": r.verb,
                "group": r.group,
                "resource": r.resource,
                "namespace": r.namespace,
                "name": r.name,
                "uid": r.uid,
                "oldGeneration": r.old_generation,
                "newGeneration": r.new_generation,
            }
            for r in records
        ]
        return web.json_response({"kind": "AuditRecordList", "apiVersion": "meshplane.io/v1", "items": items})

    # ---- core group: namespaces -----------------------------------------------------------------------------

    async def _core_root(self, request: web.Request) -> web.Response:
        return web.json_response(discovery.legacy_core_resources())

    async def _core(self, request: web.Request) -> web.StreamResponse:
        parts = request.match_info["tail"].strip("/").split("/")
        if parts[0] in ("secrets", "configmaps", "services", "pods") or (parts[0] == "namespaces" and len(parts) > 2):
            return await self._resource(request, core_parts=parts)  # registry kinds like the others
        if parts[0] != "namespaces" or len(parts) > 2:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = parts[1] if len(parts) == 2 else None
        if request.method == "GET" and name is None:
            if flag(request, "watch"):
                return await self._watch_namespaces(request)
            items = self._namespaces()
            rv = str(self.store.current_rv)
            if tables.wants_table(request.headers.get("Accept", "")):
                return web.json_response(self._namespace_table(items, rv))
            return web.json_response(
                {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}
            )
        if request.method == "GET" and name is not None:
            for ns in self._namespaces():
                if ns["metadata"]["name"] == name:
                    if tables.wants_table(request.headers.get("Accept", "")):
                        return web.json_response(self._namespace_table([ns], str(self.store.current_rv)))
                    return web.json_response(ns)
            raise not_found("namespaces", "", name)
        if request.method == "POST" and name is None:
            data = await read_body(request, self.settings.max_body_bytes)
            if request.content_type == kubeproto.CONTENT_TYPE:
                try:
                    body = kubeproto.decode_namespace(data)
                except kubeproto.ProtoDecodeError as e:
                    raise bad_request(f"the body of the request could not be decoded as protobuf: {e}") from e
            else:
                body = decode_object(data, request.content_type)
            ns_name = str((body.get("metadata") or {}).get("name") or "")
            if not _is_dns_label(ns_name):
                raise invalid(
                    "Namespace",
                    "",
                    ns_name,
                    [
                        FieldCause(
                            "metadata.name",
                            "FieldValueInvalid",
                            f'Invalid value: "{ns_name}": a lowercase RFC 1123 label must consist of lower case '
                            "alphanumeric characters or '-', and must start and end with an alphanumeric character",
                        )
                    ],
                )
            obj = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns_name, "labels": (body.get("metadata") or {}).get("labels") or {}},
                "spec": {},
                "status": {"phase": "Active"},
            }
            if dry_run(request):
                return web.json_response(obj, status=201)
            try:
                created = await self.store.create(NAMESPACES, obj, actor=request[USER])
            except AlreadyExists as e:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'namespaces "{ns_name}" already exists',
                    {"name": ns_name, "kind": "namespaces"},
                ) from e
            return web.json_response(created, status=201)
        if request.method == "DELETE" and name is not None:
            try:
                deleted = await self.store.delete(NAMESPACES, "", name, actor=request[USER])
            except NotFound as e:
                raise not_found("namespaces", "", name) from e
            return web.json_response(deleted)
        raise ApiError(
            405, "MethodNotAllowed", f"the server does not allow this method on namespaces: {request.method}"
        )

    def _namespaces(self) -> list[dict[str, Any]]:
        stored, _ = self.store.list(NAMESPACES)
        by_name = {o["metadata"]["name"]: o for o in stored}
        used: set[str] = set(IMPLICIT_NAMESPACES)
        for info in self.registry:
            if info.namespaced:
                objs, _ = self.store.list(info.gr)
                used.update(o["metadata"].get("namespace", "") for o in objs)
        for name in sorted(used - set(by_name)):
            if name:
                by_name[name] = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "creationTimestamp": "1970-01-01T00:00:00Z"},
                    "spec": {},
                    "status": {"phase": "Active"},
                }
        return [by_name[n] for n in sorted(by_name)]

    def _namespace_table(self, items: list[dict[str, Any]], rv: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        cols = [
            {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
            {"name": "Status", "type": "string", "format": "", "description": "Phase", "priority": 0},
            {"name": "Age", "type": "date", "format": "", "description": "Age", "priority": 0},
        ]
        rows = []
        for ns in items:
            created = ns["metadata"].get("creationTimestamp", "")
            age = "<unknown>"
            if created and not created.startswith("1970"):
                ts = datetime.fromisoformat(created.replace("Z", "+00:00"))
                age = tables.human_duration((now - ts).total_seconds())
            rows.append({"cells": [ns["metadata"]["name"], "Active", age], "object": tables.partial_metadata(ns, "v1")})
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
            "columnDefinitions": cols,
            "rows": rows,
        }

    async def _watch_namespaces(self, request: web.Request) -> web.StreamResponse:
        since = _since(request)
        w = self.store.watch(NAMESPACES, None, since)

        def render(ev: WatchEvent, first: bool) -> dict[str, Any] | None:
            return {"type": ev.type.value, "object": ev.obj}

        return await watchstream.stream(
            request, self.store, w, render=render, bookmark=None, timeout_seconds=_timeout(request)
        )

    # ---- resources ------------------------------------------------------------------------------------------

    def _resolve(self, request: web.Request, core_parts: list[str] | None = None) -> tuple[KindInfo, ResourcePath]:
        if core_parts is not None:
            group, version, parts = "", "v1", core_parts
        else:
            group, version = request.match_info["group"], request.match_info["version"]
            parts = request.match_info["tail"].strip("/").split("/")
        path = parse_resource_path(parts, group, version)
        if path is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        info = self.registry.by_resource(group, version, path.plural)
        if info is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if info.namespaced and path.name is not None and path.namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not info.namespaced and path.namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if path.subresource not in (None, "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return info, path

    def _unstored(self, request: web.Request, core_parts: list[str] | None) -> web.Response | None:
        """A workload kind meshplane does not store (see ``workloads``): its answer, or None for any other path."""
        if core_parts is not None:
            group, version, parts = "", "v1", core_parts
        else:
            group, version = request.match_info["group"], request.match_info["version"]
            parts = request.match_info["tail"].strip("/").split("/")
        path = parse_resource_path(parts, group, version)
        kind = workloads.find(group, version, path.plural) if path is not None else None
        if kind is None or path is None:
            return None
        body = workloads.answer(kind, path, request.method, str(self.store.current_rv), watch=flag(request, "watch"))
        resp = web.json_response(body)
        resp.headers.add("Warning", _warning(workloads.hint(kind)))
        return resp

    async def _resource(self, request: web.Request, core_parts: list[str] | None = None) -> web.StreamResponse:
        unstored = self._unstored(request, core_parts)
        if unstored is not None:
            return unstored
        info, path = self._resolve(request, core_parts)
        m = request.method
        if path.name is None:
            if m == "GET":
                if flag(request, "watch"):
                    return await self._watch(request, info, path)
                return self._list(request, info, path)
            if m == "POST":
                return await self._create(request, info, path)
            if m == "DELETE":
                return await self._delete_collection(request, info, path)
        else:
            if m == "GET":
                return self._get(request, info, path)
            if m == "PUT":
                return await self._replace(request, info, path)
            if m == "PATCH":
                return await self._patch(request, info, path)
            if m == "DELETE" and path.subresource is None:
                return await self._delete(request, info, path)
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource: {m}")

    def _ns(self, info: KindInfo, path: ResourcePath) -> str:
        return path.namespace or "" if info.namespaced else ""

    def _render_one(
        self,
        request: web.Request,
        info: KindInfo,
        obj: dict[str, Any],
        version: str,
        status: int = 200,
        warnings: list[str] | None = None,
    ) -> web.Response:
        out = objects.outgoing(info, obj, version)
        if tables.wants_table(request.headers.get("Accept", "")):
            body: dict[str, Any] = tables.table(
                info, [out], resource_version=str(obj["metadata"].get("resourceVersion", ""))
            )
        else:
            body = out
        resp = web.json_response(body, status=status)
        for w in warnings or []:
            resp.headers.add("Warning", _warning(w))
        return resp

    def _get(self, request: web.Request, info: KindInfo, path: ResourcePath) -> web.Response:
        assert path.name is not None
        obj = self.store.get(info.gr, self._ns(info, path), path.name)
        if obj is None:
            raise not_found(info.plural, info.group, path.name)
        return self._render_one(request, info, obj, path.version)

    def _list(self, request: web.Request, info: KindInfo, path: ResourcePath) -> web.Response:
        items, rv = self.store.list(info.gr, path.namespace if info.namespaced else None)
        items = _filter(items, request)
        start = 0
        token = request.query.get("continue", "")
        if token:
            start = _decode_continue(token, items)
        limit_text = request.query.get("limit", "")
        limit = int(limit_text) if limit_text.isdigit() and int(limit_text) > 0 else 0
        page = items[start : start + limit] if limit else items[start:]
        next_token = ""
        remaining = 0
        if limit and start + limit < len(items):
            last = page[-1]["metadata"]
            next_token = _encode_continue(rv, last.get("namespace", ""), last["name"])
            remaining = len(items) - start - limit
        if tables.wants_table(request.headers.get("Accept", "")):
            outs = [objects.outgoing(info, o, path.version) for o in page]
            return web.json_response(tables.table(info, outs, resource_version=str(rv), continue_token=next_token))
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if next_token:
            meta["continue"] = next_token
            meta["remainingItemCount"] = remaining
        return web.json_response(
            {
                "apiVersion": info.api_version(path.version),
                "kind": f"{info.kind}List",
                "metadata": meta,
                "items": [objects.outgoing(info, o, path.version) for o in page],
            }
        )

    async def _watch(self, request: web.Request, info: KindInfo, path: ResourcePath) -> web.StreamResponse:
        labels = request.query.get("labelSelector", "")
        fields = request.query.get("fieldSelector", "")
        label_pred = parse_label_selector(labels) if labels else None
        field_pred = parse_field_selector(fields) if fields else None
        as_table = tables.wants_table(request.headers.get("Accept", ""))
        since = _since(request)
        w = self.store.watch(info.gr, path.namespace if info.namespaced else None, since)

        def render(ev: WatchEvent, first: bool) -> dict[str, Any] | None:
            meta = ev.obj.get("metadata", {})
            if label_pred is not None and not label_pred(meta.get("labels") or {}):
                return None
            if field_pred is not None and not field_pred(meta):
                return None
            out = objects.outgoing(info, ev.obj, path.version)
            body: dict[str, Any] = (
                tables.table(info, [out], resource_version=str(ev.rv), include_headers=first) if as_table else out
            )
            return {"type": ev.type.value, "object": body}

        def bookmark(rv: int) -> dict[str, Any]:
            return {
                "kind": info.kind,
                "apiVersion": info.api_version(path.version),
                "metadata": {"resourceVersion": str(rv)},
            }

        return await watchstream.stream(
            request,
            self.store,
            w,
            render=render,
            bookmark=bookmark if flag(request, "allowWatchBookmarks") else None,
            timeout_seconds=_timeout(request),
            bookmark_interval=self.settings.bookmark_interval,
        )

    def _check_identity(self, info: KindInfo, path: ResourcePath, obj: dict[str, Any]) -> str:
        """The object's name; its kind, apiVersion and namespace must agree with the URL."""
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        expected = info.api_version(path.version)
        if kind is not None and kind != info.kind:
            raise bad_request(f"the kind of the provided object ({kind}) does not match the URL ({info.kind})")
        if (
            api_version is not None
            and api_version != expected
            and self.registry.by_api_version(str(api_version), info.kind) is None
        ):
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({expected})"
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        ns = self._ns(info, path)
        body_ns = meta.get("namespace")
        if info.namespaced:
            if body_ns not in (None, "", ns):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        return str(meta.get("name") or "")

    def _validate_obj(self, info: KindInfo, obj: dict[str, Any], mode: str) -> list[str]:
        obj.setdefault("apiVersion", info.api_version(info.preferred_version))
        obj.setdefault("kind", info.kind)
        try:
            return self._validate(info, obj, mode)
        except StrictDecodingError as e:
            raise bad_request(str(e)) from e
        except InvalidObject as e:
            raise invalid(
                info.kind, info.group, e.name or str(obj.get("metadata", {}).get("name", "")), e.causes
            ) from e

    async def _create(self, request: web.Request, info: KindInfo, path: ResourcePath) -> web.Response:
        if path.subresource is not None:
            raise ApiError(405, "MethodNotAllowed", "cannot create a subresource")
        body = await read_body(request, self.settings.max_body_bytes)
        if request.content_type == kubeproto.CONTENT_TYPE and (info.group, info.kind) == ("", "Secret"):
            try:
                obj = kubeproto.decode_secret(body)  # kubectl create secret sends built-in kinds as protobuf
            except (kubeproto.ProtoDecodeError, UnicodeDecodeError) as e:
                raise bad_request("the body of the request could not be decoded as protobuf") from e
        else:
            obj = decode_object(body, request.content_type)
        name = self._check_identity(info, path, obj)
        meta = obj["metadata"]
        if not name and meta.get("generateName"):
            import secrets

            meta["name"] = f"{meta['generateName']}{secrets.token_hex(3)[:5]}"
            name = meta["name"]
        mode = field_validation(request)
        warnings = self._validate_obj(info, obj, mode)
        obj.pop("status", None)
        obj = objects.incoming(info, obj)
        if dry_run(request):
            if self.store.get(info.gr, self._ns(info, path), name) is not None:
                raise _already_exists(info, name)
            obj["metadata"].update(
                uid="",
                resourceVersion="",
                generation=1,
                creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            return self._render_one(request, info, obj, path.version, 201, warnings)
        try:
            created = await self.store.create(info.gr, obj, actor=request[USER])
        except AlreadyExists as e:
            raise _already_exists(info, name) from e
        return self._render_one(request, info, created, path.version, 201, warnings)

    async def _replace(self, request: web.Request, info: KindInfo, path: ResourcePath) -> web.Response:
        assert path.name is not None
        obj = decode_object(await read_body(request, self.settings.max_body_bytes), request.content_type)
        name = self._check_identity(info, path, obj)
        if name != path.name:
            raise bad_request(f"the name of the object ({name}) does not match the name on the URL ({path.name})")
        rv_text = str(obj["metadata"].get("resourceVersion") or "")
        if not rv_text:
            raise invalid(
                info.kind,
                info.group,
                name,
                [
                    FieldCause(
                        "metadata.resourceVersion",
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        expected = _parse_rv(rv_text)
        live = self.store.get(info.gr, self._ns(info, path), name)
        if live is None:
            raise not_found(info.plural, info.group, name)
        if path.subresource == "status":
            new = copy.deepcopy(live)
            new["status"] = obj.get("status")
            warnings: list[str] = []
        else:
            warnings = self._validate_obj(info, obj, field_validation(request))
            new = objects.restore_redacted(info, objects.incoming(info, obj), live)
            if "status" in live:
                new["status"] = live["status"]
            else:
                new.pop("status", None)
        return await self._write(request, info, path, name, new, expected, warnings)

    async def _write(
        self,
        request: web.Request,
        info: KindInfo,
        path: ResourcePath,
        name: str,
        new: dict[str, Any],
        expected: int | None,
        warnings: list[str],
        status: int = 200,
    ) -> web.Response:
        if dry_run(request):
            live = self.store.get(info.gr, self._ns(info, path), name)
            if live is not None and expected is not None and _parse_rv(live["metadata"]["resourceVersion"]) != expected:
                raise _conflict(info, name)
            if live is not None:
                for k in ("uid", "resourceVersion", "generation", "creationTimestamp"):
                    if k in live["metadata"]:
                        new["metadata"][k] = live["metadata"][k]
            return self._render_one(request, info, new, path.version, status, warnings)
        try:
            stored = await self.store.update(info.gr, new, actor=request[USER], expected_rv=expected)
        except Conflict as e:
            raise _conflict(info, name) from e
        except NotFound as e:
            raise not_found(info.plural, info.group, name) from e
        return self._render_one(request, info, stored, path.version, status, warnings)

    async def _patch(self, request: web.Request, info: KindInfo, path: ResourcePath) -> web.Response:
        assert path.name is not None
        ctype = request.content_type
        if ctype == patch.STRATEGIC and (info.group, info.kind) in (("", "Secret"), ("", "ConfigMap")):
            ctype = patch.MERGE  # kubectl patches built-in kinds strategically; these have no merge-keyed lists
        if ctype == patch.STRATEGIC:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{patch.JSON_PATCH}, {patch.MERGE}, {patch.APPLY}",
            )
        if ctype not in (patch.MERGE, patch.JSON_PATCH, patch.APPLY):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{patch.JSON_PATCH}, {patch.MERGE}, {patch.APPLY}",
            )
        data = await read_body(request, self.settings.max_body_bytes)
        body = decode(data, ctype, allow_yaml=ctype == patch.APPLY)
        mode = field_validation(request)
        ns = self._ns(info, path)
        for _attempt in range(_CONFLICT_RETRIES):
            live = self.store.get(info.gr, ns, path.name)
            created = False
            expected: int | None = None
            try:
                if ctype == patch.APPLY:
                    if not isinstance(body, dict):
                        raise bad_request("an apply patch must be an object")
                    config = copy.deepcopy(body)
                    cname = self._check_identity(info, path, config)
                    if cname != path.name:
                        raise bad_request(
                            f"the name of the object ({cname}) does not match the name on the URL ({path.name})"
                        )
                    manager = request.query.get("fieldManager", "")
                    if not manager:
                        raise bad_request(
                            "PATCH, application/apply-patch+yaml requests require a non-empty fieldManager"
                        )
                    new = patch.server_side_apply(
                        live,
                        config,
                        manager,
                        force=flag(request, "force"),
                        api_version=info.api_version(path.version),
                    )
                    # An applied configuration is a partial object (one manager's fields, or only labels, as in
                    # kubectl's client-side-to-server-side migration): like kube-apiserver, validate the merge.
                    warnings = self._validate_obj(info, new, mode)
                    created = live is None
                else:
                    if live is None:
                        raise not_found(info.plural, info.group, path.name)
                    base = objects.outgoing(info, live, path.version)
                    base["metadata"] = {k: v for k, v in base["metadata"].items() if k != "managedFields"}
                    if ctype == patch.MERGE:
                        new = patch.merge_patch(base, body)
                        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
                            rv_text = body["metadata"].get("resourceVersion")
                            if rv_text:
                                expected = _parse_rv(str(rv_text))
                    else:
                        new = patch.json_patch(base, body)
                    if not isinstance(new, dict):
                        raise bad_request("the patched object must be an object")
                    new.setdefault("metadata", {})
                    if live.get("metadata", {}).get("managedFields"):
                        new["metadata"]["managedFields"] = live["metadata"]["managedFields"]
                    self._check_identity(info, path, new)
                    if new["metadata"].get("name") != path.name:
                        raise invalid(
                            info.kind,
                            info.group,
                            path.name,
                            [FieldCause("metadata.name", "FieldValueInvalid", "field is immutable")],
                        )
                    if path.subresource == "status":
                        status = new.get("status")
                        new = copy.deepcopy(live)
                        new["status"] = status
                        warnings = []
                    else:
                        warnings = self._validate_obj(info, new, mode)
            except patch.PatchError as e:
                raise ApiError(422, "Invalid", f"the patch could not be applied: {e}") from e
            except patch.ApplyConflict as e:
                raise ApiError(
                    409,
                    "Conflict",
                    str(e),
                    {
                        "name": path.name,
                        "group": info.group,
                        "kind": info.plural,
                        "causes": [
                            {"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": f".{f}"}
                            for m, f in e.conflicts
                        ],
                    },
                ) from e
            if path.subresource != "status":
                new = objects.restore_redacted(info, objects.incoming(info, new), live)
                if live is not None:
                    if "status" in live:
                        new["status"] = live["status"]
                    else:
                        new.pop("status", None)
            if created:
                if dry_run(request):
                    return self._render_one(request, info, new, path.version, 201, warnings)
                try:
                    stored = await self.store.create(info.gr, new, actor=request[USER])
                except AlreadyExists:
                    continue
                return self._render_one(request, info, stored, path.version, 201, warnings)
            assert live is not None
            try:
                return await self._write(
                    request,
                    info,
                    path,
                    path.name,
                    new,
                    expected if expected is not None else _parse_rv(live["metadata"]["resourceVersion"]),
                    warnings,
                )
            except ApiError as e:
                if e.code == 409 and expected is None:
                    continue  # lost a race with another writer: re-read and re-apply, as the apiserver does
                raise
        raise _conflict(info, path.name)

    async def _delete(self, request: web.Request, info: KindInfo, path: ResourcePath) -> web.Response:
        assert path.name is not None
        expected: int | None = None
        data = await read_body(request, self.settings.max_body_bytes)
        if data.strip():
            opts = decode_object(data, request.content_type)
            pre = opts.get("preconditions") or {}
            if isinstance(pre, dict) and pre.get("resourceVersion"):
                expected = _parse_rv(str(pre["resourceVersion"]))
            if isinstance(opts.get("dryRun"), list) and "All" in opts["dryRun"]:
                request[DRY_RUN_BODY] = True
        ns = self._ns(info, path)
        if dry_run(request) or request.get(DRY_RUN_BODY):
            live = self.store.get(info.gr, ns, path.name)
            if live is None:
                raise not_found(info.plural, info.group, path.name)
            return self._render_one(request, info, live, path.version)
        try:
            deleted = await self.store.delete(info.gr, ns, path.name, actor=request[USER], expected_rv=expected)
        except NotFound as e:
            raise not_found(info.plural, info.group, path.name) from e
        except Conflict as e:
            raise _conflict(info, path.name) from e
        return self._render_one(request, info, deleted, path.version)

    async def _delete_collection(self, request: web.Request, info: KindInfo, path: ResourcePath) -> web.Response:
        items, _ = self.store.list(info.gr, path.namespace if info.namespaced else None)
        items = _filter(items, request)
        deleted = []
        if not dry_run(request):
            for o in items:
                meta = o["metadata"]
                try:
                    deleted.append(
                        await self.store.delete(info.gr, meta.get("namespace", ""), meta["name"], actor=request[USER])
                    )
                except NotFound:
                    continue
        else:
            deleted = items
        return web.json_response(
            {
                "apiVersion": info.api_version(path.version),
                "kind": f"{info.kind}List",
                "metadata": {"resourceVersion": str(self.store.current_rv)},
                "items": [objects.outgoing(info, o, path.version) for o in deleted],
            }
        )


# ---- helpers ------------------------------------------------------------------------------------------------


def _warning(text: str) -> str:
    """A ``Warning`` header value as kube-apiserver writes it (RFC 7234 code 299, the text quoted and escaped)."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json(body: dict[str, Any], *, content_type: str) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), headers={"Content-Type": content_type})


def _is_dns_label(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)) and len(name) <= 63


def _parse_rv(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise bad_request(f'invalid resourceVersion "{text}": must be an integer') from e
    if value < 0:
        raise bad_request(f'invalid resourceVersion "{text}"')
    return value


def _since(request: web.Request) -> int | None:
    text = request.query.get("resourceVersion", "")
    if text in ("", "0"):
        return None
    return _parse_rv(text)


def _timeout(request: web.Request) -> float | None:
    text = request.query.get("timeoutSeconds", "")
    if not text:
        return None
    try:
        return max(float(text), 0.0) or None
    except ValueError as e:
        raise bad_request(f'invalid timeoutSeconds "{text}"') from e


def _filter(items: list[dict[str, Any]], request: web.Request) -> list[dict[str, Any]]:
    labels = request.query.get("labelSelector", "")
    fields = request.query.get("fieldSelector", "")
    if labels:
        pred = parse_label_selector(labels)
        items = [o for o in items if pred(o.get("metadata", {}).get("labels") or {})]
    if fields:
        fpred = parse_field_selector(fields)
        items = [o for o in items if fpred(o.get("metadata", {}))]
    return items


def _encode_continue(rv: int, namespace: str, name: str) -> str:
    raw = json.dumps({"rv": rv, "ns": namespace, "name": name}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str, items: list[dict[str, Any]]) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key = (str(data["ns"]), str(data["name"]))
    except (ValueError, KeyError, TypeError) as e:
        raise bad_request("continue key is not valid") from e
    for i, o in enumerate(items):
        meta = o["metadata"]
        if (meta.get("namespace", ""), meta["name"]) > key:
            return i
    return len(items)


def _already_exists(info: KindInfo, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{info.plural}.{info.group} "{name}" already exists',
        {"name": name, "group": info.group, "kind": info.plural},
    )


def _conflict(info: KindInfo, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {info.plural}.{info.group} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "group": info.group, "kind": info.plural},
    )


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on host:port; the caller stops it with ``runner.cleanup()``."""
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


__all__ = ["ApiServer", "ApiServerSettings", "serve"]
