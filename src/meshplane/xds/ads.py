"""The gRPC face of the ADS server: both AggregatedDiscoveryService streams, State-of-the-World and Delta.

Why generic handlers instead of the generated servicer: responses are written as pre-encoded bytes (see
``encoding``), so the response serializer is the identity. Requests are decoded by protobuf as usual. Each stream
gets a :class:`~meshplane.xds.connection.Connection`; the node is taken from the first request only (Envoy's
``set_node_on_first_message_only``) and parsed once into a Proxy.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from meshplane.metrics import ControlPlaneMetrics
from meshplane.model.proxy import Locality
from meshplane.xds.connection import Connection, PushState
from meshplane.xds.protocol import WatchedType, XdsRequest
from meshplane.xds.translator import Translator

log = logging.getLogger(__name__)

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


class Hub(Protocol):
    """What a stream needs from the server."""

    @property
    def translator(self) -> Translator: ...

    @property
    def state(self) -> PushState: ...

    @property
    def metrics(self) -> ControlPlaneMetrics | None: ...

    def register(self, conn: Connection) -> None: ...

    def unregister(self, conn: Connection) -> None: ...


def _identity(data: bytes) -> bytes:
    return data


def node_metadata(struct: Any) -> dict[str, Any]:
    """``node.metadata`` as plain JSON. protobuf's Struct has only doubles, so a port written as 8080 in the
    bootstrap arrives as 8080.0: integral numbers are turned back into ints."""
    plain: dict[str, Any] = _integral(json_format.MessageToDict(struct))
    return plain


def build_version(node: Any) -> str:
    """The version a node reports (``user_agent_build_version``, else the deprecated ``user_agent_version``), as
    ``1.31.2``; "" when it reports none. Shown by ``meshplane proxy-status`` and ``meshplane version``."""
    if node.HasField("user_agent_build_version"):
        v = node.user_agent_build_version.version
        return f"{v.major_number}.{v.minor_number}.{v.patch}"
    return str(node.user_agent_version or "")


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


# SotW subscriptions by their exact encoding (the ``resource_names`` field alone) -> (that encoding, the names).
# Streams that name the same resources in the same order share one frozenset (and one encoding): no per-request
# set, no per-stream copy. A memo of a pure function, bounded: cleared when full.
_NAME_SETS: dict[bytes, tuple[bytes, frozenset[str]]] = {}
_NAME_SETS_MAX = 256
_NOT_NAMES = ("version_info", "node", "type_url", "response_nonce", "error_detail")

# Per stream: type URL -> (encoding, names) of the latest SotW request of that type.
LastNames = dict[str, tuple[bytes, frozenset[str]]]


def sotw_request(raw: discovery_pb2.DiscoveryRequest, last: LastNames | None = None) -> XdsRequest:
    """The protocol-neutral request. ``raw`` is consumed (its other fields are cleared to encode the names).

    Why: an ACK of ClusterLoadAssignments names every one of them (a thousand names per ACK in a large mesh),
    and it usually names exactly what the previous request of the stream named. The names are compared as
    encoded bytes (protobuf serializes them in C; one memcmp against ``last``), and a frozenset is built only
    for an encoding not seen before; otherwise the request carries the previous (shared) frozenset, which
    ``should_respond`` recognizes by identity. Other orders, subsets and supersets get their own set."""
    type_url = raw.type_url
    nonce = raw.response_nonce
    error = raw.error_detail.message or "rejected" if raw.HasField("error_detail") else None
    version_info = raw.version_info
    names: frozenset[str] = frozenset()
    if len(raw.resource_names):
        for f in _NOT_NAMES:
            raw.ClearField(f)
        key: bytes = raw.SerializeToString()
        prev = last.get(type_url) if last is not None else None
        if prev is not None and prev[0] == key:
            names = prev[1]
        else:
            hit = _NAME_SETS.get(key)
            if hit is None:
                if len(_NAME_SETS) >= _NAME_SETS_MAX:
                    _NAME_SETS.clear()
                hit = _NAME_SETS[key] = (key, frozenset(raw.resource_names))
            names = hit[1]
            if last is not None:
                last[type_url] = hit
    elif last is not None:
        last.pop(type_url, None)
    return XdsRequest(type_url=type_url, delta=False, nonce=nonce, error=error, version_info=version_info,
                      names=names)


def _varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _ld_field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field (tag, length, value)."""
    out = bytearray((number << 3 | 2,))
    n = len(value)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + value


@functools.lru_cache(maxsize=1024)
def _ack_tail(type_url: str, nonce: str) -> bytes:
    """The encoded type_url and response_nonce fields of an ACK. Nonces repeat across streams
    (``Connection._nonce``), so a few cached entries serve every stream."""
    return _ld_field(4, type_url.encode()) + _ld_field(5, nonce.encode())


