"""A fake Kubernetes API server for multicluster tests, benchmarks and e2e (no tests in this module).

Why a fake: no Kubernetes API server can run on this machine. This one follows the real protocol for the parts a
registry source uses: ``GET /api/v1/{namespaces,nodes,pods,services}`` and
``/apis/discovery.k8s.io/v1/endpointslices`` as lists (``metadata.resourceVersion``, ``limit``/``continue``
paging) and as watches (``?watch=true&resourceVersion=N``: newline-delimited JSON events replayed from history
after N, then live; BOOKMARK is not sent; a resourceVersion older than the compacted history gets a 200 and an
in-stream ``ERROR`` event carrying a ``Status`` with code 410, as kube-apiserver does). It requires the bearer
token of its kubeconfig. Tests drive it directly: ``upsert``/``delete`` objects, ``compact`` the history (open
watches then get the 410 ERROR), ``drop_watches`` (the TCP connection is closed in the middle of a chunked
stream), and count requests per kind. It binds 127.0.0.1 only. ``stop`` is bounded: open watches are ended, a
watch that arrives while stopping ends at once, and aiohttp cancels any handler still running after a few seconds.

``SilentServer`` accepts TCP connections and never answers (a hung API server).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PATHS = {
    "namespaces": "/api/v1/namespaces",
    "nodes": "/api/v1/nodes",
    "pods": "/api/v1/pods",
    "services": "/api/v1/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
}
LIST_KINDS = {"namespaces": "NamespaceList", "nodes": "NodeList", "pods": "PodList", "services": "ServiceList",
              "endpointslices": "EndpointSliceList"}
_DROP = object()


@dataclass
class _Watcher:
    kind: str
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


class FakeKubeApi:
    def __init__(self, token: str = "fake-cluster-token-s3cr3t") -> None:
        self.token = token
        self.rv = 100
        self.compacted_rv = 0
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in PATHS}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, kind, type, obj)
        self.watchers: list[_Watcher] = []
        self.lists: dict[str, int] = {k: 0 for k in PATHS}
        self.watches: dict[str, list[str]] = {k: [] for k in PATHS}  # resourceVersion of each watch request
        self.unauthorized = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self.watch_connected = asyncio.Event()

    # --- lifecycle ---

    async def start(self) -> FakeKubeApi:
        app = web.Application()
        for kind, path in PATHS.items():
            app.router.add_get(path, self._handler(kind))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._stopping = True
        for w in self.watchers:
            w.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self) -> str:
        return kubeconfig_for(self.url, self.token)

    # --- mutations ---

    def upsert(self, kind: str, obj: dict[str, Any]) -> None:
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        key = (md.get("namespace", ""), md["name"])
        etype = "MODIFIED" if key in self.objects[kind] else "ADDED"
        self._record(kind, etype, key, obj)

    def upsert_all(self, kind: str, objs: Iterable[dict[str, Any]]) -> None:
        for o in objs:
            self.upsert(kind, o)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        obj = self.objects[kind].get((namespace, name))
        if obj is not None:
            self._record(kind, "DELETED", (namespace, name), copy.deepcopy(obj))

    def _record(self, kind: str, etype: str, key: tuple[str, str], obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if etype == "DELETED":
            self.objects[kind].pop(key, None)
        else:
            self.objects[kind][key] = obj
        self.history.append((self.rv, kind, etype, obj))
        for w in self.watchers:
            if w.kind == kind:
                w.queue.put_nowait({"type": etype, "object": obj})

    def compact(self) -> None:
        """Forget history: every open watch gets an in-stream 410 and later resumes from older rvs fail."""
        self.compacted_rv = self.rv
        self.history.clear()
        gone = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                            "message": "too old resource version", "reason": "Expired",
                                            "code": 410}}
        for w in self.watchers:
            w.queue.put_nowait(gone)

    def drop_watches(self, kind: str | None = None) -> None:
        """Close the connection of open watches in the middle of their stream."""
        self.watch_connected.clear()
        for w in self.watchers:
            if kind is None or w.kind == kind:
                w.queue.put_nowait(_DROP)

    # --- HTTP ---

    def _handler(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                self.unauthorized += 1
                return web.json_response({"kind": "Status", "code": 401, "reason": "Unauthorized"}, status=401)
            if request.query.get("watch") in ("true", "1"):
                return await self._watch(kind, request)
            return self._list(kind, request)

        return handle

    def _list(self, kind: str, request: web.Request) -> web.Response:
        self.lists[kind] += 1
        items = [self.objects[kind][k] for k in sorted(self.objects[kind])]
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0) or len(items) or 1
        page = items[start:start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        return web.json_response({"kind": LIST_KINDS[kind], "apiVersion": "v1", "metadata": meta, "items": page})

    async def _watch(self, kind: str, request: web.Request) -> web.StreamResponse:
        rv = request.query.get("resourceVersion", "")
        self.watches[kind].append(rv)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        since = int(rv or 0)
        if rv and since < self.compacted_rv:
            await resp.write(json.dumps({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
                "message": f"too old resource version: {since} ({self.compacted_rv})"}}).encode() + b"\n")
            await resp.write_eof()
            return resp
        watcher = _Watcher(kind)
        for erv, ekind, etype, obj in self.history:
            if ekind == kind and erv > since:
                watcher.queue.put_nowait({"type": etype, "object": obj})
        if self._stopping:
            watcher.queue.put_nowait(None)  # the history, then the end of the stream
        self.watchers.append(watcher)
        if all(any(w.kind == k for w in self.watchers) for k in PATHS):
            self.watch_connected.set()
        try:
            while True:
                item = await watcher.queue.get()
                if item is None:
                    break
                if item is _DROP:
                    # Mid-stream: the chunked body never ends; the client sees the connection reset.
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                await resp.write(json.dumps(item).encode() + b"\n")
                if item.get("type") == "ERROR":
                    break
            with contextlib.suppress(ConnectionError):
                await resp.write_eof()
        finally:
            self.watchers.remove(watcher)
        return resp


def kubeconfig_for(url: str, token: str) -> str:
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {url}\n"
        f"users:\n- name: u\n  user:\n    token: {token}\n"
        "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n"
        "current-context: c\n"
    )


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> SilentServer:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)

        self._server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# --- object builders ---------------------------------------------------------------------------------------------

def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def node(name: str, region: str, zone: str, subzone: str = "", network: str = "") -> dict[str, Any]:
    labels = {"topology.kubernetes.io/region": region, "topology.kubernetes.io/zone": zone}
    if subzone:
        labels["topology.istio.io/subzone"] = subzone
    if network:
        labels["topology.istio.io/network"] = network
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}


def pod(ns: str, name: str, node_name: str, labels: dict[str, str] | None = None, sa: str = "default",
        ip: str = "") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "labels": labels or {}},
            "spec": {"nodeName": node_name, "serviceAccountName": sa},
            "status": {"podIP": ip}}


def service(ns: str, name: str, ports: list[tuple[str, int]] | None = None, cluster_ip: str = "10.96.0.10",
            app_protocol: dict[str, str] | None = None) -> dict[str, Any]:
    ps = []
    for pname, number in ports or [("http", 9080)]:
        p: dict[str, Any] = {"name": pname, "port": number, "protocol": "TCP", "targetPort": number}
        if app_protocol and pname in app_protocol:
            p["appProtocol"] = app_protocol[pname]
        ps.append(p)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": ns, "name": name},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "ports": ps}}


def endpoint_slice(ns: str, name: str, svc: str, endpoints: list[dict[str, Any]],
                   ports: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
            "endpoints": endpoints,
            "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in (ports or [("http", 9080)])]}


def slice_endpoint(ip: str, pod_name: str = "", ns: str = "default", node_name: str = "", ready: bool = True,
                   terminating: bool = False) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready, "serving": ready,
                                                            "terminating": terminating}}
    if pod_name:
        ep["targetRef"] = {"kind": "Pod", "namespace": ns, "name": pod_name}
    if node_name:
        ep["nodeName"] = node_name
    return ep


def populate(api: FakeKubeApi, *, cluster: str, region: str, zone: str, services: list[str],
             ns: str = "default", per_service: int = 2, ip_prefix: str = "10.1") -> None:
    """One namespace, one node, and ``per_service`` ready pods behind each service."""
    api.upsert("namespaces", namespace(ns))
    node_name = f"{cluster}-node"
    api.upsert("nodes", node(node_name, region, zone))
    for i, svc in enumerate(services):
        eps = []
        for j in range(per_service):
            pname = f"{svc}-{j}"
            ip = f"{ip_prefix}.{i}.{j + 1}"
            api.upsert("pods", pod(ns, pname, node_name, {"app": svc, "version": "v1"}, sa=svc, ip=ip))
            eps.append(slice_endpoint(ip, pname, ns, node_name))
        api.upsert("services", service(ns, svc, cluster_ip=f"10.96.{i}.1"))
        api.upsert("endpointslices", endpoint_slice(ns, f"{svc}-abc", svc, eps))
