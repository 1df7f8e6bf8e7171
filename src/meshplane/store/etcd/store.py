"""The replicated store: API objects in etcd v3, one local index per replica kept current by an etcd watch.

Why etcd: several control-plane replicas (on one machine or many) must share one state with the guarantees the
SQLite store gives one process: durable before visible, one revision counter, watches that resume. etcd is the
store Kubernetes itself uses for that; its revision *is* the resourceVersion, so a client that watched one replica
can resume its watch on another with the resourceVersion it has.

Layout under the key prefix (default ``/meshplane/``):

- ``o/<group>/<resource>/<namespace>/<name>``: one object, its JSON without ``metadata.resourceVersion`` (that is
  the key's ``mod_revision``, filled in when read).
- ``a/<uuid>``: one audit record; its ``mod_revision`` is the rv of the change it records (written in the change's
  transaction, so both share a revision). Each replica keeps the newest ``audit_limit`` in memory; when its copy
  goes a tenth past that, it drops the oldest and deletes their keys from etcd (deleting a key another replica
  deleted already does nothing).

How a write goes: it is validated against the local index (the last state this replica has seen), then sent as one
transaction whose compare is that state's revision (``create``: the key does not exist), so etcd itself decides
races between replicas. When the compare fails, the transaction's failure branch returns the current state and the
write validates again against it (or reports ``Conflict`` / ``AlreadyExists`` / ``NotFound``). The transaction's
revision is the new resourceVersion. The write returns once this replica's watch has applied that revision, so a
replica reads its own writes; other replicas see it as soon as their watch delivers it (milliseconds on one LAN).

Durable before visible: etcd answers a transaction only after a quorum fsynced it in the raft log, and its watch
delivers only committed revisions; the local index is fed by the watch alone. Group commit: concurrent writes are
concurrent transactions on one HTTP/2 connection; etcd batches the raft proposals that arrive together into one
log append and one fsync, so each write still gets its own revision (kube-apiserver writes etcd the same way).

Watches: live events and the recent history (``history_limit`` events) come from the local index, as in the other
backends. A ``since_rv`` older than the local history (a watch moving here from another replica, or this replica
just started) is served by an etcd watch from that revision, with ``Expired`` (HTTP 410) when etcd has compacted
it. Compaction: after a write, when the history is ``history_limit`` revisions longer than needed, the replica
compacts etcd to ``current - history_limit``; compacting is idempotent, so any replica may do it.

A write whose transaction times out (etcd unreachable) fails with ``StorageFailure``; unlike SQLite its outcome is
then unknown (it may have been committed), exactly as for any etcd client. If this replica's watch falls behind a
compaction (a long partition), the index is rebuilt from a fresh read and every open watch ends with ``Expired``
(their clients list again).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import uuid
from bisect import bisect_right
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meshplane.store._core import (
    _VERBS,
    DEFAULT_AUDIT_LIMIT,
    DEFAULT_HISTORY_LIMIT,
    CommittedIndex,
    _key_of,
    _resource_label,
    _spec_of,
    audit_excess,
    copy_json,
    object_rv,
    rfc3339,
    rfc3339_micro,
    valid_audit_limit,
)
from meshplane.store._watch import DEFAULT_WATCH_QUEUE_SIZE, StoreWatch, WatchHub
from meshplane.store.errors import AlreadyExists, Conflict, Expired, NotFound, StorageFailure, StoreError
from meshplane.store.etcd._client import (
    DELETE,
    EtcdClient,
    EtcdCompacted,
    EtcdSettings,
    EtcdUnavailable,
    KeyValue,
    prefix_end,
)
from meshplane.store.interface import Store
from meshplane.store.types import AuditRecord, EventType, GroupResource, JSONObject, ObjectKey, WatchEvent

__all__ = ["EtcdStore"]

log = logging.getLogger(__name__)

_MAX_ATTEMPTS = 50  # a write that loses this many races in a row to other writers gives up (StorageFailure)


_TRIM_CHUNK = 100  # deletes per transaction (etcd's default limit is 128 operations)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class EtcdStore(CommittedIndex):
    """``Store`` on etcd v3. See the module docstring for the design.

    ``history_limit``: revisions of history kept (locally for fast resumes, and in etcd before compaction; >= 1).
    ``watch_queue_size``: live events a watch may fall behind before it ends with ``Expired``.
    ``max_batch``: the most events published in one event-loop step (at most ``watch_queue_size``).
    ``audit_limit``: the newest audit records kept (0: every record).
    """

    def __init__(
        self,
        settings: EtcdSettings,
        *,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        clock: Callable[[], datetime] | None = None,
        watch_queue_size: int = DEFAULT_WATCH_QUEUE_SIZE,
        max_batch: int | None = None,
        audit_limit: int = DEFAULT_AUDIT_LIMIT,
    ) -> None:
        if history_limit < 1:
            raise ValueError("history_limit must be >= 1 on etcd (etcd always keeps its latest revision)")
        if max_batch is None:
            max_batch = min(2_000, watch_queue_size)
        if watch_queue_size < max_batch:
            raise ValueError("watch_queue_size must be >= max_batch")
        super().__init__()  # the local index, fed by the etcd watch (_compacted_rv: etcd history up to it is gone)
        self.settings = settings
        self.client = EtcdClient(settings)
        self._history_limit = history_limit
        self._clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._watch_queue_size = watch_queue_size
        self._max_batch = max_batch
        prefix = settings.prefix.encode()
        self._objects_prefix = prefix + b"o/"
        self._audit_prefix = prefix + b"a/"
        self._prefix = prefix

        self._history: list[WatchEvent] = []
        self._history_start = 0  # the local history has every change with rv > this
        self._audit: list[AuditRecord] = []
        self._audit_keys: list[bytes] = []  # the etcd key of each record of _audit, in the same order
        self._audit_limit = valid_audit_limit(audit_limit)
        self._trimmer: asyncio.Task[None] | None = None
        self._trim_keys: list[bytes] = []  # keys to delete from etcd (records dropped from the local copy)
        self._hub = WatchHub()
        self._replays: set[_EtcdReplayWatch] = set()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._follower: asyncio.Task[None] | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._writes = 0  # writes in flight
        self._writes_done: asyncio.Event | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self.committed_writes: Counter[tuple[str, ...]] = Counter()

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("store already started")
        await self.client.connect()
        try:
            revision = await self._load()
        except BaseException:
            await self.client.close()
            raise
        self._writes_done = asyncio.Event()
        self._writes_done.set()
        self._follower = asyncio.get_running_loop().create_task(self._follow(revision + 1), name="etcd-follower")
        self._started = True

    async def _load(self) -> int:
        """Read every object and audit record at one revision; the watch continues after it."""
        try:
            objects = await self.client.range(self._objects_prefix, prefix_end(self._objects_prefix))
            revision = int(objects.header.revision)
            audits = await self.client.range(
                self._audit_prefix, prefix_end(self._audit_prefix), revision=revision, sort_by_mod=True
            )
        except StoreError as e:
            raise StorageFailure(f"cannot read the store from etcd {','.join(self.settings.endpoints)}: {e}") from e
        self._collections = {}
        for kv in objects.kvs:
            decoded = self._decode_object(kv)
            if decoded is not None:
                key, obj = decoded
                self._collection(key.gr).put(key.namespace, key.name, obj)
        kept = [(kv.key, record) for kv in audits.kvs if (record := self._decode_audit(kv)) is not None]
        self._audit = [record for _, record in kept]
        self._audit_keys = [key for key, _ in kept]
        self._committed_rv = revision
        self._history = []
        self._history_start = revision
        return revision

    async def close(self) -> None:
        """Stop taking writes, wait for the writes in flight, end every watch, close the connection."""
        if not self._started or self._closed.is_set():
            return
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            assert self._writes_done is not None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.timeout * 2):
                    await self._writes_done.wait()
            for task in (self._follower, self._compactor, self._trimmer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            self._hub.close_all()
            for replay in list(self._replays):
                replay.close()
            for _, future in self._waiters:
                if not future.done():
                    future.set_exception(StorageFailure("store is closed"))
            self._waiters = []
            await self.client.close()
        finally:
            self._closed.set()

    # -- reads: the local index (get, list: CommittedIndex) ------------------------------------------------------

    def audit(self, since_rv: int = 0, limit: int = 500) -> builtins.list[AuditRecord]:
        self._require_started()
        start = bisect_right(self._audit, since_rv, key=lambda r: r.rv)
        end = bisect_right(self._audit, self._committed_rv, key=lambda r: r.rv)
        return self._audit[start : min(end, start + max(limit, 0))]

    def watch(
        self, gr: GroupResource | None = None, namespace: str | None = None, since_rv: int | None = None
    ) -> StoreWatch | _EtcdReplayWatch:
        """See ``Store.watch``: from the local index, or from etcd for a ``since_rv`` older than local history."""
        self._require_started()
        watch = StoreWatch(self._hub, gr, namespace, self._watch_queue_size)
        if self._closing:
            watch.end()
            return watch
        if since_rv and since_rv < self._compacted_rv:
            watch.fail(Expired(since_rv, self._compacted_rv))
            return watch
        if since_rv and since_rv < self._history_start:
            replay = _EtcdReplayWatch(self, gr, namespace, since_rv)
            self._replays.add(replay)
            return replay
        self._hub.subscribe(watch)
        if not since_rv:
            grs = [gr] if gr is not None else sorted(self._collections)
            initial = [
                WatchEvent(EventType.ADDED, g, obj, object_rv(obj))
                for g in grs
                if g in self._collections
                for obj in self._collections[g].list(namespace)
            ]
            watch.begin(initial, self._committed_rv)
            return watch
        start = bisect_right(self._history, since_rv, key=lambda e: e.rv)
        watch.begin((e for e in self._history[start:] if watch.matches(e)), since_rv)
        return watch

    # -- writes ---------------------------------------------------------------------------------------------------

    async def create(self, gr: GroupResource, obj: JSONObject, *, actor: str) -> JSONObject:
        body = copy_json(obj)
        key = _key_of(gr, body)
        self._require_writable()
        metadata = body["metadata"]
        for owned in ("resourceVersion", "uid", "generation", "creationTimestamp"):
            metadata.pop(owned, None)
        now = self._clock()
        metadata["uid"] = str(uuid.uuid4())
        metadata["generation"] = 1
        metadata["creationTimestamp"] = rfc3339(now)
        ekey = self._object_key(key)
        async with self._write():
            response = await self._txn(
                [self.client.absent(ekey)],
                [self.client.put(ekey, _dumps(body)), self._audit_op("create", key, metadata, actor, now, None, 1)],
                [],
            )
            if not response.succeeded:
                raise AlreadyExists(key.gr, key.namespace, key.name)
            return await self._written(response, body)

    async def update(
        self, gr: GroupResource, obj: JSONObject, *, actor: str, expected_rv: int | None = None
    ) -> JSONObject:
        body = copy_json(obj)
        key = _key_of(gr, body)
        self._require_writable()
        ekey = self._object_key(key)
        async with self._write():
            old = self.get(key.gr, key.namespace, key.name)
            if old is None or (expected_rv is not None and expected_rv != object_rv(old)):
                old = await self._fetch(ekey)  # this replica may not have seen the latest state yet
            for _ in range(_MAX_ATTEMPTS):
                if old is None:
                    raise NotFound(key.gr, key.namespace, key.name)
                old_rv = object_rv(old)
                if expected_rv is not None and expected_rv != old_rv:
                    raise Conflict(key.gr, key.namespace, key.name)
                old_metadata = old["metadata"]
                metadata = dict(body["metadata"])
                for owned in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                    metadata[owned] = old_metadata[owned]
                candidate = {**body, "metadata": metadata}
                compare = [self.client.mod_revision_is(ekey, old_rv)]
                if candidate == old:
                    # A no-op against the state it was validated on: confirm that state is still the latest.
                    response = await self._txn(compare, [], [self.client.get(ekey)])
                    if response.succeeded:
                        return old
                    old = self._failure_state(response)
                    continue
                old_generation: int = old_metadata["generation"]
                new_generation = old_generation + 1 if _spec_of(candidate) != _spec_of(old) else old_generation
                now = self._clock()
                metadata["generation"] = new_generation
                stored = {**candidate, "metadata": {k: v for k, v in metadata.items() if k != "resourceVersion"}}
                response = await self._txn(
                    compare,
                    [
                        self.client.put(ekey, _dumps(stored)),
                        self._audit_op("update", key, metadata, actor, now, old_generation, new_generation),
                    ],
                    [self.client.get(ekey)],
                )
                if response.succeeded:
                    return await self._written(response, stored)
                old = self._failure_state(response)
            raise StorageFailure(f"{gr} {key.name!r}: gave up after {_MAX_ATTEMPTS} conflicting concurrent writes")

    async def delete(
        self, gr: GroupResource, namespace: str, name: str, *, actor: str, expected_rv: int | None = None
    ) -> JSONObject:
        self._require_writable()
        key = ObjectKey(GroupResource(*gr), namespace, name)
        ekey = self._object_key(key)
        async with self._write():
            old = self.get(key.gr, namespace, name)
            if old is None or (expected_rv is not None and expected_rv != object_rv(old)):
                old = await self._fetch(ekey)
            for _ in range(_MAX_ATTEMPTS):
                if old is None:
                    raise NotFound(key.gr, namespace, name)
                old_rv = object_rv(old)
                if expected_rv is not None and expected_rv != old_rv:
                    raise Conflict(key.gr, namespace, name)
                now = self._clock()
                response = await self._txn(
                    [self.client.mod_revision_is(ekey, old_rv)],
                    [
                        self.client.delete(ekey),
                        self._audit_op("delete", key, old["metadata"], actor, now, old["metadata"]["generation"], None),
                    ],
                    [self.client.get(ekey)],
                )
                if response.succeeded:
                    rv = int(response.header.revision)
                    await self._applied(rv)
                    return {**old, "metadata": {**old["metadata"], "resourceVersion": str(rv)}}
                old = self._failure_state(response)
            raise StorageFailure(f"{gr} {name!r}: gave up after {_MAX_ATTEMPTS} conflicting concurrent writes")

    # -- write helpers --------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        assert self._writes_done is not None
        self._writes += 1
        self._writes_done.clear()
        try:
            yield
        finally:
            self._writes -= 1
            if self._writes == 0:
                self._writes_done.set()

    async def _txn(
        self, compare: builtins.list[Any], success: builtins.list[Any], failure: builtins.list[Any]
    ) -> Any:
        try:
            return await self.client.txn(compare, success, failure)
        except StoreError as e:
            raise StorageFailure(f"etcd transaction failed (its outcome is unknown if it timed out): {e}") from e

    async def _fetch(self, ekey: bytes) -> JSONObject | None:
        try:
            response = await self.client.range(ekey)
        except StoreError as e:
            raise StorageFailure(f"etcd read failed: {e}") from e
        if not response.kvs:
            return None
        decoded = self._decode_object(response.kvs[0])
        return None if decoded is None else decoded[1]

    def _failure_state(self, response: Any) -> JSONObject | None:
        """The object's current state from a transaction's failure branch (one range of its key)."""
        kvs = response.responses[0].response_range.kvs
        if not kvs:
            return None
        decoded = self._decode_object(kvs[0])
        return None if decoded is None else decoded[1]

    async def _written(self, response: Any, stored: JSONObject) -> JSONObject:
        rv = int(response.header.revision)
        await self._applied(rv)
        return {**stored, "metadata": {**stored["metadata"], "resourceVersion": str(rv)}}

    async def _applied(self, rv: int) -> None:
        """Wait until the local index has ``rv`` (read-your-writes), then compact if the history is long enough."""
        if self._committed_rv < rv:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((rv, future))
            await future
        self._maybe_compact()

    def _audit_op(
        self,
        verb: str,
        key: ObjectKey,
        metadata: dict[str, Any],
        actor: str,
        now: datetime,
        old_generation: int | None,
        new_generation: int | None,
    ) -> Any:
        record = {
            "timestamp": rfc3339_micro(now),
            "actor": actor,
            "verb": verb,
            "group": key.gr.group,
            "resource": key.gr.resource,
            "namespace": key.namespace,
            "name": key.name,
            "uid": str(metadata["uid"]),
            "old_generation": old_generation,
            "new_generation": new_generation,
        }
        return self.client.put(self._audit_prefix + uuid.uuid4().hex.encode(), _dumps(record))

    def _maybe_compact(self) -> None:
        target = self._committed_rv - self._history_limit
        step = max(1, self._history_limit // 10)
        if target < self._compacted_rv + step:
            return
        self._compacted_rv = target  # what this replica promises from now on; etcd follows in a moment
        del self._history[: bisect_right(self._history, target, key=lambda e: e.rv)]
        self._history_start = max(self._history_start, target)
        if self._compactor is None or self._compactor.done():
            self._compactor = asyncio.get_running_loop().create_task(self._compact(), name="etcd-compact")

    def _trim_audit(self) -> None:
        excess = audit_excess(len(self._audit), self._audit_limit)
        if not excess:
            return
        self._trim_keys.extend(self._audit_keys[:excess])
        del self._audit[:excess], self._audit_keys[:excess]
        if not self._closing and (self._trimmer is None or self._trimmer.done()):
            self._trimmer = asyncio.get_running_loop().create_task(self._delete_trimmed(), name="etcd-audit-trim")

    async def _delete_trimmed(self) -> None:
        """Delete the dropped audit records' keys, a bounded transaction at a time."""
        while self._trim_keys:
            chunk, self._trim_keys = self._trim_keys[:_TRIM_CHUNK], self._trim_keys[_TRIM_CHUNK:]
            try:
                await self.client.txn([], [self.client.delete(k) for k in chunk], [])
            except StoreError as e:
                log.warning("etcd: deleting %d old audit records failed (they stay until the next trim): %s",
                            len(chunk), e)
                return

    async def _compact(self) -> None:
        """Compact etcd to the promised point, and again while the promise moved on during the call."""
        done = 0
        while done < self._compacted_rv:
            revision = self._compacted_rv + 1  # etcd keeps revisions >= this: watches from compacted_rv still work
            try:
                await self.client.compact(revision)
            except EtcdCompacted:
                pass  # another replica compacted further already
            except StoreError as e:
                log.warning("etcd compaction to %d failed: %s", revision, e)
                return
            done = revision - 1

    # -- following etcd -------------------------------------------------------------------------------------------

    async def _follow(self, start: int) -> None:
        """Apply every change under the prefix to the local index, resuming after breaks, forever."""
        backoff = 0.1
        while True:
            try:
                async for response in self.client.watch(self._prefix, prefix_end(self._prefix), start):
                    backoff = 0.1
                    published = 0
                    for event in response.events:
                        self._apply(event)
                        published += 1
                        if published >= self._max_batch:
                            self._release_waiters()
                            await asyncio.sleep(0)  # let watchers drain: one step never overflows a healthy one
                            published = 0
                    self._release_waiters()
                    if response.events:
                        start = int(response.events[-1].kv.mod_revision) + 1
                    await asyncio.sleep(0)
            except EtcdCompacted as e:
                log.warning("etcd compacted past this replica's watch (%s); reloading the store", e)
                await self._reload()
                start = self._committed_rv + 1
            except EtcdUnavailable as e:
                log.warning("etcd watch interrupted (%s); resuming from revision %d", e, start)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _reload(self) -> None:
        while True:
            try:
                await self._load()
                break
            except StorageFailure as e:
                log.warning("%s", e)
                await asyncio.sleep(1.0)
        self._compacted_rv = self._committed_rv
        overtaken = [w for ws in self._hub._by_gr.values() for w in ws]
        for watch in overtaken:
            self._hub.unsubscribe(watch)
            watch.fail(Expired(watch.last_rv, self._committed_rv))
        self._release_waiters()

    def _apply(self, event: Any) -> None:
        kv = event.kv
        rv = int(kv.mod_revision)
        if kv.key.startswith(self._audit_prefix):
            if event.type != DELETE and (record := self._decode_audit(kv)) is not None:
                self._audit.append(record)
                self._audit_keys.append(kv.key)
                self._trim_audit()
            self._committed_rv = max(self._committed_rv, rv)
            return
        if not kv.key.startswith(self._objects_prefix):
            self._committed_rv = max(self._committed_rv, rv)
            return
        watch_event = self._event_of(event)
        self._committed_rv = max(self._committed_rv, rv)
        if watch_event is None:
            return
        obj = watch_event.obj
        collection = self._collection(watch_event.gr)
        namespace = obj["metadata"].get("namespace") or ""
        if watch_event.type == EventType.DELETED:
            collection.remove(namespace, obj["metadata"]["name"])
        else:
            collection.put(namespace, obj["metadata"]["name"], obj)
        self._history.append(watch_event)
        if len(self._history) > self._history_limit:
            excess = len(self._history) - self._history_limit
            self._history_start = self._history[excess - 1].rv
            del self._history[:excess]
        self.committed_writes[(_resource_label(watch_event.gr), _VERBS[watch_event.type])] += 1
        self._hub.publish(watch_event)

    def _event_of(self, event: Any) -> WatchEvent | None:
        """One etcd event on an object key as a store event (None for a key this store does not understand)."""
        kv = event.kv
        if event.type == DELETE:
            parsed = self._parse_key(kv.key)
            if parsed is None:
                return None
            last: JSONObject | None = None
            if event.HasField("prev_kv"):
                decoded = self._decode_object(event.prev_kv)
                last = None if decoded is None else decoded[1]
            if last is None:
                last = self.get(parsed.gr, parsed.namespace, parsed.name)
            if last is None:
                return None
            last = {**last, "metadata": {**last["metadata"], "resourceVersion": str(kv.mod_revision)}}
            return WatchEvent(EventType.DELETED, parsed.gr, last, int(kv.mod_revision))
        decoded = self._decode_object(kv)
        if decoded is None:
            return None
        key, obj = decoded
        kind = EventType.ADDED if int(kv.version) == 1 else EventType.MODIFIED
        return WatchEvent(kind, key.gr, obj, int(kv.mod_revision))

    def _release_waiters(self) -> None:
        if not self._waiters:
            return
        keep: builtins.list[tuple[int, asyncio.Future[None]]] = []
        for rv, future in self._waiters:
            if rv <= self._committed_rv:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((rv, future))
        self._waiters = keep

    # -- encoding -------------------------------------------------------------------------------------------------

    def _object_key(self, key: ObjectKey) -> bytes:
        return self._objects_prefix + f"{key.gr.group}/{key.gr.resource}/{key.namespace}/{key.name}".encode()

    def collection_prefix(self, gr: GroupResource | None, namespace: str | None) -> bytes:
        if gr is None:
            return self._objects_prefix
        prefix = self._objects_prefix + f"{gr.group}/{gr.resource}/".encode()
        return prefix if namespace is None else prefix + f"{namespace}/".encode()

    def _parse_key(self, raw: bytes) -> ObjectKey | None:
        parts = raw[len(self._objects_prefix) :].decode(errors="replace").split("/")
        if len(parts) != 4:
            return None
        return ObjectKey(GroupResource(parts[0], parts[1]), parts[2], parts[3])

    def _decode_object(self, kv: KeyValue) -> tuple[ObjectKey, JSONObject] | None:
        key = self._parse_key(kv.key)
        if key is None:
            return None
        try:
            obj = json.loads(kv.value)
            obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
        except (ValueError, TypeError, KeyError):
            log.warning("etcd key %r does not hold a stored object; ignored", kv.key)
            return None
        return key, obj

    def _decode_audit(self, kv: KeyValue) -> AuditRecord | None:
        try:
            data = json.loads(kv.value)
            return AuditRecord(rv=int(kv.mod_revision), **data)
        except (ValueError, TypeError):
            log.warning("etcd key %r does not hold an audit record; ignored", kv.key)
            return None

    def _require_writable(self) -> None:
        self._require_started()
        if self._closing:
            raise StorageFailure("store is closed")


