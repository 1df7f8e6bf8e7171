"""Starting one of the product's small gRPC servers, written once for the CA, SDS and ext_authz services."""

from __future__ import annotations

import grpc


async def serve(handler: grpc.GenericRpcHandler, address: str) -> tuple[grpc.aio.Server, int]:  # type: ignore[type-arg]
    """A started server with ``handler`` on ``address`` (``unix:/path`` or ``127.0.0.1:0``) and its bound port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    await server.start()
    return server, port
