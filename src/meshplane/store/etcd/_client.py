"""A small typed client for etcd's v3 gRPC API: one channel over every endpoint, TLS optional.

Why not a ready-made client's high-level API: the store needs the revision of each transaction (the
resourceVersion it hands back), several endpoints with failover, TLS client certificates, and watches it can
resume by revision; aetcd's ``Client`` (asyncio, maintained) exposes none of the first three. Its generated
protobuf stubs (``aetcd.rpc``: etcd's own ``rpc.proto``) are exactly etcd's API, so this module drives them over a
``grpc.aio`` channel of its own. Only ``meshplane.store.etcd`` imports gRPC and aetcd (see pyproject's contracts).

Several endpoints become one channel (``ipv4:a:p,b:p``) with gRPC's ``round_robin`` policy: requests spread over
the healthy members, and a member that goes away is skipped without the caller seeing it (etcd followers forward
writes to the raft leader). Every unary call has a deadline, so a write never hangs on a lost cluster: it fails
with ``EtcdUnavailable`` and the store reports ``StorageFailure``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from aetcd.rpc import kv_pb2, rpc_pb2, rpc_pb2_grpc

from meshplane.store.errors import StoreError

__all__ = [
    "EtcdClient",
    "EtcdCompacted",
    "EtcdSettings",
    "EtcdUnavailable",
    "KeyValue",
    "parse_etcd_url",
    "prefix_end",
]

# etcd's protobuf messages, untyped (generated without stubs).
KeyValue = Any
Message = Any

PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE


class EtcdUnavailable(StoreError):
    """etcd did not answer (no member reachable, a deadline passed) or refused the request."""


class EtcdCompacted(StoreError):
    """A watch or read asked for a revision etcd has compacted away; ``compact_revision`` is the oldest kept."""

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(f"etcd revision {requested} is compacted (oldest kept: {compact_revision})")
        self.requested = requested
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    """Where etcd is and how to reach it. ``endpoints``: ``host:port`` of each member (IP literals, or one name)."""

    endpoints: tuple[str, ...]
    cacert: Path | None = None  # TLS: the CA that signed the members' certificates (https endpoints)
    cert: Path | None = None  # TLS client certificate and its key (etcd's --client-cert-auth)
    key: Path | None = None
    prefix: str = "/meshplane/"  # every key the store writes is under it: one etcd can serve several meshes
    timeout: float = 5.0  # deadline of each unary call
    tls: bool = field(default=False)

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("etcd: at least one endpoint is required")
        if (self.cert is None) != (self.key is None):
            raise ValueError("etcd: --etcd-cert and --etcd-key go together")
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"etcd: key prefix {self.prefix!r} must start and end with '/'")


def parse_etcd_url(
    url: str, *, cacert: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> EtcdSettings:
    """``etcd://h1:2379,h2:2379[/prefix]`` (plain) or ``etcds://...`` (TLS; also implied by ``cacert``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("etcd", "etcds"):
        raise ValueError(f"--store {url!r}: expected etcd://host:port[,host:port...][/prefix]")
    endpoints = tuple(e.strip() for e in parts.netloc.split(",") if e.strip())
    if not endpoints:
        raise ValueError(f"--store {url!r}: no etcd endpoint")
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ValueError(f"--store {url!r}: endpoint {endpoint!r} must be host:port")
    prefix = parts.path.rstrip("/") + "/" if parts.path not in ("", "/") else "/meshplane/"
    for path in (cacert, cert, key):
        if path is not None and not path.is_file():
            raise ValueError(f"etcd TLS file {path} does not exist")
    tls = parts.scheme == "etcds" or cacert is not None or cert is not None
    return EtcdSettings(endpoints=endpoints, cacert=cacert, cert=cert, key=key, prefix=prefix, tls=tls)


