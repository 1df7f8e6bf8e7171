"""The store semantics, written once for every backend, so MemoryStore and SqliteStore cannot drift apart.

``CoreStore`` owns everything the ``Store`` contract promises: metadata bookkeeping (uid, resourceVersion, generation,
creationTimestamp), no-op detection, preconditions, the committed index that reads come from, the watch history and
the fan-out. A backend supplies only four things: how to load its state (``_load``), how to make one batch of changes
durable (``_persist``), how to close, and how to read the audit trail.

Why group commit, and how it stays correct:

- A write is validated against the *latest* state (committed, plus writes still waiting to commit) inside one
  event-loop step, gets the next rv, and joins a queue. Validation and rv assignment never wait for the disk.
- One committer task takes everything queued, hands it to ``_persist`` as one batch (SQLite: one transaction in a
  dedicated thread, so one fsync covers many writes), and only then applies the batch to the committed index,
  resolves the writers and publishes the events, in rv order. Reads (``get``, ``list``, ``watch`` snapshots and
  history) see only the committed index, so nothing unacknowledged is ever visible.
- If ``_persist`` fails, every write of the batch fails with ``StorageFailure``, and so does every queued write on
  the same object (it was validated against a state that will now never exist). The pending state is rebuilt from
  the writes that survive; the committed index was never touched. The failed rvs are not reused.
- A write that fails a precondition, or is a no-op, against a state that is still pending waits for that pending
  write and validates again, so no caller ever learns of a write that may yet fail.

A write's coroutine that is cancelled while waiting for its commit does not withdraw the write: it may still be
applied (as with any database whose client disconnects after sending a commit). Cancelling it never disturbs the
commit itself: the caller waits on the change's future through ``shield``, and only the committer resolves it.

Closing runs in a task of its own: a ``close()`` cancelled while a batch is committing (a shutdown with a deadline)
must not leave the store half closed, with its commit thread and file lock held and every later ``close()``
returning at once. The shutdown goes on, and every ``close()`` waits for that one shutdown.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import uuid
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from meshplane.store._watch import DEFAULT_WATCH_QUEUE_SIZE, StoreWatch, WatchHub
from meshplane.store.errors import AlreadyExists, Conflict, Expired, NotFound, StorageFailure
from meshplane.store.types import AuditRecord, EventType, GroupResource, JSONObject, ObjectKey, WatchEvent

log = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 100_000
DEFAULT_AUDIT_LIMIT = 100_000  # audit records kept (the newest); 0 keeps every record


def valid_audit_limit(limit: int) -> int:
    """``limit`` as the backends take it (ValueError when negative)."""
    if limit < 0:
        raise ValueError("audit_limit must be >= 0")
    return limit


def audit_excess(count: int, limit: int) -> int:
    """How many of the oldest audit records to drop when ``count`` are kept and ``limit`` may be: none until the
    trail is a tenth past the limit (so trimming is one statement per ~limit/10 writes), then back to the limit."""
    if limit <= 0 or count <= limit + max(1, limit // 10):
        return 0
    return count - limit
DEFAULT_MAX_BATCH = 2_000

# Top-level fields that are not the object's desired state: changing them does not bump metadata.generation.
# apiVersion and kind are type information (one stored form serves every version of a kind), not content.
_NOT_SPEC = frozenset({"metadata", "status", "apiVersion", "kind"})


_ZERO = timedelta(0)


def rfc3339(moment: datetime) -> str:
    """Kubernetes' timestamp form, whole seconds in UTC: ``2026-11-25T17:18:46Z``. Naive datetimes are UTC."""
    m = _as_utc(moment)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"


def rfc3339_micro(moment: datetime) -> str:
    """The audit trail's timestamp: RFC 3339 in UTC with microseconds, so records within a second stay apart."""
    m = _as_utc(moment)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"


def _as_utc(moment: datetime) -> datetime:
    # (f-strings rather than strftime: this runs for every write and strftime is several times slower)
    if moment.tzinfo is None:
        return moment
    return moment if moment.utcoffset() == _ZERO else moment.astimezone(UTC)


def _utc_now() -> datetime:
    return datetime.now(UTC)


_VERBS = {EventType.ADDED: "create", EventType.MODIFIED: "update", EventType.DELETED: "delete"}


def _resource_label(gr: GroupResource) -> str:
    return f"{gr.group}/{gr.resource}" if gr.group else gr.resource


