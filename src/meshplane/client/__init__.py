"""The one client of meshplane's own HTTP API (Kubernetes-compatible objects and the management API), used by the
agent, the local runtime and the CLI.

- :class:`Client` (``aio``): asynchronous, on aiohttp; the agent and the runtime's supervisor use it.
- :class:`SyncClient` (``sync``): the same client run to completion per call, for the CLI's commands.
- ``errors``: ``ClientError`` and its subclasses, the only exceptions a call raises.

Why here, below every caller and beside the store: it needs the kind registry (``meshplane.api``) to find paths
and nothing of the server, so the agent, the runtime and the CLI can use it without depending on each other.
"""

from meshplane.client.aio import Client
from meshplane.client.errors import (
    BadResponse,
    ClientError,
    Conflict,
    InvalidRequest,
    NotFound,
    Refused,
    Unreachable,
)
from meshplane.client.sync import SyncClient

__all__ = [
    "BadResponse",
    "Client",
    "ClientError",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "Refused",
    "SyncClient",
    "Unreachable",
]
