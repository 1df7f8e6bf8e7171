"""A blocking facade over :class:`meshplane.client.aio.Client`, for the CLI's commands.

Why a facade and not a second client: a command makes a few calls and exits, so it runs the asynchronous client
on a private event loop (``asyncio.Runner``) that lives as long as the facade; the connection pool, paths,
errors and timeouts are the asynchronous client's. Each method here only runs its namesake to completion. Not
for code that already runs in an event loop (a Runner cannot start inside one): that code uses ``Client``.
Like kubectl (and urllib, which the commands used before), it honours ``HTTP(S)_PROXY`` and ``NO_PROXY``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from meshplane.api.kinds import KindRegistry
from meshplane.client.aio import Client, Object, Objects

T = TypeVar("T")


class SyncClient:
    def __init__(self, base: str, *, token: str = "", timeout: float = 10.0,
                 registry: KindRegistry | None = None) -> None:
        self.client = Client(base, token=token, timeout=timeout, registry=registry, trust_env=True)
        self._runner = asyncio.Runner()

    def __repr__(self) -> str:
        return f"SyncClient({self.client.base!r})"

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(call)

    def close(self) -> None:
        try:
            self._run(self.client.close())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- objects -----------------------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
            timeout: float | None = None) -> Object:
        return self._run(self.client.get(api_version, kind, name, namespace, timeout=timeout))

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             timeout: float | None = None) -> Objects:
        return self._run(self.client.list(api_version, kind, namespace, timeout=timeout))

    def create(self, obj: Mapping[str, Any], *, timeout: float | None = None) -> Object:
        return self._run(self.client.create(obj, timeout=timeout))

    def replace(self, obj: Mapping[str, Any], *, timeout: float | None = None) -> Object:
        return self._run(self.client.replace(obj, timeout=timeout))

    def apply(self, obj: Mapping[str, Any], *, timeout: float | None = None) -> str:
        return self._run(self.client.apply(obj, timeout=timeout))

    def patch(self, api_version: str, kind: str, name: str, patch: Mapping[str, Any],
              namespace: str | None = None, *, subresource: str = "", timeout: float | None = None) -> Object:
        return self._run(self.client.patch(api_version, kind, name, patch, namespace, subresource=subresource,
                                           timeout=timeout))

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               timeout: float | None = None) -> None:
        self._run(self.client.delete(api_version, kind, name, namespace, timeout=timeout))

    # --- management --------------------------------------------------------------------------------------

    def serving(self, *, timeout: float = 1.0) -> bool:
        return self._run(self.client.serving(timeout=timeout))

    def proxies(self, *, timeout: float | None = None) -> Objects:
        return self._run(self.client.proxies(timeout=timeout))

    def control_plane_version(self, *, timeout: float | None = None) -> Object:
        return self._run(self.client.control_plane_version(timeout=timeout))

    def bootstrap_token(self, namespace: str, service_account: str, ttl_s: int, *,
                        timeout: float | None = None) -> str:
        return self._run(self.client.bootstrap_token(namespace, service_account, ttl_s, timeout=timeout))

    def trust_bundle(self, *, timeout: float | None = None) -> str:
        return self._run(self.client.trust_bundle(timeout=timeout))

    def rotate_root(self, overlap_s: float, *, timeout: float | None = None) -> str:
        return self._run(self.client.rotate_root(overlap_s, timeout=timeout))

    def gateway_credentials(self, bootstrap_token: str, *, timeout: float | None = None) -> Objects:
        return self._run(self.client.gateway_credentials(bootstrap_token, timeout=timeout))

    def report_security_events(self, events: Sequence[Mapping[str, Any]], *, bootstrap_token: str,
                               timeout: float | None = None) -> None:
        self._run(self.client.report_security_events(events, bootstrap_token=bootstrap_token, timeout=timeout))

    def security_audit(self, *, since: int = 0, limit: int = 500, kind: str = "",
                       timeout: float | None = None) -> Objects:
        return self._run(self.client.security_audit(since=since, limit=limit, kind=kind, timeout=timeout))

    def traces(self, *, service: str = "", limit: int = 20, timeout: float | None = None) -> Objects:
        return self._run(self.client.traces(service=service, limit=limit, timeout=timeout))

    def trace(self, trace_id: str, *, timeout: float | None = None) -> Objects:
        return self._run(self.client.trace(trace_id, timeout=timeout))

    def analyze(self, *, namespace: str = "", objects: Sequence[Mapping[str, Any]] | None = None,
                default_namespace: str = "default", timeout: float | None = None) -> Objects:
        return self._run(self.client.analyze(namespace=namespace, objects=objects,
                                             default_namespace=default_namespace, timeout=timeout))

    def audit(self, *, since: int = 0, limit: int = 500, timeout: float | None = None) -> Objects:
        return self._run(self.client.audit(since=since, limit=limit, timeout=timeout))
