"""The production Translator: ``meshplane.model.proxy.proxy_from_node`` and ``meshplane.translate``.

Kept apart from the Protocol so that tests can run the server with hand-written resources without importing the
builders, and so the server module names no translation internals. It uses only ``meshplane.translate``'s public
API (its ``__init__``), as ``lint-imports`` checks; the package is imported whole (``translate.generate``) because
``from meshplane.translate import generate`` reads, to the checker, as the submodule of that name.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, cast

from meshplane import translate
from meshplane.model.config import ConfigSnapshot
from meshplane.model.names import Hostname
from meshplane.model.proxy import Locality, Proxy, proxy_from_node
from meshplane.model.push import PushRequest
from meshplane.model.service import RegistrySnapshot
from meshplane.xds.translator import ResourceLike


class DefaultTranslator:
    def __init__(self, mesh: translate.MeshSettings | None = None,
                 jwks: Callable[[], Mapping[str, str]] | None = None) -> None:
        """``jwks``: what the control plane's JWKS resolver holds (``jwksUri`` -> JWKS), read at each build."""
        self.mesh = mesh or translate.MeshSettings()
        self._jwks = jwks
        # The last context built: it lends the next one the records of unchanged config objects.
        self._last: translate.PushContext | None = None

    def set_mesh(self, mesh: translate.MeshSettings) -> None:
        """New mesh settings (a reloaded MeshConfig): the next context is built with them, from scratch (records
        of the previous context may depend on the old settings); the caller asks the server for a full push."""
        self.mesh = mesh
        self._last = None

    def proxy_from_node(self, node_id: str, metadata: Mapping[str, Any], locality: Locality) -> Proxy:
        return proxy_from_node(node_id, metadata, locality)

    def build_context(self, config: ConfigSnapshot, registry: RegistrySnapshot) -> object:
        keys = self._jwks() if self._jwks is not None else None
        self._last = translate.build_push_context(config, registry, self.mesh, self._last, keys)
        return self._last

    def with_registry(self, ctx: object, registry: RegistrySnapshot, changed: frozenset[Hostname]) -> object:
        return cast(translate.PushContext, ctx).with_registry(registry, changed)

    def generate(
        self, type_url: str, proxy: Proxy, ctx: object, names: Collection[str] | None = None
    ) -> Sequence[ResourceLike]:
        return translate.generate(type_url, proxy, cast(translate.PushContext, ctx), names)

    def proxy_affected(self, proxy: Proxy, ctx: object, request: PushRequest) -> bool:
        return translate.proxy_affected(proxy, cast(translate.PushContext, ctx), request)

    def rejection_sources(self, type_url: str, proxy: Proxy, ctx: object) -> tuple[str, ...]:
        """The EnvoyFilters whose patches are in what ``type_url`` carries to ``proxy``."""
        return translate.applied_envoy_filters(type_url, proxy, cast(translate.PushContext, ctx))
