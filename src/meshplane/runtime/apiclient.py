"""The few calls the runtime makes to the control plane's HTTP API: apply objects, read proxy sync status.

Why not kubectl or a Kubernetes client library: the supervisor must not depend on a binary being installed, and it
needs only create-or-replace and one management endpoint. Kinds are resolved to their REST paths through the same
kind registry the API server uses, so any kind the server serves can appear in a manifest's ``config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from meshplane.api.kinds import KindRegistry, default_registry


class ApplyError(Exception):
    """The API refused an object: the message names the object and carries the API's answer."""


class ApiClient:
    def __init__(self, base: str, session: aiohttp.ClientSession, registry: KindRegistry | None = None) -> None:
        self.base = base.rstrip("/")
        self.session = session
        self.registry = registry or default_registry()

    def _path(self, obj: Mapping[str, Any]) -> tuple[str, str]:
        api_version = str(obj.get("apiVersion") or "")
        kind = str(obj.get("kind") or "")
        info = self.registry.by_api_version(api_version, kind)
        if info is None:
            raise ApplyError(f"{kind or '?'} ({api_version or 'no apiVersion'}): kind not served by the API")
        md = obj.get("metadata") or {}
        name = str(md.get("name") or "")
        if not name:
            raise ApplyError(f"{kind}: metadata.name is required")
        prefix = f"/apis/{api_version}" if info.group else f"/api/{api_version}"
        ns = str(md.get("namespace") or "default")
        coll = f"{prefix}/namespaces/{ns}/{info.plural}" if info.namespaced else f"{prefix}/{info.plural}"
        return coll, name

    async def apply(self, obj: Mapping[str, Any]) -> str:
        """Create ``obj``, or replace it when it exists. Returns ``created`` or ``configured``."""
        coll, name = self._path(obj)
        timeout = aiohttp.ClientTimeout(total=10)
        async with self.session.post(self.base + coll, json=obj, timeout=timeout) as r:
            if r.status in (200, 201):
                return "created"
            if r.status != 409:
                raise ApplyError(f"{obj.get('kind')} {name}: HTTP {r.status}: {(await r.text())[:400]}")
        async with self.session.get(f"{self.base}{coll}/{name}", timeout=timeout) as r:
            live = await r.json()
        new = dict(obj)
        new["metadata"] = {**dict(obj.get("metadata") or {}),
                           "resourceVersion": (live.get("metadata") or {}).get("resourceVersion")}
        async with self.session.put(f"{self.base}{coll}/{name}", json=new, timeout=timeout) as r:
            if r.status not in (200, 201):
                raise ApplyError(f"{obj.get('kind')} {name}: HTTP {r.status}: {(await r.text())[:400]}")
        return "configured"

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete one object; False when it was not there or the API could not be reached."""
        coll, _ = self._path({"apiVersion": api_version, "kind": kind,
                              "metadata": {"name": name, "namespace": namespace}})
        try:
            async with self.session.delete(f"{self.base}{coll}/{name}", timeout=aiohttp.ClientTimeout(total=5)) as r:
                return r.status in (200, 202)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def proxies(self) -> list[dict[str, Any]]:
        """The connected proxies and their sync state (the management API), [] when unreachable."""
        try:
            async with self.session.get(self.base + "/management/v1/proxies",
                                        timeout=aiohttp.ClientTimeout(total=3)) as r:
                if r.status != 200:
                    return []
                data = await r.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return []
        items = data.get("items") if isinstance(data, dict) else None
        return [i for i in items or [] if isinstance(i, dict)]

    async def bootstrap_token(self, namespace: str, service_account: str, ttl_s: int) -> str:
        """A bootstrap token for the CA (``POST /management/v1/tokens``); the caller hands it to one agent."""
        body = {"namespace": namespace, "serviceAccount": service_account, "ttlSeconds": ttl_s}
        async with self.session.post(self.base + "/management/v1/tokens", json=body,
                                     timeout=aiohttp.ClientTimeout(total=10)) as r:
            if r.status != 201:
                raise ApplyError(f"bootstrap token for {namespace}/{service_account}: HTTP {r.status}: "
                                 f"{(await r.text())[:300]}")
            return str((await r.json())["token"])

    async def up(self) -> bool:
        try:
            async with self.session.get(self.base + "/api", timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