def prefix_end(prefix: bytes) -> bytes:
    """The range end that makes ``[prefix, end)`` every key starting with ``prefix`` (etcd's convention)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def _target(endpoints: Sequence[str]) -> str:
    hosts = [e.rpartition(":")[0].strip("[]") for e in endpoints]
    try:
        for host in hosts:
            ipaddress.ip_address(host)
    except ValueError:
        if len(endpoints) == 1:
            return endpoints[0]
        raise ValueError("etcd: several endpoints must be IP addresses (or one name that resolves to all)") from None
    return "ipv4:" + ",".join(endpoints) if all(":" not in h for h in hosts) else "ipv6:" + ",".join(endpoints)


class EtcdClient:
    """One gRPC channel to an etcd cluster and the calls the store and the leader election make."""

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self._channel: grpc.aio.Channel | None = None
        self._kv: Any = None
        self._watch: Any = None
        self._lease: Any = None

    async def connect(self) -> None:
        s = self.settings
        options: list[tuple[str, Any]] = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        target = _target(s.endpoints)
        if s.tls:
            root = s.cacert.read_bytes() if s.cacert is not None else None
            chain = s.cert.read_bytes() if s.cert is not None else None
            key = s.key.read_bytes() if s.key is not None else None
            creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
            options.append(("grpc.default_authority", s.endpoints[0]))
            self._channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._kv = rpc_pb2_grpc.KVStub(self._channel)
        self._watch = rpc_pb2_grpc.WatchStub(self._channel)
        self._lease = rpc_pb2_grpc.LeaseStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None

    # -- KV ---------------------------------------------------------------------------------------------------------

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        sort_by_mod: bool = False,
        limit: int = 0,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
    ) -> Message:
        request = rpc_pb2.RangeRequest(
            key=key,
            range_end=range_end,
            revision=revision,
            limit=limit,
            min_mod_revision=min_mod_revision,
            max_mod_revision=max_mod_revision,
        )
        if sort_by_mod:
            request.sort_target = rpc_pb2.RangeRequest.MOD
            request.sort_order = rpc_pb2.RangeRequest.ASCEND
        return await self._unary(self._kv.Range, request, requested=revision)

    async def txn(self, compare: Sequence[Message], success: Sequence[Message], failure: Sequence[Message]) -> Message:
        return await self._unary(self._kv.Txn, rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure))

    async def compact(self, revision: int) -> None:
        await self._unary(self._kv.Compact, rpc_pb2.CompactionRequest(revision=revision), requested=revision)

    # -- building transactions --------------------------------------------------------------------------------------

    @staticmethod
    def mod_revision_is(key: bytes, revision: int) -> Message:
        return rpc_pb2.Compare(
            key=key, target=rpc_pb2.Compare.MOD, result=rpc_pb2.Compare.EQUAL, mod_revision=revision
        )

    @staticmethod
    def absent(key: bytes) -> Message:
        return rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE, result=rpc_pb2.Compare.EQUAL, create_revision=0)

    @staticmethod
    def put(key: bytes, value: bytes, lease: int = 0) -> Message:
        return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))

    @staticmethod
    def delete(key: bytes) -> Message:
        return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))

    @staticmethod
    def get(key: bytes) -> Message:
        return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))

    # -- watch ------------------------------------------------------------------------------------------------------

    async def watch(
        self, key: bytes, range_end: bytes, start_revision: int, *, prev_kv: bool = True
    ) -> AsyncIterator[Message]:
        """Watch responses (each with its events, in revision order) from ``start_revision`` on, until cancelled.

        Raises ``EtcdCompacted`` when ``start_revision`` is compacted, ``EtcdUnavailable`` when the stream breaks
        (the caller resumes from the revision after the last event it got).
        """
        if self._watch is None:
            raise EtcdUnavailable("etcd client is closed")
        create = rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(
                key=key, range_end=range_end, start_revision=start_revision, prev_kv=prev_kv, progress_notify=True
            )
        )
        queue: asyncio.Queue[Message] = asyncio.Queue()
        queue.put_nowait(create)

        async def requests() -> AsyncIterator[Message]:
            while True:
                yield await queue.get()

        call = self._watch.Watch(requests(), wait_for_ready=True)
        try:
            async for response in call:
                if response.canceled:
                    if response.compact_revision:
                        raise EtcdCompacted(start_revision, int(response.compact_revision))
                    raise EtcdUnavailable(f"etcd cancelled the watch: {response.cancel_reason}")
                if response.compact_revision:
                    raise EtcdCompacted(start_revision, int(response.compact_revision))
                if response.created and not response.events:
                    continue
                yield response
            raise EtcdUnavailable("etcd ended the watch stream")
        except grpc.aio.AioRpcError as e:
            raise EtcdUnavailable(f"etcd watch failed: {e.code().name}: {e.details()}") from e
        finally:
            call.cancel()

    # -- leases -----------------------------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        response = await self._unary(self._lease.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=ttl))
        return int(response.ID)

    async def keep_alive_once(self, lease: int) -> int:
        """Refresh ``lease``; its remaining TTL (0: it has expired)."""
        if self._lease is None:
            raise EtcdUnavailable("etcd client is closed")
        call = self._lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease)]), wait_for_ready=True)
        try:
            async with asyncio.timeout(self.settings.timeout):
                async for response in call:
                    return int(response.TTL)
        except (grpc.aio.AioRpcError, TimeoutError) as e:
            raise EtcdUnavailable(f"etcd lease keep-alive failed: {e}") from e
        finally:
            call.cancel()
        return 0

    async def revoke(self, lease: int) -> None:
        await self._unary(self._lease.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=lease))

    # -- helpers ----------------------------------------------------------------------------------------------------

    async def _unary(self, method: Any, request: Message, *, requested: int = 0) -> Message:
        if self._channel is None:
            raise EtcdUnavailable("etcd client is closed")
        try:
            # wait_for_ready: a member restarting or a reconnect in backoff delays the call (up to its deadline)
            # instead of failing it at once.
            return await method(request, timeout=self.settings.timeout, wait_for_ready=True)
        except grpc.aio.AioRpcError as e:
            details = e.details() or ""
            if e.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
                raise EtcdCompacted(requested, 0) from e
            raise EtcdUnavailable(f"etcd: {e.code().name}: {details}") from e
