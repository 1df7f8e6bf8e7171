"""XdsServer: the push pipeline and the ADS gRPC server, wired together.

    store watch ─► ConfigController ─► Debouncer (quiet period, max delay)
                                            │ flush: ConfigSnapshot; RegistryAggregator.update -> RegistryUpdate
                                            ▼
                      full change: new immutable PushContext  │  endpoints only (the update names the hosts):
                       (Translator.build_context)             │  Translator.with_registry(changed hosts)
                                            ▼
              per-connection merged PushQueue ─► push workers (max_concurrent_pushes) ─► Connection.push
                                                   (a watchdog ends a push that outlives send_timeout)

Why this shape: it is Istio's pipeline (pilot/pkg/xds), which keeps the cost of a change proportional to what
changed: bursts merge in debounce, a proxy queued twice is pushed once, endpoint changes send only the
ClusterLoadAssignments of the hosts whose endpoints changed, and computing them costs O(changed) (the registry side
is ``meshplane.registry.aggregator``: it keeps the sources between flushes and tells the server which hosts
changed, so no flush re-merges or diffs the whole mesh). The server knows translation only through the
:class:`~meshplane.xds.translator.Translator` seam. With no proxy connected nothing is built at all after
start-up: the state is marked stale and built when the first proxy asks (``state``), so bulk writes through the
API do not pay for push contexts nobody reads. Pushes run on a fixed pool of worker tasks, and one watchdog
enforces the send timeout: an endpoint change pushes to every proxy, and a task plus a timer per push cost about a
tenth of the server's time per change at a thousand proxies. Registry sources beyond the ServiceEntry source
(member clusters) are added with :meth:`XdsServer.add_registry` and report changes with
:meth:`XdsServer.registry_changed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import grpc

from meshplane.model.config import ConfigSnapshot
from meshplane.model.push import PushRequest
from meshplane.model.resources import WORKLOAD_ENTRIES
from meshplane.model.service import RegistrySnapshot
from meshplane.registry import RegistryAggregator, ServiceRegistry
from meshplane.rpc import SERVER_OPTIONS, bind
from meshplane.store.interface import Store
from meshplane.xds.ads import AdsHandler
from meshplane.xds.connection import Connection, PushState, WriteBudget
from meshplane.xds.controller import ConfigController
from meshplane.xds.debounce import Debouncer
from meshplane.xds.encoding import Encoder
from meshplane.xds.protocol import SyncState
from meshplane.xds.pushqueue import PushQueue
from meshplane.xds.settings import XdsSettings
from meshplane.xds.status import ProxyStatus, Rejection, TypeStatus
from meshplane.xds.translator import ExplainsRejections, Translator

log = logging.getLogger(__name__)

# Bytes of responses written at once over all streams (see ``WriteBudget``): 64 large responses.
WRITE_BUDGET_BYTES = 64 * 1024 * 1024


def is_name_table_stream(metadata: Mapping[str, Any]) -> bool:
    """An agent's DNS-proxy stream (NDS only, same node id as its Envoy; ``meshplane.rpc.nds``)."""
    return str(metadata.get("NAME_TABLE_STREAM", "")).lower() == "true"


def _default_translator() -> Translator:
    from meshplane.xds.default_translator import DefaultTranslator

    return DefaultTranslator()