def copy_json(obj: JSONObject) -> JSONObject:
    """A private deep copy of a caller's object; also rejects anything JSON cannot carry (TypeError/ValueError)."""
    if not isinstance(obj, dict):
        raise TypeError(f"a stored object must be a JSON object, not {type(obj).__name__}")
    copied: JSONObject = json.loads(json.dumps(obj, allow_nan=False))
    return copied


def object_rv(obj: JSONObject) -> int:
    return int(obj["metadata"]["resourceVersion"])


def _spec_of(obj: JSONObject) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in _NOT_SPEC}


def _key_of(gr: GroupResource, obj: JSONObject) -> ObjectKey:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        raise ValueError(f"{gr}: metadata must be an object")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{gr}: metadata.name is required")
    namespace = metadata.get("namespace") or ""
    if not isinstance(namespace, str):
        raise ValueError(f"{gr} {name!r}: metadata.namespace must be a string")
    return ObjectKey(GroupResource(*gr), namespace, name)


@dataclass(eq=False, slots=True)
class Change:
    """One accepted write on its way to durability. Read by the backend's commit thread; never mutated after."""

    key: ObjectKey
    obj: JSONObject | None  # the stored state after the write; None when deleted
    event: WatchEvent  # event.obj is what the writer gets back (for a delete: the last state with the delete's rv)
    audit: AuditRecord
    future: asyncio.Future[None] = field(repr=False)


@dataclass(frozen=True, slots=True)
class LoadedState:
    """What a backend hands the core at start: committed objects and watch history, both in rv order."""

    rv: int
    compacted_rv: int
    objects: Sequence[tuple[GroupResource, JSONObject]]
    history: Sequence[WatchEvent]


