"""The narrow interface between the xDS server and translation: the server's only view of ``meshplane.translate``.

Why a seam: the server's protocol and push logic must be testable with a handful of hand-written resources
(including ones Envoy rejects on purpose), and translation must stay pure and ignorant of gRPC. Like
go-control-plane's cache interface, server and translation meet at one small Protocol; the push context is an
opaque value to the server (it only carries it from ``build_context`` to ``generate``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from google.protobuf import any_pb2

from meshplane.model.config import ConfigSnapshot
from meshplane.model.names import Hostname
from meshplane.model.proxy import Locality, Proxy
from meshplane.model.push import PushRequest
from meshplane.model.service import RegistrySnapshot


class ResourceLike(Protocol):
    """One generated xDS resource. ``version`` must change whenever the serialized resource changes."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def resource(self) -> any_pb2.Any: ...


class Translator(Protocol):
    """What the server needs from translation. Implementations must not do I/O and must be deterministic."""

    def proxy_from_node(self, node_id: str, metadata: Mapping[str, Any], locality: Locality) -> Proxy:
        """Parse an Envoy node; raise ValueError (ProxyMetadataError) when it cannot be understood."""
        ...

    def build_context(self, config: ConfigSnapshot, registry: RegistrySnapshot) -> object:
        """An immutable push context for one config version."""
        ...

    def with_registry(self, ctx: object, registry: RegistrySnapshot, changed: frozenset[Hostname]) -> object:
        """The same config with new endpoints (endpoint-only updates); only ``changed`` hosts' endpoints differ
        from ``ctx``'s registry, so what was generated for any other host may be kept."""
        ...

    def generate(
        self, type_url: str, proxy: Proxy, ctx: object, names: Collection[str] | None = None
    ) -> Sequence[ResourceLike]:
        """Resources of one type for one proxy: all of them (``names=None``) or only those named."""
        ...

    def proxy_affected(self, proxy: Proxy, ctx: object, request: PushRequest) -> bool:
        """Whether a change can alter anything this proxy receives."""
        ...


@runtime_checkable
class ExplainsRejections(Protocol):
    """A translator that can say which user config (EnvoyFilters) a proxy's resources of one type carry, so a
    rejection of them can be reported on those objects (the production translator does)."""

    def rejection_sources(self, type_url: str, proxy: Proxy, ctx: object) -> tuple[str, ...]: ...
