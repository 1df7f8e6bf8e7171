"""The DNS proxy's xDS client: one ADS stream subscribed to Istio's NameTable type (NDS) only.

Why a stream of its own: Istio's agent adds NDS to the Envoy stream it proxies; meshplane's Envoy talks to the
control plane itself, so the agent opens a second, small stream with the same node (the server builds the table
for that proxy's scope, Sidecar egress included), marked ``NAME_TABLE_STREAM`` in its metadata so the server
does not count it as a second proxy. Every response is ACKed (or NACKed when it cannot be decoded),
so the server shows the stream's sync state like any other; a broken stream is reopened with backoff and the
last table stays in use meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

from meshplane.model import nds

log = logging.getLogger(__name__)

_EOF: Any = getattr(grpc.aio, "EOF", None)
METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


class NameTableClient:
    """Keeps ``on_table`` fed with the proxy's current NameTable until ``stop`` is set."""

    def __init__(self, target: str, node_id: str, node_cluster: str, metadata: Mapping[str, Any],
                 locality: Mapping[str, str] | None = None) -> None:
        self.target = target
        self.node = discovery_pb2.DiscoveryRequest().node
        self.node.id = node_id
        self.node.cluster = node_cluster
        meta = struct_pb2.Struct()
        # Marked as the agent's stream, not a proxy of its own: proxy-status and the scrape targets list the
        # node once (its Envoy), with the NameTable's sync state added to it.
        json_format.ParseDict({**metadata, "NAME_TABLE_STREAM": "true"}, meta)
        self.node.metadata.CopyFrom(meta)
        for k, v in (locality or {}).items():
            setattr(self.node.locality, k, v)
        self.updates = 0
        self.connected = False
        self.version = ""  # of the last table applied (what a NACK reports as held)

    async def run(self, on_table: Callable[[Any], None], stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                await self._stream(on_table, stop)
                backoff = 0.2
            except (grpc.aio.AioRpcError, OSError) as e:
                log.debug("name table stream: %s", e)
            self.connected = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await stop.wait()
            backoff = min(backoff * 2, 5.0)

    async def _stream(self, on_table: Callable[[Any], None], stop: asyncio.Event) -> None:
        outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        first = discovery_pb2.DiscoveryRequest(type_url=nds.TYPE_URL)
        first.node.CopyFrom(self.node)
        outbox.put_nowait(first)

        async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            while (req := await outbox.get()) is not None:
                yield req

        async with grpc.aio.insecure_channel(self.target) as channel:
            call = channel.stream_stream(METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                         response_deserializer=discovery_pb2.DiscoveryResponse.FromString)
            stream = call(requests())
            stopper = asyncio.create_task(stop.wait())
            try:
                while True:
                    read = asyncio.ensure_future(stream.read())
                    done, _ = await asyncio.wait({read, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if read not in done:
                        read.cancel()
                        stream.cancel()
                        return
                    resp: Any = read.result()
                    if resp is _EOF:
                        return
                    self.connected = True
                    ack = discovery_pb2.DiscoveryRequest(type_url=nds.TYPE_URL, response_nonce=resp.nonce)
                    try:
                        table = nds.NameTable()
                        for res in resp.resources:
                            if res.type_url == nds.TYPE_URL:
                                table.MergeFromString(res.value)
                        on_table(table)
                        self.updates += 1
                        self.version = resp.version_info
                    except DecodeError as e:
                        ack.error_detail.message = f"cannot decode the name table: {e}"
                    ack.version_info = self.version
                    outbox.put_nowait(ack)
            finally:
                stopper.cancel()
                outbox.put_nowait(None)
