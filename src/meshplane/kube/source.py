"""The Kubernetes client side of a member cluster: list+watch of its Services, EndpointSlices, Pods, Nodes and
Namespaces, fed into the pure :class:`~meshplane.registry.kube_source.KubeRegistry`.

Why this shape (client-go's reflector, as Istio's kube controller uses it): each kind has its own reflector task
that lists, then watches from the list's resourceVersion; a dropped stream resumes from the last resourceVersion
it saw; a 410 Gone (in the response or as an in-stream ERROR event) means the resume point is compacted, so it
relists and replaces what it had. Every request has a timeout and failures back off exponentially, so an
unreachable or silent API server only ever stalls its own tasks. What the mesh sees of the cluster, its sync
state and what changed are the registry's (:mod:`meshplane.registry.kube_source`); this module only moves objects
from the wire into it. Credentials (the kubeconfig and its token) are never logged: error messages are scrubbed
of them before they reach a log line or the status.

Raw JSON is read from the client's response (``_preload_content=False``) so objects are never deserialized into
the client's model classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

from meshplane.kube.kubeconfig import KubeSourceError, parse_kubeconfig, secrets_of
from meshplane.model.names import Hostname
from meshplane.model.service import Endpoint, Service
from meshplane.registry.kube_convert import (
    ENDPOINT_SLICES,
    KINDS,
    NAMESPACES,
    NODES,
    PODS,
    SERVICES,
    ClusterDefaults,
    ClusterIndex,
    DiscoverySelector,
)
from meshplane.registry.kube_source import KubeRegistry, SourceStatus

log = logging.getLogger(__name__)

PATHS: dict[str, str] = {
    NAMESPACES: "/api/v1/namespaces",
    NODES: "/api/v1/nodes",
    PODS: "/api/v1/pods",
    SERVICES: "/api/v1/services",
    ENDPOINT_SLICES: "/apis/discovery.k8s.io/v1/endpointslices",
}


class _Gone(Exception):
    """410: the resourceVersion to resume from is no longer available; relist."""


@dataclass(frozen=True, slots=True)
class SourceSettings:
    request_timeout: float = 10.0  # connect + whole list request
    watch_timeout: int = 300  # server-side timeoutSeconds of a watch; the client reads with a margin on top
    backoff_min: float = 0.2
    backoff_max: float = 15.0
    page_size: int = 500


class KubeClusterSource:
    """One Kubernetes member cluster: a :class:`~meshplane.registry.aggregate.IncrementalRegistry` (the pure
    :class:`~meshplane.registry.kube_source.KubeRegistry` it feeds, as :attr:`registry`) that ``run()`` keeps
    current until cancelled.

    ``on_change(reason)`` is called after each change that alters services or endpoints (once synced),
    ``on_status(status)`` whenever connectivity or sync changes.
    """

    def __init__(
        self,
        defaults: ClusterDefaults,
        kubeconfig: str,
        *,
        discovery_selectors: Sequence[DiscoverySelector] = (),
        on_change: Callable[[str], None] | None = None,
        on_status: Callable[[SourceStatus], None] | None = None,
        settings: SourceSettings | None = None,
    ) -> None:
        self._kubeconfig = kubeconfig
        self._on_status = on_status
        self.registry = KubeRegistry(defaults, discovery_selectors, on_change=on_change,
                                     on_status=self._status_changed)
        self.settings = settings or SourceSettings()
        self._secrets: list[str] = []
        self._synced_event = asyncio.Event()
        # Counters, for tests and benchmarks.
        self.lists = 0
        self.relists_after_gone = 0
        self.watch_resumes = 0
        self.events = 0
        self.resource_versions: dict[str, str | None] = {}

    # --- ServiceRegistry (the registry's) --------------------------------------------------------------------

    @property
    def cluster_id(self) -> str:
        return self.registry.cluster_id

    @property
    def source(self) -> str:
        return self.registry.source

    def services(self) -> Sequence[Service]:
        return self.registry.services()

    def endpoints(self) -> Mapping[Hostname, Sequence[Endpoint]]:
        return self.registry.endpoints()

    def take_changes(self) -> frozenset[Hostname] | None:
        return self.registry.take_changes()

    # --- state ---------------------------------------------------------------------------------------------

    @property
    def status(self) -> SourceStatus:
        return self.registry.status

    @property
    def index(self) -> ClusterIndex:
        return self.registry.index

    async def wait_synced(self) -> None:
        await self._synced_event.wait()

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "<redacted>")
        return text

    def _status_changed(self, status: SourceStatus) -> None:
        if status.synced:
            self._synced_event.set()
        if self._on_status is not None:
            self._on_status(status)

    def _fail(self, kind: str, exc: BaseException) -> None:
        self.registry.failed(kind, self.scrub(_describe(exc)))

    # --- the loop ------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch every kind until cancelled. Never returns on its own; errors back off and retry."""
        api: kclient.ApiClient | None = None
        try:
            delay = self.settings.backoff_min
            while api is None:
                try:
                    doc = parse_kubeconfig(self._kubeconfig)
                    self._secrets = secrets_of(doc)
                    api = await kconfig.new_client_from_config_dict(doc)
                except Exception as e:
                    for kind in KINDS:
                        self._fail(kind, e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.backoff_max)
            async with asyncio.TaskGroup() as tg:
                for kind in KINDS:
                    tg.create_task(self._reflect(api, kind), name=f"kube-{self.cluster_id}-{kind}")
        finally:
            if api is not None:
                # Bounded: closing the client's session must not hold up the member's stop.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.settings.request_timeout):
                        await asyncio.shield(api.close())

    async def _reflect(self, api: kclient.ApiClient, kind: str) -> None:
        delay = self.settings.backoff_min
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():
                # A cancellation that some await below swallowed: honour it here rather than run on forever.
                raise asyncio.CancelledError()
            try:
                if self.resource_versions.get(kind) is None:
                    items, rv = await self._list(api, kind)
                    self.lists += 1
                    self.resource_versions[kind] = rv
                    self.registry.listed(kind, items)
                await self._watch(api, kind)
                self.watch_resumes += 1
                delay = self.settings.backoff_min
            except _Gone:
                self.relists_after_gone += 1
                self.resource_versions[kind] = None
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._fail(kind, e)
                # Jittered exponential backoff; then resume from the last resourceVersion seen (or relist).
                await asyncio.sleep(delay * (0.75 + random.random() / 2))
                delay = min(delay * 2, self.settings.backoff_max)

    async def _request(self, api: kclient.ApiClient, kind: str, query: list[tuple[str, Any]],
                       timeout: float | tuple[float, float]) -> Any:
        resp = await api.call_api(
            PATHS[kind], "GET", query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False, _request_timeout=cast(Any, timeout),
        )
        if resp.status == 410:
            resp.release()
            raise _Gone()
        if not 200 <= resp.status < 300:
            body = (await resp.read())[:300].decode("utf-8", "replace")
            resp.release()
            raise KubeSourceError(f"GET {PATHS[kind]}: HTTP {resp.status}: {body}")
        return resp

    async def _list(self, api: kclient.ApiClient, kind: str) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", self.settings.page_size)]
            if cont:
                query.append(("continue", cont))

            async def page(q: list[tuple[str, Any]] = query) -> dict[str, Any]:
                resp = await self._request(api, kind, q, self.settings.request_timeout)
                try:
                    data = json.loads(await resp.read())
                finally:
                    resp.release()
                if not isinstance(data, dict):
                    raise KubeSourceError(f"GET {PATHS[kind]}: not a list")
                return data

            async with asyncio.timeout(self.settings.request_timeout):
                data = await page()
            items.extend(i for i in data.get("items") or [] if isinstance(i, dict))
            meta = data.get("metadata") or {}
            cont = str(meta.get("continue") or "")
            if not cont:
                return items, str(meta.get("resourceVersion") or "0")

    async def _watch(self, api: kclient.ApiClient, kind: str) -> None:
        """Stream events from the last resourceVersion seen, recording each event's resourceVersion, until the
        stream ends (cleanly or dropped: the caller resumes from there)."""
        rv = self.resource_versions[kind] or "0"
        query: list[tuple[str, Any]] = [("watch", "true"), ("resourceVersion", rv),
                                         ("allowWatchBookmarks", "true"),
                                         ("timeoutSeconds", self.settings.watch_timeout)]
        timeout = (self.settings.request_timeout, self.settings.watch_timeout + self.settings.request_timeout)
        async with asyncio.timeout(self.settings.request_timeout):
            resp = await self._request(api, kind, query, timeout)
        self.registry.reached(kind)
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                etype = str(event.get("type") or "")
                obj = event.get("object") or {}
                if etype == "ERROR":
                    code = obj.get("code") if isinstance(obj, dict) else None
                    if code == 410:
                        raise _Gone()
                    raise KubeSourceError(f"watch {PATHS[kind]}: {obj.get('message') or obj}")
                new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                if etype != "BOOKMARK":
                    self.events += 1
                    self.registry.event(kind, etype, obj)
                if new_rv:
                    self.resource_versions[kind] = new_rv
        except (ConnectionError, asyncio.IncompleteReadError) as e:
            # A stream dropped mid-way: resume from the last resourceVersion seen.
            log.debug("cluster %s: %s watch dropped (%s); resuming", self.cluster_id, kind, type(e).__name__)
        except Exception as e:
            if type(e).__name__ not in ("ClientPayloadError", "ServerDisconnectedError", "ClientOSError"):
                raise
        finally:
            resp.release()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KubeSourceError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the API server"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:400]


@dataclass(frozen=True, slots=True)
class KubeSourceFactory:
    """Builds one :class:`KubeClusterSource` per member cluster, all with ``settings``: the
    ``meshplane.multicluster.SourceFactory`` that ``cli.serverproc`` gives the member-cluster controller."""

    settings: SourceSettings = field(default_factory=SourceSettings)

    def __call__(self, defaults: ClusterDefaults, kubeconfig: str, selectors: Sequence[DiscoverySelector],
                 on_change: Callable[[str], None], on_status: Callable[[SourceStatus], None]) -> KubeClusterSource:
        return KubeClusterSource(defaults, kubeconfig, discovery_selectors=selectors, on_change=on_change,
                                 on_status=on_status, settings=self.settings)