def quick_sotw_ack(data: bytes, watched: Mapping[str, WatchedType], last: LastNames) -> XdsRequest | None:
    """The common SotW request, recognized in its encoded form without decoding it: an ACK of the latest
    response of a type that names exactly what the stream's previous request of that type named. None for
    anything else (the caller decodes the request as usual).

    Why: in a large mesh every endpoint push is followed by a thousand ACKs that each name every
    ClusterLoadAssignment; decoding them costs more than the rest of the ACK. The check is exact, not a guess:
    ``data`` must be ``version_info`` (field 1), optionally ``node`` (field 2), then byte for byte the encoded
    names of ``last`` (complete ``resource_names`` fields), then exactly ``type_url`` and ``response_nonce`` of
    the latest response sent (fields 4 and 5, as Envoy writes them, in field order). Every byte is accounted
    for by complete fields, so the message is exactly that ACK; a NACK (``error_detail``), a stale nonce, other
    names or another field order do not match."""
    try:
        n = len(data)
        i = 0
        version = ""
        if n and data[0] == 0x0A:  # version_info
            length, j = _varint(data, 1)
            version = data[j:j + length].decode()
            i = j + length
        if i < n and data[i] == 0x12:  # node, sent again by clients without set_node_on_first_message_only
            length, j = _varint(data, i + 1)
            i = j + length
        for type_url, (key, names) in last.items():
            wt = watched.get(type_url)
            if wt is None or wt.delta or not wt.nonce_sent:
                continue
            tail = _ack_tail(type_url, wt.nonce_sent)
            if n == i + len(key) + len(tail) and data.endswith(tail) and data.startswith(key, i):
                return XdsRequest(type_url=type_url, delta=False, nonce=wt.nonce_sent, version_info=version,
                                  names=names)
    except (IndexError, UnicodeDecodeError):
        return None
    return None


def delta_request(raw: discovery_pb2.DeltaDiscoveryRequest) -> XdsRequest:
    return XdsRequest(
        type_url=raw.type_url,
        delta=True,
        nonce=raw.response_nonce,
        error=raw.error_detail.message or "rejected" if raw.HasField("error_detail") else None,
        subscribe=frozenset(raw.resource_names_subscribe),
        unsubscribe=frozenset(raw.resource_names_unsubscribe),
        initial_versions=dict(raw.initial_resource_versions),
    )


class AdsHandler:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def generic_handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        return grpc.method_handlers_generic_handler(SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.stream_sotw,
                request_deserializer=_identity,  # decoded in ``_serve`` unless ``quick_sotw_ack`` knows it
                response_serializer=_identity,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self.stream_delta,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=_identity,
            ),
        })

    async def stream_sotw(self, requests: AsyncIterator[bytes],
                          context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self._serve(requests, context, delta=False)

    async def stream_delta(self, requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest],
                           context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self._serve(requests, context, delta=True)

    async def _serve(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any], *,
                     delta: bool) -> None:
        hub = self._hub
        conn = Connection(delta=delta, peer=context.peer(), translator=hub.translator, send=context.write,
                          metrics=hub.metrics)
        problem: list[tuple[grpc.StatusCode, str]] = []
        last_names: LastNames = {}

        async def read() -> None:
            async for item in requests:
                if delta:
                    raw = item
                else:
                    if conn.proxy is not None and last_names:
                        quick = quick_sotw_ack(item, conn.watched, last_names)
                        if quick is not None:
                            await conn.handle(quick, hub.state)
                            continue
                    try:
                        raw = discovery_pb2.DiscoveryRequest.FromString(item)
                    except DecodeError:
                        problem.append((grpc.StatusCode.INVALID_ARGUMENT, "undecodable DiscoveryRequest"))
                        return
                if conn.proxy is None:
                    if not raw.HasField("node") or not raw.node.id:
                        problem.append((grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id"))
                        return
                    node = raw.node
                    loc = Locality(node.locality.region, node.locality.zone, node.locality.sub_zone)
                    try:
                        metadata = node_metadata(node.metadata)
                        if node.HasField("user_agent_build_version") and "ENVOY_VERSION" not in metadata:
                            # What an EnvoyFilter's match.proxy.proxyVersion is matched against (no ISTIO_VERSION)
                            v = node.user_agent_build_version.version
                            metadata["ENVOY_VERSION"] = f"{v.major_number}.{v.minor_number}.{v.patch}"
                        conn.proxy = hub.translator.proxy_from_node(node.id, metadata, loc)
                        conn.envoy_version = build_version(node)
                    except ValueError as exc:
                        problem.append((grpc.StatusCode.INVALID_ARGUMENT, f"node {node.id!r}: {exc}"))
                        return
                    hub.register(conn)
                if not raw.type_url:
                    problem.append((grpc.StatusCode.INVALID_ARGUMENT, "request without type_url"))
                    return
                req = delta_request(raw) if delta else sotw_request(raw, last_names)
                await conn.handle(req, hub.state)

        reader = asyncio.create_task(read(), name=f"xds-read-{conn.id}")
        closed = asyncio.create_task(conn.closed.wait())
        reason = "reset"  # the handler itself cancelled: gRPC saw the connection go (a reset, a GOAWAY)
        try:
            await asyncio.wait({reader, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done() or reader.cancelled():
                reason = "closed_by_server"
            elif reader.exception() is not None:
                exc = reader.exception()
                reason = "reset"
                if not isinstance(exc, (grpc.RpcError, asyncio.CancelledError, ConnectionError)):
                    reason = "error"
                    log.error("%s: stream failed", conn.id, exc_info=exc)
            else:
                reason = "invalid" if problem else "proxy_closed"
        finally:
            conn.closed.set()
            reader.cancel()
            closed.cancel()
            hub.unregister(conn)
            if hub.metrics is not None:
                hub.metrics.record_disconnect(reason)
        if problem:
            log.warning("%s from %s: %s", conn.id, conn.peer, problem[0][1])
            await context.abort(*problem[0])
        if not reader.done() or reader.cancelled():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "closed by the server (send timeout)")