class _EtcdReplayWatch:
    """A watch from a revision older than the local history: etcd replays it, then keeps it live.

    Ends with ``Expired`` when etcd has compacted the revision; ends (iteration stops) when closed or the store
    closes. Events are built the way the store's own follower builds them.
    """

    def __init__(self, store: EtcdStore, gr: GroupResource | None, namespace: str | None, since_rv: int) -> None:
        self._store = store
        self.gr = gr
        self.namespace = namespace
        self._since = since_rv
        self._events: AsyncIterator[WatchEvent] | None = None
        self._closed = False
        self._stop = asyncio.Event()

    def __aiter__(self) -> _EtcdReplayWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        if self._closed:
            raise StopAsyncIteration
        if self._events is None:
            self._events = self._stream()
        next_event = asyncio.ensure_future(self._events.__anext__())
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((next_event, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not next_event.done():
            next_event.cancel()
            with contextlib.suppress(BaseException):
                await next_event
            raise StopAsyncIteration
        try:
            return next_event.result()
        except (Expired, StopAsyncIteration):
            self.close()
            raise

    async def _stream(self) -> AsyncIterator[WatchEvent]:
        store = self._store
        prefix = store.collection_prefix(self.gr, self.namespace)
        start = self._since + 1
        while True:
            try:
                async for response in store.client.watch(prefix, prefix_end(prefix), start):
                    for event in response.events:
                        start = int(event.kv.mod_revision) + 1
                        watch_event = store._event_of(event)
                        if watch_event is not None:
                            yield watch_event
            except EtcdCompacted as e:
                raise Expired(self._since, max(e.compact_revision - 1, store.compacted_rv)) from e
            except EtcdUnavailable:
                await asyncio.sleep(0.5)

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._store._replays.discard(self)


if TYPE_CHECKING:  # mypy proves the backend keeps the Protocol

    def _conforms(store: EtcdStore) -> Store:
        return store
