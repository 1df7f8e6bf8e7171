"""Leader election on an etcd lease: which replica runs what must run once (controllers, status writers).

How: the candidate grants itself a lease of ``ttl`` seconds and creates ``<prefix>leader/<name>`` bound to it,
with a transaction whose compare is "the key does not exist". The replica whose transaction succeeds leads while
it keeps the lease alive (a keep-alive every ``ttl / 3``); the others watch the key and campaign again when it
goes away. A leader that cannot refresh its lease within ``ttl`` (etcd unreachable, process stalled) steps down
on its own before etcd expires the key, so two replicas never both believe they lead for longer than the clock
skew of one keep-alive; a replica that exits revokes its lease so a successor is elected at once, and one that is
SIGKILLed is replaced when its lease expires (``ttl`` seconds).

What leadership protects is idempotent, level-triggered work whose writes carry a resourceVersion precondition,
so even a deposed leader's last write in flight cannot overwrite a newer state (it gets ``Conflict``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from meshplane.store.errors import StoreError
from meshplane.store.etcd._client import DELETE, EtcdClient

__all__ = ["LeaderElection"]

log = logging.getLogger(__name__)


class LeaderElection:
    """Campaign for ``name`` as ``identity`` until stopped; ``on_elected`` / ``on_lost`` run on each change."""

    def __init__(self, client: EtcdClient, name: str, identity: str, *, ttl: int = 5) -> None:
        if ttl < 2:
            raise ValueError("leader election ttl must be >= 2 s")
        self._client = client
        self._key = f"{client.settings.prefix}leader/{name}".encode()
        self.identity = identity
        self._ttl = ttl
        self._leading = False
        self._lease = 0
        self._task: asyncio.Task[None] | None = None
        self._on_elected: Callable[[], Awaitable[None]] | None = None
        self._on_lost: Callable[[], Awaitable[None]] | None = None
        self.changed = asyncio.Event()  # set on every change of leadership (tests, status)

    @property
    def is_leader(self) -> bool:
        return self._leading

    def start(self, on_elected: Callable[[], Awaitable[None]], on_lost: Callable[[], Awaitable[None]]) -> None:
        self._on_elected, self._on_lost = on_elected, on_lost
        self._task = asyncio.get_running_loop().create_task(self._campaign(), name=f"leader-election {self._key!r}")

    async def stop(self) -> None:
        """Stop campaigning; a leader steps down (``on_lost``) and revokes its lease so another takes over now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self._step_down()
        if self._lease:
            with contextlib.suppress(StoreError):
                await self._client.revoke(self._lease)
            self._lease = 0

    async def holder(self) -> str | None:
        response = await self._client.range(self._key)
        return response.kvs[0].value.decode() if response.kvs else None

    async def _campaign(self) -> None:
        while True:
            try:
                self._lease = await self._client.grant(self._ttl)
                response = await self._client.txn(
                    [self._client.absent(self._key)],
                    [self._client.put(self._key, self.identity.encode(), lease=self._lease)],
                    [self._client.get(self._key)],
                )
                if response.succeeded:
                    await self._lead()
                else:
                    with contextlib.suppress(StoreError):
                        await self._client.revoke(self._lease)
                    self._lease = 0
                    await self._wait_for_vacancy(int(response.header.revision))
            except StoreError as e:
                log.warning("leader election for %s: %s", self._key.decode(), e)
                await self._step_down()
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        log.info("%s leads %s", self.identity, self._key.decode())
        self._leading = True
        self.changed.set()
        if self._on_elected is not None:
            await self._on_elected()
        last_refresh = time.monotonic()
        try:
            while True:
                await asyncio.sleep(self._ttl / 3)
                try:
                    remaining = await self._client.keep_alive_once(self._lease)
                except StoreError as e:
                    if time.monotonic() - last_refresh > self._ttl * 2 / 3:
                        raise StoreError(f"lost the lease: {e}") from e
                    continue
                if remaining <= 0:
                    raise StoreError("the lease expired")
                last_refresh = time.monotonic()
        finally:
            await self._step_down()

    async def _step_down(self) -> None:
        if not self._leading:
            return
        self._leading = False
        self.changed.set()
        log.info("%s no longer leads %s", self.identity, self._key.decode())
        if self._on_lost is not None:
            await self._on_lost()

    async def _wait_for_vacancy(self, revision: int) -> None:
        """Return once the leader key is deleted (or after one ttl, to check again whatever the watch says)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._ttl):
                async for response in self._client.watch(self._key, b"", revision + 1, prev_kv=False):
                    if any(event.type == DELETE for event in response.events):
                        return
