"""One ADS stream: its proxy, its subscriptions per type, and how requests and pushes become responses.

Why a class of its own: requests from Envoy and pushes from the pipeline both change the per-type bookkeeping
and both write to the stream, so they are serialized by one lock per connection (Istio does the same with one
goroutine per connection). The protocol decisions themselves are in :func:`meshplane.xds.protocol.should_respond`;
this module only turns decisions and pushes into responses, in the spec's "make before break" order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2

from meshplane.metrics import ControlPlaneMetrics
from meshplane.model import xdstypes
from meshplane.model.proxy import Proxy
from meshplane.model.push import PushRequest
from meshplane.xds import encoding
from meshplane.xds.protocol import Decision, SyncState, Verdict, WatchedType, XdsRequest, should_respond
from meshplane.xds.translator import ResourceLike, Translator

log = logging.getLogger(__name__)

_NAMED_TYPES = frozenset({xdstypes.ENDPOINT, xdstypes.ROUTE})
# EDS subscriptions (a set of names) -> host -> names; shared by streams with equal subscriptions. A memo of a
# pure function, bounded: cleared when full.
_EDS_INDEXES: dict[frozenset[str], dict[str, list[str]]] = {}
_EDS_INDEXES_MAX = 256


class WriteBudget:
    """Bounds the bytes of responses being written at once, across all streams.

    Why: a thousand proxies connecting together each ask for megabytes (all clusters, all endpoints, all routes);
    written all at once, every response sits in gRPC's buffers until the clients read it, and the server's
    memory is the sum of them. Waiting for budget keeps memory at ``limit`` plus one response, and costs no
    time when clients keep up. A response larger than the limit goes alone.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.waited = 0
        self._released = asyncio.Event()

    async def acquire(self, size: int) -> None:
        while self.in_flight and self.in_flight + size > self.limit:
            self.waited += 1
            self._released.clear()
            await self._released.wait()
        self.in_flight += size

    def release(self, size: int) -> None:
        self.in_flight -= size
        self._released.set()


@dataclass(frozen=True, slots=True)
class PushState:
    """What every push and response of one epoch uses: the immutable context and its encoder cache."""

    ctx: object
    epoch: int
    config_version: int
    encoder: encoding.Encoder


