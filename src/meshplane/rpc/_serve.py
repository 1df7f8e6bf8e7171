"""Starting one of the product's gRPC servers, written once for the CA, SDS, ext_authz, OTLP and xDS services.

Every server binds without ``SO_REUSEPORT`` (gRPC sets it by default): with it, a second ``meshplane server`` on
the same xDS or CA port started silently and the kernel split the proxies' connections between the two control
planes. Without it the second one fails at start, naming the address.

Every server also accepts many concurrent calls: gRPC core cancels the calls of a server beyond its "pending
requests" limit (1,000 by default), and each proxy's ADS stream (and each agent's SDS stream) stays open for the
proxy's life, so a replica with the default cancelled the 1,001st proxy's stream (CANCELLED, nothing logged:
bench/xds_scale.py found it). The limit is raised far above the proxies a replica serves.
"""

from __future__ import annotations

import grpc

# Options every meshplane gRPC server is created with (see the module docstring).
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.so_reuseport", 0),
    ("grpc.server.max_pending_requests", 1_000_000),
)


class AddressInUse(OSError):
    """A gRPC server could not listen on its address (another process has it, or it is not local)."""


def bind(server: grpc.aio.Server, address: str, what: str) -> int:
    """Adds ``address`` to ``server``; returns the bound port or raises AddressInUse naming ``what`` and it."""
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio: "Failed to bind to address ..."
        raise AddressInUse(f"{what}: cannot listen on {address}: the address is in use (another meshplane "
                           "server?) or not an address of this machine") from e
    if port == 0:
        raise AddressInUse(f"{what}: cannot listen on {address}")
    return port


async def serve(handler: grpc.GenericRpcHandler, address: str,  # type: ignore[type-arg]
                what: str = "gRPC server") -> tuple[grpc.aio.Server, int]:
    """A started server with ``handler`` on ``address`` (``unix:/path`` or ``127.0.0.1:0``) and its bound port."""
    server = grpc.aio.server(options=list(SERVER_OPTIONS))
    server.add_generic_rpc_handlers((handler,))
    port = bind(server, address, what)
    await server.start()
    return server, port
