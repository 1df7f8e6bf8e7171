"""What the management API and the CLI show about connected proxies: per proxy and per type, where it stands.

Why a separate, frozen view: the live bookkeeping (``WatchedType``) mutates on every request; callers get a
consistent copy they can serialize without touching the server's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshplane.model import xdstypes
from meshplane.xds.protocol import NackRecord, SyncState

_SEVERITY = {SyncState.SYNCED: 0, SyncState.NOT_SENT: 1, SyncState.STALE: 2, SyncState.NACKED: 3}


@dataclass(frozen=True, slots=True)
class TypeStatus:
    type_url: str
    state: SyncState
    version_sent: str
    version_acked: str
    nonce_sent: str
    nonce_acked: str
    resources: int  # resources the proxy holds, as far as the server knows
    subscribed: int  # named subscriptions (0 for wildcard)
    wildcard: bool
    last_nack: NackRecord | None
    acks: int
    nacks: int
    # Why translation failed for this proxy and type, while it does (the proxy keeps its last good config).
    generate_error: str = ""

    @property
    def short_name(self) -> str:
        return xdstypes.SHORT_NAMES.get(self.type_url, self.type_url.rpartition(".")[2])

    @property
    def error(self) -> str:
        """The error text of the rejection while the type is NACKED, else the translation error while
        generating fails, else ""."""
        if self.state is SyncState.NACKED and self.last_nack:
            return self.last_nack.error
        return self.generate_error


@dataclass(frozen=True, slots=True)
class ProxyStatus:
    connection_id: str
    node_id: str
    namespace: str
    workload: str
    cluster_id: str
    proxy_type: str
    delta: bool
    peer: str
    connected_since: float  # wall clock (time.time())
    pushes: int
    types: tuple[TypeStatus, ...]
    bytes_sent: int = 0  # encoded responses written to this stream
    responses_sent: int = 0
    # Where the instance is (metadata INSTANCE_IPS) and its ``region/zone/subzone`` (the console scrapes and
    # groups proxies by these).
    addresses: tuple[str, ...] = ()
    locality: str = ""
    envoy_version: str = ""  # what the node reported in its first request ("" when nothing)

    @property
    def state(self) -> SyncState:
        """The worst state over the types (SYNCED when nothing is subscribed)."""
        if not self.types:
            return SyncState.SYNCED
        return max((t.state for t in self.types), key=_SEVERITY.__getitem__)

    def of(self, type_url: str) -> TypeStatus | None:
        for t in self.types:
            if t.type_url == type_url:
                return t
        return None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A proxy that rejects (NACKs) the config of one type, and the EnvoyFilters (``namespace/name``) that config
    carries: the user patches the rejection may come from (see ``XdsServer.rejections``)."""

    node_id: str
    namespace: str
    workload: str
    type_url: str
    error: str
    sources: tuple[str, ...]

    @property
    def short_name(self) -> str:
        return xdstypes.SHORT_NAMES.get(self.type_url, self.type_url.rpartition(".")[2])