class Connection:
    """State of one stream. ``send`` writes encoded bytes to the stream (it may raise when the stream is gone)."""

    _ids = itertools.count(1)

    def __init__(self, *, delta: bool, peer: str, translator: Translator,
                 send: Callable[[bytes], Awaitable[None]], metrics: ControlPlaneMetrics | None = None) -> None:
        self.id = f"{'delta' if delta else 'sotw'}-{next(self._ids)}"
        self.delta = delta
        self.peer = peer
        self.proxy: Proxy | None = None
        self.envoy_version = ""  # what the first request's node says it runs ("1.31.2"; "" when it does not say)
        self.connected_at = time.time()
        self.watched: dict[str, WatchedType] = {}
        self.lock = asyncio.Lock()
        self.closed = asyncio.Event()
        self.pushes = 0
        self._translator = translator
        self._send = send
        self._nonces: dict[str, int] = {}  # type URL -> responses sent of that type
        self._eds_index: tuple[int, dict[str, list[str]]] = (-1, {})
        self._replaced_clusters: list[ResourceLike] = []
        self.budget: WriteBudget | None = None  # set by the server on register
        self.bytes_sent = 0
        # When the response being written started to be handed to the stream (loop time), None between writes:
        # the push watchdog times the proxy's taking of a write, not the queueing before it (budget, CPU).
        self.write_started: float | None = None
        self.responses_sent = 0
        self.generate_errors: dict[str, str] = {}  # type URL -> why the last generation failed
        self._last_good: dict[str, Sequence[ResourceLike]] = {}
        self._metrics = metrics

    # --- requests -------------------------------------------------------------------------------------------

    async def handle(self, req: XdsRequest, state: PushState) -> Decision:
        """Apply one request; answer it when the protocol says so."""
        async with self.lock:
            wt, decision = should_respond(self.watched.get(req.type_url), req)
            self.watched[req.type_url] = wt
            if decision.verdict is Verdict.NACK and wt.last_nack is not None:
                log.warning("%s %s NACKed %s nonce %s: %s", self.id, self.node_id,
                            xdstypes.SHORT_NAMES.get(req.type_url, req.type_url), req.nonce, wt.last_nack.error)
                if self._metrics is not None:
                    self._metrics.record_reject(_metric_type(req.type_url))
            if decision.respond:
                if self.delta:
                    await self._send_delta(wt, state, only=decision.names,
                                           initial=decision.verdict is Verdict.INITIAL)
                else:
                    await self._send_sotw(wt, state, force=True, only_changed=False)
            return decision

    # --- pushes ---------------------------------------------------------------------------------------------

    async def push(self, request: PushRequest, state: PushState) -> None:
        """Send what ``request`` changed, for the types this stream watches, in push order."""
        async with self.lock:
            if self.closed.is_set():
                return
            self.pushes += 1
            if not request.full:
                wt = self.watched.get(xdstypes.ENDPOINT)
                if wt is None:
                    return
                names = self._eds_names_for(wt, request.endpoints_updated)
                if not names:
                    return
                if self.delta:
                    await self._send_delta(wt, state, restrict=names)
                else:
                    await self._send_sotw(wt, state, force=False, only_changed=True, names=names)
                return
            forced: dict[str, frozenset[str]] = {}
            for type_url in (*xdstypes.PUSH_ORDER, *(t for t in self.watched if t not in xdstypes.PUSH_ORDER)):
                wt = self.watched.get(type_url)
                if wt is None:
                    continue
                if self.delta:
                    changed = await self._send_delta(wt, state, force_names=forced.get(type_url, frozenset()))
                    self._delta_warming(type_url, changed, forced)
                else:
                    await self._send_sotw(wt, state, force=False, only_changed=type_url in _NAMED_TYPES)

    # --- State of the World ----------------------------------------------------------------------------------

    async def _send_sotw(self, wt: WatchedType, state: PushState, *, force: bool, only_changed: bool,
                         names: Collection[str] | None = None) -> bool:
        assert self.proxy is not None
        if wt.wildcard:
            resources = self._generate(wt.type_url, state, None)
        else:
            resources = self._generate(wt.type_url, state, wt.names if names is None else names)
        if resources is None:
            return False
        try:
            whole = wt.wildcard or not only_changed
            shared = whole  # the resources are a list shared with other streams (its bytes are cached)
            if whole:
                blob, key, versions = state.encoder.sotw_list(wt.type_url, resources)
                if wt.wildcard and not force and key == wt.full_version_sent:
                    return False  # unchanged
            else:
                sent = wt.sent
                if isinstance(resources, tuple) and all(sent.get(r.name) != r.version for r in resources):
                    # The usual endpoint push: all of it is new, and the tuple is shared by every proxy with
                    # the same view, so its encoding (and, below, its response bytes) is built once.
                    shared = True
                    blob, key, versions = state.encoder.sotw_list(wt.type_url, resources)
                else:
                    resources = [r for r in resources if sent.get(r.name) != r.version]
                    if not resources:
                        return False
                    blob = b"".join(state.encoder.sotw_resource(wt.type_url, r) for r in resources)
                    key = encoding.content_key((r.name, r.version) for r in resources)
                    versions = {r.name: r.version for r in resources}
        except encoding.TypeUrlMismatch:
            log.exception("%s: not sending %s", self.id, wt.type_url)
            return False
        if not force and key in wt.nacked_content:
            return False  # the client rejected exactly this; wait for a config change
        nonce = self._nonce(wt.type_url)
        wt.record_send(nonce, key, key, versions)
        if wt.wildcard:
            wt.full_version_sent = key
        # A shared list is sent by many streams: its response bytes are too (built once per nonce).
        respond = state.encoder.sotw_response if shared else encoding.sotw_response
        await self._write(len(blob) + 256, lambda: respond(key, wt.type_url, nonce, blob))
        if self._metrics is not None:
            self._metrics.record_push(_metric_type(wt.type_url))
        # Resource warming: after CDS (LDS), Envoy re-requests EDS (RDS) with unchanged names, version and
        # nonce; that request must be answered (see should_respond, rule 4).
        follower = {xdstypes.CLUSTER: xdstypes.ENDPOINT, xdstypes.LISTENER: xdstypes.ROUTE}.get(wt.type_url)
        if follower is not None and follower in self.watched:
            self.watched[follower].always_respond = True
        return True

    # --- Delta -------------------------------------------------------------------------------------------

    async def _send_delta(self, wt: WatchedType, state: PushState, *, only: frozenset[str] | None = None,
                          initial: bool = False, force_names: frozenset[str] = frozenset(),
                          restrict: Collection[str] | None = None) -> list[str]:
        """Send resources whose version differs from what the client holds; returns the names of resources
        that replaced an older version (for warming). ``only``: answer a subscription of these names."""
        assert self.proxy is not None
        if only is not None:
            query: Collection[str] | None = only
        elif restrict is not None:
            query = restrict
        else:
            query = None if wt.wildcard else wt.names
        resources = self._generate(wt.type_url, state, query)
        if resources is None:
            return []
        existing = {r.name for r in resources}
        to_send = [r for r in resources
                   if (only is not None and r.name in only) or r.name in force_names
                   or wt.sent.get(r.name) != r.version]
        removed: set[str]
        if only is not None:
            removed = set(only - existing)
        elif restrict is not None:
            removed = {n for n in restrict if n in wt.sent and n not in existing}
        else:
            removed = {n for n in wt.sent if n not in existing and (wt.wildcard or n in wt.names)}
        if not to_send and not removed and not initial:
            if wt.state is SyncState.NACKED and not wt.pending and only is None and restrict is None:
                # What the client holds (its last good config) is again exactly what it should have.
                wt.state = SyncState.SYNCED
            return []
        key = encoding.content_key(((r.name, r.version) for r in to_send), sorted(removed))
        if key in wt.nacked_content and not initial and only is None:
            return []
        try:
            parts = [state.encoder.delta_resource(wt.type_url, r) for r in to_send]
        except encoding.TypeUrlMismatch:
            log.exception("%s: not sending %s", self.id, wt.type_url)
            return []
        replaced = [r.name for r in to_send if r.name in wt.sent]
        nonce = self._nonce(wt.type_url)
        wt.record_send(nonce, str(state.config_version), key, {r.name: r.version for r in to_send},
                       frozenset(removed))
        version = str(state.config_version)
        await self._write(sum(map(len, parts)) + 256 + sum(len(n) + 4 for n in removed),
                          lambda: encoding.delta_response(version, wt.type_url, nonce, b"".join(parts), removed))
        if self._metrics is not None:
            self._metrics.record_push(_metric_type(wt.type_url))
        if wt.type_url == xdstypes.CLUSTER:
            replaced_set = set(replaced)
            self._replaced_clusters = [r for r in to_send if r.name in replaced_set]
        return replaced

    def _delta_warming(self, type_url: str, replaced: list[str], forced: dict[str, frozenset[str]]) -> None:
        """Delta resource warming: an updated cluster (listener) waits for its ClusterLoadAssignment (routes),
        and Envoy sends no request for names it already subscribes to: re-push them (xDS notes, trap 1)."""
        if not replaced:
            return
        if type_url == xdstypes.CLUSTER and xdstypes.ENDPOINT in self.watched:
            eds = self.watched[xdstypes.ENDPOINT]
            names = set(replaced)
            for r in self._replaced_clusters:
                names.add(_eds_service_name(r))
            forced[xdstypes.ENDPOINT] = frozenset(n for n in names if n in eds.names or eds.wildcard)
        elif type_url == xdstypes.LISTENER and xdstypes.ROUTE in self.watched:
            forced[xdstypes.ROUTE] = frozenset(self.watched[xdstypes.ROUTE].names)

    # --- helpers ------------------------------------------------------------------------------------------

    def _generate(self, type_url: str, state: PushState,
                  names: Collection[str] | None) -> Sequence[ResourceLike] | None:
        """The resources to send, or None to send nothing. When translation fails the failure is logged and
        kept (``generate_errors``, shown in proxy status) and the last good resources of the type stand in: a
        request is then answered with what the proxy already runs (Envoy does not wait for its fetch timeout)
        and a push changes nothing. Without a last good result (a new stream) nothing is sent: an empty
        answer would wipe what a reconnecting Envoy still holds."""
        assert self.proxy is not None
        try:
            resources = self._translator.generate(type_url, self.proxy, state.ctx, names)
        except Exception as exc:
            log.exception("%s %s: generating %s failed; keeping the last good config", self.id, self.node_id,
                          type_url)
            self.generate_errors[type_url] = f"{type(exc).__name__}: {exc}"
            last = self._last_good.get(type_url)
            if last is None:
                return None
            if names is None:
                return last
            wanted = names if isinstance(names, (set, frozenset)) else set(names)
            return [r for r in last if r.name in wanted]
        self.generate_errors.pop(type_url, None)
        wt = self.watched.get(type_url)
        if names is None or (wt is not None and names is wt.names):
            self._last_good[type_url] = resources  # usually a tuple shared with other proxies
        return resources

    def _eds_names_for(self, wt: WatchedType, hosts: Collection[str]) -> list[str]:
        """Subscribed ClusterLoadAssignment names of these service hosts. Names follow Istio's
        ``outbound|PORT|SUBSET|HOST`` (the host is the last field); a name without ``|`` is its own host.
        The index over the names is shared by every stream that subscribes to the same names (the usual case:
        proxies of one scope), so an endpoint push does not index a thousand names per stream."""
        rev, index = self._eds_index
        if rev != wt.names_rev or not index:
            names = frozenset(wt.names)
            index = _EDS_INDEXES.get(names) or {}
            if not index:
                for name in names:
                    index.setdefault(name.rpartition("|")[2], []).append(name)
                if len(_EDS_INDEXES) >= _EDS_INDEXES_MAX:
                    _EDS_INDEXES.clear()
                _EDS_INDEXES[names] = index
            self._eds_index = (wt.names_rev, index)
        out: list[str] = []
        for host in hosts:
            out.extend(index.get(host, ()))
        return out

    def _nonce(self, type_url: str) -> str:
        """Unique within the stream (type and a per-type count), which is all the protocol asks of a nonce; not
        unique across streams, so streams that send the same list as their n-th response of a type send equal
        bytes, built once (``Encoder.sotw_response``)."""
        n = self._nonces[type_url] = self._nonces.get(type_url, 0) + 1
        return f"{xdstypes.SHORT_NAMES.get(type_url, type_url)}-{n}"

    async def _write(self, size: int, build: Callable[[], bytes]) -> None:
        """Write one response of about ``size`` bytes. The bytes are built only once the write budget admits
        them, so streams waiting for budget hold no per-stream copy of a large response."""
        budget = self.budget
        if budget is not None:
            await budget.acquire(size)
        try:
            data = build()
            self.write_started = asyncio.get_running_loop().time()
            await self._send(data)
            self.bytes_sent += len(data)
            self.responses_sent += 1
        except Exception:
            self.closed.set()
            raise
        finally:
            self.write_started = None
            if budget is not None:
                budget.release(size)

    @property
    def node_id(self) -> str:
        return self.proxy.id if self.proxy is not None else ""


def _eds_service_name(r: ResourceLike) -> str:
    cluster = cluster_pb2.Cluster()
    if r.resource.Unpack(cluster) and cluster.eds_cluster_config.service_name:
        return str(cluster.eds_cluster_config.service_name)
    return r.name


def _metric_type(type_url: str) -> str:
    """istiod's ``type`` label: ``cds``, ``eds``, ``lds``, ``rds``, ``sds``; other types by their message name."""
    short = xdstypes.SHORT_NAMES.get(type_url)
    return short.lower() if short is not None else type_url.rsplit(".", 1)[-1]