class XdsServer:
    """The xDS control plane for one store. ``start`` binds and serves; ``proxy_status`` reports sync state."""

    def __init__(self, store: Store, settings: XdsSettings | None = None) -> None:
        self.settings = settings or XdsSettings()
        self._store = store
        self._translator = self.settings.translator or _default_translator()
        self._controller = ConfigController(store, self._on_config_change)
        self._debouncer = Debouncer(self._flush, quiet=self.settings.debounce_quiet,
                                    max_delay=self.settings.debounce_max)
        self._queue: PushQueue[Connection] = PushQueue()
        self._budget = WriteBudget(WRITE_BUDGET_BYTES)
        self._connections: dict[str, Connection] = {}
        self._registries = RegistryAggregator(self.settings.cluster_id)
        self._config = ConfigSnapshot(0)
        self._state: PushState | None = None
        self._force_full = False  # ``config_changed`` asked for a new push context
        self._stale = True  # config changed since ``_state`` was built (built on demand when no proxy is connected)
        self._epoch = 0
        self._server: grpc.aio.Server | None = None
        self._workers: list[asyncio.Task[None]] = []
        # worker -> deadline of the push it runs; a worker in ``_expired`` was cancelled by the watchdog.
        self._busy: dict[asyncio.Task[None], float] = {}
        self._expired: set[asyncio.Task[None]] = set()
        self.pushes_started = 0
        self.full_pushes = 0
        self.eds_pushes = 0
        self.context_builds = 0  # full PushContext builds
        self.deferred_flushes = 0  # flushes with no proxy connected: nothing built
        self.metrics = self.settings.metrics
        if self.metrics is not None:
            self.metrics.watch_connections(
                lambda: sum(1 for c in self._connections.values() if c.proxy is not None and not c.closed.is_set()
                            and not is_name_table_stream(c.proxy.metadata)))

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, address: str) -> int:
        """Bind ``address`` ("host:port", port 0 = any; meshplane.rpc.AddressInUse when taken), load the config,
        build the first push context and serve. Returns the bound port."""
        mb = self.settings.max_message_bytes
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", mb),
            ("grpc.max_send_message_length", mb),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
            # The proxies' pings (agent.bootstrap: every 30 s) are welcome: see XdsSettings.min_ping_interval.
            ("grpc.http2.min_ping_interval_without_data_ms", max(1, int(self.settings.min_ping_interval * 1000))),
            ("grpc.http2.max_ping_strikes", self.settings.max_ping_strikes),
            ("grpc.max_concurrent_streams", 100_000),
            *SERVER_OPTIONS,
        ])
        server.add_generic_rpc_handlers((AdsHandler(self).generic_handler(),))
        port = bind(server, address, "xDS server")  # first: a taken port fails before anything runs
        self._server = server
        self._controller.load()
        # Built now (registry merged, context indexed), as istiod does at start-up: the first proxies to connect
        # are answered without waiting for it. Later changes while nobody is connected only mark it stale.
        self._rebuild(full=True)
        self._controller.start()
        self._debouncer.start()
        self._workers = [asyncio.create_task(self._push_worker(), name=f"xds-push-{i}")
                         for i in range(max(1, self.settings.max_concurrent_pushes))]
        self._workers.append(asyncio.create_task(self._push_watchdog(), name="xds-push-watchdog"))
        await server.start()
        log.info("xDS server on %s (port %d)", address, port)
        return port

    async def stop(self, grace: float = 1.0) -> None:
        await self._controller.stop()
        await self._debouncer.stop()
        workers, self._workers = self._workers, []
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for conn in list(self._connections.values()):
            conn.closed.set()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    # --- Hub (used by the streams) -----------------------------------------------------------------------

    @property
    def translator(self) -> Translator:
        return self._translator

    @property
    def state(self) -> PushState:
        """The current push state, built now if config changed while no proxy was connected."""
        if self._stale or self._state is None:
            self._rebuild(full=True)
        assert self._state is not None
        return self._state

    def register(self, conn: Connection) -> None:
        conn.budget = self._budget
        self._connections[conn.id] = conn

    def unregister(self, conn: Connection) -> None:
        self._connections.pop(conn.id, None)
        self._queue.remove(conn)

    # --- registry sources ------------------------------------------------------------------------------

    def add_registry(self, registry: ServiceRegistry) -> None:
        """Add a source of services and endpoints (e.g. a member cluster); pushes once debounced."""
        self._registries.add(registry)
        self.registry_changed("registry added")

    def remove_registry(self, registry: ServiceRegistry) -> None:
        self._registries.remove(registry)
        self.registry_changed("registry removed")

    def registry_changed(self, reason: str = "registry") -> None:
        """A source's services or endpoints changed. Endpoint-only unless services differ: what changed is asked
        of the sources at the flush (``take_changes``); a source that cannot tell is re-merged whole."""
        self._debouncer.add(PushRequest(full=False, reasons=(reason,)))

    def config_changed(self, reason: str) -> None:
        """Something translation reads besides the store and the registry changed (e.g. JWKS keys the control
        plane fetched): a full push, once debounced."""
        self._force_full = True  # even when merged with WorkloadEntry changes only (see ``_flush``)
        self._debouncer.add(PushRequest(full=True, reasons=(reason,)))

    # --- status ------------------------------------------------------------------------------------------

    def proxy_status(self) -> list[ProxyStatus]:
        """One entry per proxy (Envoy) stream. An agent's name-table stream (node metadata
        ``NAME_TABLE_STREAM``, see :func:`is_name_table_stream`) is not a proxy of its own: its types are listed
        with the Envoy of the same node id, and without that Envoy it is not listed at all."""
        out: list[ProxyStatus] = []
        extra: dict[str, list[TypeStatus]] = {}
        for conn in list(self._connections.values()):
            p = conn.proxy
            if p is None:
                continue
            types = tuple(
                TypeStatus(
                    type_url=wt.type_url, state=wt.state, version_sent=wt.version_sent,
                    version_acked=wt.version_acked, nonce_sent=wt.nonce_sent, nonce_acked=wt.nonce_acked,
                    resources=len(wt.sent), subscribed=len(wt.names), wildcard=wt.wildcard,
                    last_nack=wt.last_nack, acks=wt.acks, nacks=wt.nacks,
                    generate_error=conn.generate_errors.get(wt.type_url, ""),
                )
                for wt in conn.watched.values()
            )
            if is_name_table_stream(p.metadata):
                extra.setdefault(p.id, []).extend(types)
                continue
            out.append(ProxyStatus(
                connection_id=conn.id, node_id=p.id, namespace=p.namespace, workload=p.workload_name,
                cluster_id=p.cluster_id, proxy_type=p.type.value, delta=conn.delta, peer=conn.peer,
                connected_since=conn.connected_at, pushes=conn.pushes, types=types,
                bytes_sent=conn.bytes_sent, responses_sent=conn.responses_sent,
                addresses=p.ip_addresses,
                locality="/".join((p.locality.region, p.locality.zone, p.locality.subzone)).rstrip("/"),
                envoy_version=conn.envoy_version,
            ))
        if extra:
            out = [replace(s, types=s.types + tuple(extra.get(s.node_id, ()))) for s in out]
        out.sort(key=lambda s: (s.node_id, s.connection_id))
        return out

    def rejections(self) -> list[Rejection]:
        """Every (proxy, type) whose last response the proxy rejected and has not accepted since (it keeps its
        last good config), with the EnvoyFilters that config carries when the translator can tell."""
        out: list[Rejection] = []
        explain = self._translator if isinstance(self._translator, ExplainsRejections) else None
        ctx = self._state.ctx if self._state is not None else None
        for conn in list(self._connections.values()):
            p = conn.proxy
            if p is None:
                continue
            for wt in conn.watched.values():
                if wt.state is not SyncState.NACKED or wt.last_nack is None:
                    continue
                sources = explain.rejection_sources(wt.type_url, p, ctx) if explain and ctx is not None else ()
                out.append(Rejection(p.id, p.namespace, p.workload_name, wt.type_url, wt.last_nack.error, sources))
        out.sort(key=lambda r: (r.node_id, r.type_url))
        return out

    @property
    def config(self) -> ConfigSnapshot:
        if self._stale:
            self._rebuild(full=True)
        return self._config

    @property
    def registry(self) -> RegistrySnapshot:
        if self._stale:
            self._rebuild(full=True)
        return self._registries.snapshot

    @property
    def registry_updates(self) -> int:
        """Registry updates applied incrementally (endpoint-only, no merge of the mesh)."""
        return self._registries.incremental_updates

    async def wait_idle(self) -> None:
        """Return once every change seen so far has been debounced and pushed (tests, benchmarks)."""
        while True:
            await self._debouncer.wait_idle()
            await asyncio.sleep(0)
            if len(self._queue) == 0 and self._queue.busy == 0 and not self._busy:
                await self._debouncer.wait_idle()
                if len(self._queue) == 0 and self._queue.busy == 0:
                    return
            await asyncio.sleep(0.005)

    # --- pipeline ----------------------------------------------------------------------------------------

    def _on_config_change(self, request: PushRequest) -> None:
        self._debouncer.add(request)

    def _rebuild(self, *, full: bool) -> PushRequest | None:
        """Take a new ConfigSnapshot and ask the registry for its update; build the next push state. Returns what
        to push (None: nothing changed)."""
        config = self._controller.snapshot()
        previous = self._state if not self._stale else None
        self._stale = False
        update = self._registries.update(config, full=full or previous is None)
        self._config = config
        hosts = update.hosts
        if hosts is not None and not hosts:
            return None
        if previous is not None and hosts:
            ctx = self._translator.with_registry(previous.ctx, update.snapshot, hosts)
            request = PushRequest(full=False, endpoints_updated=hosts)
        else:
            ctx = self._translator.build_context(config, update.snapshot)
            self.context_builds += 1
            request = PushRequest(full=True)
        self._epoch += 1
        self._state = PushState(ctx=ctx, epoch=self._epoch, config_version=config.version, encoder=Encoder())
        return request

    async def _flush(self, merged: PushRequest) -> None:
        # Only WorkloadEntries changed (or a registry source reported a change): endpoint-only, unless the
        # services themselves differ (``_rebuild`` checks). Anything else, or a relist, is a full push.
        full = any(k.gr != WORKLOAD_ENTRIES for k in merged.config_updated) or (
            merged.full and not merged.config_updated) or self._force_full
        self._force_full = False
        if not self._has_proxies():
            # Nobody to push to: build nothing now; the first proxy's request builds the state (``state``).
            self._stale = True
            self.deferred_flushes += 1
            return
        request = self._rebuild(full=full or self._stale)
        if request is None:
            return
        request = PushRequest(full=request.full, config_updated=merged.config_updated,
                              endpoints_updated=request.endpoints_updated, reasons=merged.reasons,
                              started=self._debouncer.burst_started)
        if request.full:
            self.full_pushes += 1
        else:
            self.eds_pushes += 1
        if self.metrics is not None:
            self.metrics.record_flush(full=request.full)
        ctx = self.state.ctx
        for conn in list(self._connections.values()):
            if conn.proxy is None or conn.closed.is_set():
                continue
            try:
                affected = self._translator.proxy_affected(conn.proxy, ctx, request)
            except Exception:
                log.exception("proxy_affected failed for %s", conn.node_id)
                affected = True
            if affected:
                self._queue.enqueue(conn, request)

    def _has_proxies(self) -> bool:
        return any(c.proxy is not None and not c.closed.is_set() for c in self._connections.values())

    async def _push_worker(self) -> None:
        """One of ``max_concurrent_pushes`` workers: takes connections off the queue and pushes them."""
        me = asyncio.current_task()
        assert me is not None
        loop = asyncio.get_running_loop()
        while True:
            conn, request = await self._queue.dequeue()
            self._busy[me] = loop.time() + self.settings.send_timeout
            try:
                self.pushes_started += 1
                await conn.push(request, self.state)
                if self.metrics is not None and request.started is not None:
                    self.metrics.record_convergence(loop.time() - request.started)
            except asyncio.CancelledError:
                expired = me in self._expired
                self._expired.discard(me)
                if not expired or me.uncancel() > 0:
                    raise  # a stop (or a stop as well as the timeout)
                log.warning("%s %s: push timed out; closing the stream", conn.id, conn.node_id)
                conn.closed.set()
            except Exception as exc:
                if not isinstance(exc, (grpc.RpcError, ConnectionError)):
                    log.exception("%s %s: push failed", conn.id, conn.node_id)
                conn.closed.set()
            finally:
                del self._busy[me]
                if me in self._expired:  # cancelled, but the push swallowed it and finished
                    self._expired.discard(me)
                    me.uncancel()
                self._queue.mark_done(conn)

    async def _push_watchdog(self) -> None:
        """Cancels a push that outlives ``send_timeout`` (the stream is then closed; the proxy reconnects)."""
        loop = asyncio.get_running_loop()
        period = min(1.0, max(0.01, self.settings.send_timeout / 4))
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for worker, deadline in list(self._busy.items()):
                if deadline <= now and worker not in self._expired:
                    self._expired.add(worker)
                    worker.cancel()