class _Collection:
    """The committed objects of one GroupResource, kept sorted by (namespace, name) for ``list``."""

    __slots__ = ("keys", "objects")

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], JSONObject] = {}
        self.keys: list[tuple[str, str]] = []

    def put(self, namespace: str, name: str, obj: JSONObject) -> None:
        key = (namespace, name)
        if key not in self.objects:
            insort(self.keys, key)
        self.objects[key] = obj

    def remove(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if self.objects.pop(key, None) is not None:
            del self.keys[bisect_left(self.keys, key)]

    def list(self, namespace: str | None) -> list[JSONObject]:
        if namespace is None:
            return [self.objects[k] for k in self.keys]
        out: list[JSONObject] = []
        for i in range(bisect_left(self.keys, (namespace,)), len(self.keys)):
            key = self.keys[i]
            if key[0] != namespace:
                break
            out.append(self.objects[key])
        return out


class CommittedIndex:
    """The read side every backend shares: the committed objects per kind, the revision they are at, and how far
    back history reaches. A backend fills it as changes become durable (the core from its committer, etcd from
    its watch) and serves ``get``/``list`` from it without I/O."""

    def __init__(self) -> None:
        self._collections: dict[GroupResource, _Collection] = {}
        self._committed_rv = 0  # every change with rv <= this is in the index
        self._compacted_rv = 0  # the oldest since_rv a watch may still ask for
        self._started = False

    @property
    def current_rv(self) -> int:
        return self._committed_rv

    @property
    def compacted_rv(self) -> int:
        """The oldest ``since_rv`` a watch may still ask for (as far as this store knows)."""
        return self._compacted_rv

    def get(self, gr: GroupResource, namespace: str, name: str) -> JSONObject | None:
        collection = self._collections.get(gr)
        return None if collection is None else collection.objects.get((namespace, name))

    def list(self, gr: GroupResource, namespace: str | None = None) -> tuple[list[JSONObject], int]:
        collection = self._collections.get(gr)
        return ([] if collection is None else collection.list(namespace)), self._committed_rv

    def _collection(self, gr: GroupResource) -> _Collection:
        collection = self._collections.get(gr)
        if collection is None:
            collection = self._collections[gr] = _Collection()
        return collection

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("store not started: call start() first")


class CoreStore(CommittedIndex, abc.ABC):
    """The ``Store`` contract over an abstract durability step; see the module docstring."""

    def __init__(
        self,
        *,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        clock: Callable[[], datetime] | None = None,
        watch_queue_size: int = DEFAULT_WATCH_QUEUE_SIZE,
        max_batch: int | None = None,
    ) -> None:
        if max_batch is None:
            max_batch = min(DEFAULT_MAX_BATCH, watch_queue_size)
        if history_limit < 0:
            raise ValueError("history_limit must be >= 0")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if watch_queue_size < max_batch:
            # One batch is published in one event-loop step, so even a watcher that keeps up sees a whole batch
            # arrive at once: a smaller queue would expire healthy watches.
            raise ValueError("watch_queue_size must be >= max_batch")
        self._history_limit = history_limit
        self._clock: Callable[[], datetime] = clock or _utc_now
        self._watch_queue_size = watch_queue_size
        self._max_batch = max_batch

        super().__init__()  # the committed index: _committed_rv is the rv of the latest durable, applied change
        self._last_rv = 0  # the last rv handed out (>= committed; failed writes leave gaps, never reused)
        self._history: list[WatchEvent] = []  # committed events in rv order, at most history_limit of them
        # (_compacted_rv: every event with rv > it is in _history)
        self._hub = WatchHub()
        # Committed writes per (group/resource, verb), for the server's metrics (read, never reset).
        self.committed_writes: Counter[tuple[str, ...]] = Counter()

        self._pending: dict[ObjectKey, Change] = {}  # the newest not-yet-committed change of each object
        self._queue: list[Change] = []  # accepted, not yet handed to _persist
        self._inflight: Sequence[Change] = ()  # handed to _persist, not yet applied
        self._wakeup: asyncio.Event | None = None
        self._committer: asyncio.Task[None] | None = None
        self._broken: StorageFailure | None = None
        self._closing = False
        self._closer: asyncio.Task[None] | None = None

    # -- what a backend provides ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def _load(self) -> LoadedState:
        """Open the backend and return its committed state."""

    @abc.abstractmethod
    async def _persist(self, batch: Sequence[Change], compacted_rv: int) -> None:
        """Make ``batch`` durable, atomically: all of it or none of it. Raise on failure.

        ``compacted_rv``: history with rv <= this may be dropped (the core will forget it once this returns).
        """

    @abc.abstractmethod
    async def _close_backend(self) -> None:
        """Release the backend. Called once, after the last batch was persisted."""

    @abc.abstractmethod
    def audit(self, since_rv: int = 0, limit: int = 500) -> list[AuditRecord]:
        """Audit records with rv > since_rv, oldest first."""

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("store already started")
        loaded = await self._load()
        for gr, obj in loaded.objects:
            key = _key_of(gr, obj)
            self._collection(key.gr).put(key.namespace, key.name, obj)
        self._committed_rv = self._last_rv = loaded.rv
        self._history = list(loaded.history)
        self._compacted_rv = loaded.compacted_rv
        excess = len(self._history) - self._history_limit
        if excess > 0:  # the limit shrank since the last run; the next commit persists the compaction
            self._compacted_rv = self._history[excess - 1].rv
            del self._history[:excess]
        self._wakeup = asyncio.Event()
        self._committer = asyncio.get_running_loop().create_task(self._run_committer(), name="store-committer")
        self._started = True

    async def close(self) -> None:
        """Stop taking writes, wait for every accepted write to commit, end every watch, close the backend.

        Cancelling the caller does not stop the shutdown (see the module docstring); calling it again waits for it.
        """
        if not self._started:
            return
        if self._closer is None:
            self._closing = True  # refuse writes from this step on
            self._closer = asyncio.get_running_loop().create_task(self._shut_down(), name="store-close")
            self._closer.add_done_callback(_consume_exception)
        await asyncio.shield(self._closer)

    async def _shut_down(self) -> None:
        assert self._wakeup is not None and self._committer is not None
        self._wakeup.set()
        await asyncio.wait((self._committer,))  # (a committer that crashed has already failed its writes)
        self._hub.close_all()
        await self._close_backend()

    # -- reads: the committed index only (get, list: CommittedIndex) -------------------------------------------

    def watch(
        self, gr: GroupResource | None = None, namespace: str | None = None, since_rv: int | None = None
    ) -> StoreWatch:
        """See ``Store.watch``. A ``since_rv`` older than the history raises ``Expired`` from the first ``__anext__``
        (so a caller streaming events reports it in-stream like any other end of the watch).

        A ``since_rv`` above ``current_rv`` is accepted: the watch delivers the changes after it as they happen.
        A watch that falls ``watch_queue_size`` live events behind ends with ``Expired`` (see ``_watch``).
        """
        self._require_started()
        watch = StoreWatch(self._hub, gr, namespace, self._watch_queue_size)
        if self._closing:
            watch.end()
            return watch
        # Subscribe before taking the snapshot or the history, then let the watch drop live events it already has.
        self._hub.subscribe(watch)
        if not since_rv:
            snapshot_rv = self._committed_rv
            grs = [gr] if gr is not None else sorted(self._collections)
            initial = [
                WatchEvent(EventType.ADDED, g, obj, object_rv(obj))
                for g in grs
                if g in self._collections
                for obj in self._collections[g].list(namespace)
            ]
            watch.begin(initial, snapshot_rv)
            return watch
        if since_rv < self._compacted_rv:
            self._hub.unsubscribe(watch)
            watch.fail(Expired(since_rv, self._compacted_rv))
            return watch
        start = bisect_right(self._history, since_rv, key=lambda e: e.rv)
        watch.begin((e for e in self._history[start:] if watch.matches(e)), since_rv)
        return watch

    # -- writes -----------------------------------------------------------------------------------------------

    async def create(self, gr: GroupResource, obj: JSONObject, *, actor: str) -> JSONObject:
        body = copy_json(obj)
        key = _key_of(gr, body)
        return await self._write(key, lambda: self._prepare_create(key, body, actor))

    async def update(
        self, gr: GroupResource, obj: JSONObject, *, actor: str, expected_rv: int | None = None
    ) -> JSONObject:
        body = copy_json(obj)
        key = _key_of(gr, body)
        return await self._write(key, lambda: self._prepare_update(key, body, actor, expected_rv))

    async def delete(
        self, gr: GroupResource, namespace: str, name: str, *, actor: str, expected_rv: int | None = None
    ) -> JSONObject:
        key = ObjectKey(GroupResource(*gr), namespace, name)
        return await self._write(key, lambda: self._prepare_delete(key, actor, expected_rv))

    async def _write(self, key: ObjectKey, prepare: Callable[[], Change | JSONObject]) -> JSONObject:
        while True:
            self._require_writable()
            basis = self._pending.get(key)
            try:
                outcome = prepare()
            except (NotFound, AlreadyExists, Conflict):
                if basis is None:
                    raise
                # The verdict rests on a write that may still fail: wait for it, then decide again.
                await asyncio.wait((basis.future,))
                continue
            if isinstance(outcome, Change):
                # Shielded: a cancelled caller must not cancel the future other writers may be waiting on.
                await asyncio.shield(outcome.future)
                return outcome.event.obj
            if basis is None:
                return outcome  # a no-op against committed state
            await asyncio.wait((basis.future,))

    def _latest(self, key: ObjectKey) -> JSONObject | None:
        pending = self._pending.get(key)
        if pending is not None:
            return pending.obj
        return self.get(key.gr, key.namespace, key.name)

    def _prepare_create(self, key: ObjectKey, body: JSONObject, actor: str) -> Change:
        if self._latest(key) is not None:
            raise AlreadyExists(key.gr, key.namespace, key.name)
        now = self._clock()
        rv = self._last_rv + 1
        metadata = dict(body["metadata"])
        metadata["uid"] = str(uuid.uuid4())
        metadata["resourceVersion"] = str(rv)
        metadata["generation"] = 1
        metadata["creationTimestamp"] = rfc3339(now)
        stored = {**body, "metadata": metadata}
        return self._accept(key, stored, EventType.ADDED, stored, "create", actor, now, None, 1)

    def _prepare_update(
        self, key: ObjectKey, body: JSONObject, actor: str, expected_rv: int | None
    ) -> Change | JSONObject:
        old = self._latest(key)
        if old is None:
            raise NotFound(key.gr, key.namespace, key.name)
        old_metadata = old["metadata"]
        if expected_rv is not None and expected_rv != object_rv(old):
            raise Conflict(key.gr, key.namespace, key.name)
        metadata = dict(body["metadata"])
        for owned in ("uid", "creationTimestamp", "generation", "resourceVersion"):
            metadata[owned] = old_metadata[owned]
        candidate = {**body, "metadata": metadata}
        if candidate == old:
            return old
        old_generation: int = old_metadata["generation"]
        new_generation = old_generation + 1 if _spec_of(candidate) != _spec_of(old) else old_generation
        now = self._clock()
        metadata["generation"] = new_generation
        metadata["resourceVersion"] = str(self._last_rv + 1)
        return self._accept(
            key, candidate, EventType.MODIFIED, candidate, "update", actor, now, old_generation, new_generation
        )

    def _prepare_delete(self, key: ObjectKey, actor: str, expected_rv: int | None) -> Change:
        old = self._latest(key)
        if old is None:
            raise NotFound(key.gr, key.namespace, key.name)
        if expected_rv is not None and expected_rv != object_rv(old):
            raise Conflict(key.gr, key.namespace, key.name)
        now = self._clock()
        last = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self._last_rv + 1)}}
        return self._accept(
            key, None, EventType.DELETED, last, "delete", actor, now, old["metadata"]["generation"], None
        )

    def _accept(
        self,
        key: ObjectKey,
        stored: JSONObject | None,
        event_type: EventType,
        event_obj: JSONObject,
        verb: str,
        actor: str,
        now: datetime,
        old_generation: int | None,
        new_generation: int | None,
    ) -> Change:
        """Give the write the next rv and queue it; nothing may await between validation and this."""
        assert self._wakeup is not None
        self._last_rv += 1
        rv = self._last_rv
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume_exception)
        change = Change(
            key=key,
            obj=stored,
            event=WatchEvent(event_type, key.gr, event_obj, rv),
            audit=AuditRecord(
                rv=rv,
                timestamp=rfc3339_micro(now),
                actor=actor,
                verb=verb,
                group=key.gr.group,
                resource=key.gr.resource,
                namespace=key.namespace,
                name=key.name,
                uid=str(event_obj["metadata"]["uid"]),
                old_generation=old_generation,
                new_generation=new_generation,
            ),
            future=future,
        )
        self._queue.append(change)
        self._pending[key] = change
        self._wakeup.set()
        return change

    # -- the committer ----------------------------------------------------------------------------------------

    async def _run_committer(self) -> None:
        try:
            await self._commit_loop()
        except BaseException as exc:
            # A bug, or the event loop shutting down without close(): fail-stop rather than leave writers hanging.
            self._broken = StorageFailure(f"the store's committer stopped: {exc!r}")
            self._broken.__cause__ = exc
            doomed = [*self._inflight, *self._queue]
            self._inflight, self._queue, self._pending = (), [], {}
            for change in doomed:
                if not change.future.done():
                    change.future.set_exception(self._broken)
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.exception("store committer failed; the store refuses writes from now on")

    async def _commit_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._inflight = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            compacted_rv = self._compaction_point(batch)
            try:
                await self._persist(batch, compacted_rv)
            except Exception as exc:
                log.error("store commit of rv %d..%d failed: %s", batch[0].event.rv, batch[-1].event.rv, exc)
                self._fail(batch, exc)
            else:
                self._apply(batch, compacted_rv)
            self._inflight = ()
            # Let writers and watchers run between batches even when _persist did not suspend (MemoryStore).
            await asyncio.sleep(0)

    def _compaction_point(self, batch: Sequence[Change]) -> int:
        """The rv through which history may be dropped once ``batch`` is in it."""
        excess = len(self._history) + len(batch) - self._history_limit
        if excess <= 0:
            return self._compacted_rv
        if excess <= len(self._history):
            return self._history[excess - 1].rv
        return batch[excess - len(self._history) - 1].event.rv

    def _apply(self, batch: Sequence[Change], compacted_rv: int) -> None:
        for change in batch:
            key = change.key
            if change.obj is None:
                self._collection(key.gr).remove(key.namespace, key.name)
            else:
                self._collection(key.gr).put(key.namespace, key.name, change.obj)
            if self._pending.get(key) is change:
                del self._pending[key]
        self._history.extend(change.event for change in batch)
        self._committed_rv = batch[-1].event.rv
        if compacted_rv > self._compacted_rv:
            del self._history[: bisect_right(self._history, compacted_rv, key=lambda e: e.rv)]
            self._compacted_rv = compacted_rv
        for change in batch:
            event = change.event
            self.committed_writes[(_resource_label(event.gr), _VERBS[event.type])] += 1
            self._hub.publish(event)
            if not change.future.done():
                change.future.set_result(None)

    def _fail(self, batch: Sequence[Change], exc: Exception) -> None:
        failure = StorageFailure(f"commit failed: {exc}")
        failure.__cause__ = exc
        failed_keys = {change.key for change in batch}
        doomed = list(batch)
        survivors: list[Change] = []
        for change in self._queue:
            (doomed if change.key in failed_keys else survivors).append(change)
        self._queue = survivors
        self._pending = {change.key: change for change in survivors}
        for change in doomed:
            if not change.future.done():
                change.future.set_exception(failure)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _require_writable(self) -> None:
        self._require_started()
        if self._broken is not None:
            raise self._broken
        if self._closing:
            raise StorageFailure("store is closed")


def _consume_exception(future: asyncio.Future[None]) -> None:
    # A write whose caller was cancelled still gets its outcome; mark it retrieved so asyncio does not log it.
    if not future.cancelled():
        future.exception()
