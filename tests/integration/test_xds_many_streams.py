"""One control-plane replica holds more proxies than gRPC core's default of 1,000 pending calls.

Each proxy's ADS stream is one call that stays open for the proxy's life. With gRPC's default server options the
1,001st concurrent stream was cancelled (the proxy saw CANCELLED, the server logged nothing), so a replica could
never serve more than a thousand proxies. Real gRPC over loopback, a real XdsServer, 1,100 SotW streams.
"""

from __future__ import annotations

import asyncio

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from meshplane.model import xdstypes
from meshplane.store import MemoryStore
from meshplane.xds import XdsServer, XdsSettings

STREAMS = 1_100
PER_CHANNEL = 100  # as many streams as one Envoy-like connection carries here
METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


async def test_a_replica_serves_more_than_a_thousand_streams() -> None:
    store = MemoryStore()
    await store.start()
    server = XdsServer(store, XdsSettings(debounce_quiet=0.01, debounce_max=0.05))
    port = await server.start("127.0.0.1:0")
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
        ("grpc.use_local_subchannel_pool", 1), ("grpc.channel_id", c)]) for c in range(STREAMS // PER_CHANNEL)]
    calls = []
    try:
        for k in range(STREAMS):
            stream = channels[k % len(channels)].stream_stream(
                METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString)
            calls.append(stream())

        async def first_response(k: int) -> str:
            call = calls[k]
            request = discovery_pb2.DiscoveryRequest(type_url=xdstypes.CLUSTER)
            request.node.id = f"sidecar~127.0.{k // 250}.{k % 250 + 1}~p-{k}.default~default.svc.cluster.local"
            await call.write(request)
            response = await call.read()
            assert response is not grpc.aio.EOF, f"stream {k} ended without a response: {await call.code()}"
            return str(response.type_url)

        types = await asyncio.wait_for(asyncio.gather(*(first_response(k) for k in range(STREAMS))), 120)
        assert types == [xdstypes.CLUSTER] * STREAMS
        connected = [s for s in server.proxy_status() if s.node_id.startswith("sidecar~")]
        assert len(connected) == STREAMS
        assert not [k for k, c in enumerate(calls) if c.done()], "streams ended while the proxies were connected"
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()
        await server.stop(0.2)
        await store.close()
