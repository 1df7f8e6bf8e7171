"""The mesh configuration at run time: the ``istio`` ConfigMap in ``istio-system`` (key ``mesh``) is the source
of truth, ``meshplane server --mesh-config FILE`` publishes FILE into it, and every change reaches translation.

Why one source of truth: Istio users edit the mesh config as that ConfigMap (``kubectl edit cm istio -n
istio-system``); a file is what a server started by hand or by the local runtime has. Publishing the file into the
ConfigMap makes both one path: the file is read at start (an invalid file stops the server, naming the field) and
polled, a valid change is written to the ConfigMap (through admission, like every write), an invalid one is
logged with its field and changes nothing. A ConfigMap change (from the file, or ``kubectl apply``; admission has
already refused what ``model.meshconfig`` cannot read) is parsed over the server's own settings and handed to
``apply`` (the translator's new settings and a full push). Deleting the ConfigMap returns to the server's own
settings. A ``trustDomain`` other than the CA's is refused here (admission does not know the CA): kept out, logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate
from meshplane.model.mesh import MeshSettings
from meshplane.model.meshconfig import MESH_CONFIGMAP, MESH_KEY, MeshConfigError, parse_mesh_yaml
from meshplane.model.resources import CONFIGMAPS
from meshplane.store import Expired, Store
from meshplane.store.types import EventType

log = logging.getLogger("meshplane.meshconfig")

ACTOR = "system:meshplane-server"


class MeshConfigFileError(Exception):
    """The ``--mesh-config`` file cannot be used; the message names the file and the field."""


class MeshConfigSync:
    def __init__(self, store: Store, base: MeshSettings, apply: Callable[[MeshSettings], None], *,
                 file: Path | None = None, poll_s: float = 1.0) -> None:
        self.store, self.base, self.apply, self.file, self.poll_s = store, base, apply, file, poll_s
        self.current = base
        self.text: str | None = None  # the ConfigMap's mesh text last applied (None: no ConfigMap)
        self._file_text: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.reloads = 0
        self.refused = 0

    def __repr__(self) -> str:
        return f"MeshConfigSync(file={self.file}, reloads={self.reloads}, refused={self.refused})"

    def status(self) -> dict[str, Any]:
        """What is in effect (``GET /management/v1/mesh-config``): the source, the providers, what was kept or
        ignored, and how many reloads and refusals there were."""
        s = self.current
        warnings = parse_mesh_yaml(self.text, self.base).warnings if self.text is not None else ()
        return {"kind": "MeshConfigStatus", "apiVersion": "meshplane.io/v1",
                "source": f"ConfigMap {MESH_CONFIGMAP[0]}/{MESH_CONFIGMAP[1]}" if self.text is not None else "default",
                "file": str(self.file) if self.file is not None else "",
                "rootNamespace": s.root_namespace, "trustDomain": s.trust_domain,
                "outboundTrafficPolicy": s.outbound_traffic_policy,
                "extensionProviders": [{"name": p.name, "kind": "envoyExtAuthzHttp" if p.http else "envoyExtAuthzGrpc",
                                        "service": p.service, "port": p.port} for p in s.ext_authz_providers]
                + [{"name": p.name, "kind": p.kind} for p in s.telemetry_providers],
                "warnings": list(warnings), "reloads": self.reloads, "refused": self.refused}

    async def start(self) -> None:
        """Publish the file (if any) and apply the ConfigMap as it is now; then follow both."""
        if self.file is not None:
            text = self._read_file()
            try:
                self._parse(text)
            except MeshConfigError as e:
                raise MeshConfigFileError(f"--mesh-config {self.file}: {e}") from e
            self._file_text = text
            await self._publish(text)
        rv = self.store.current_rv
        self._on_object(self.store.get(CONFIGMAPS, *MESH_CONFIGMAP))
        self._tasks.append(asyncio.create_task(self._watch(rv), name="mesh-config-watch"))
        if self.file is not None:
            self._tasks.append(asyncio.create_task(self._poll(), name="mesh-config-file"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    # ---- the file --------------------------------------------------------------------------------------------

    def _read_file(self) -> str:
        assert self.file is not None
        try:
            return self.file.read_text()
        except OSError as e:
            raise MeshConfigFileError(f"--mesh-config {self.file}: cannot read it: {e}") from e

    def _parse(self, text: str) -> MeshSettings:
        settings = parse_mesh_yaml(text, self.base).settings
        if settings.trust_domain != self.base.trust_domain:
            raise MeshConfigError("trustDomain", f"must be the CA's trust domain {self.base.trust_domain!r} "
                                                 f"(--trust-domain), not {settings.trust_domain!r}")
        return settings

    async def _publish(self, text: str) -> None:
        """Write ``text`` as the ConfigMap's ``mesh`` (admission first, as every write); nothing when equal."""
        ns, name = MESH_CONFIGMAP
        current = self.store.get(CONFIGMAPS, ns, name)
        if current is not None and (current.get("data") or {}).get(MESH_KEY) == text:
            return
        if current is None:
            obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": name, "namespace": ns}, "data": {MESH_KEY: text}}
        else:
            obj = {**current, "data": {**(current.get("data") or {}), MESH_KEY: text}}
        info = default_registry().by_gr(CONFIGMAPS)
        assert info is not None
        validate(info, obj)
        if current is None:
            await self.store.create(CONFIGMAPS, obj, actor=ACTOR)
        else:
            await self.store.update(CONFIGMAPS, obj, actor=ACTOR)
        log.info("mesh config from %s published as ConfigMap %s/%s", self.file, ns, name)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                text = self._read_file()
            except MeshConfigFileError as e:
                log.error("%s; keeping the current mesh settings", e)
                continue
            if text == self._file_text:
                continue
            self._file_text = text
            try:
                self._parse(text)
                await self._publish(text)
            except MeshConfigError as e:
                self.refused += 1
                log.error("--mesh-config %s: %s; keeping the current mesh settings", self.file, e)
            except Exception:
                self.refused += 1
                log.exception("--mesh-config %s: not published; keeping the current mesh settings", self.file)

    # ---- the ConfigMap ---------------------------------------------------------------------------------------

    def _on_object(self, obj: dict[str, Any] | None) -> None:
        text = None if obj is None else (obj.get("data") or {}).get(MESH_KEY)
        text = None if text is None else str(text)
        if text == self.text:
            return
        try:
            settings = self.base if text is None else self._parse(text)
        except MeshConfigError as e:
            self.refused += 1
            log.error("ConfigMap %s/%s: %s; keeping the current mesh settings", *MESH_CONFIGMAP, e)
            return
        self.text = text
        if settings == self.current:
            return
        self.current = settings
        self.reloads += 1
        log.info("mesh settings reloaded from ConfigMap %s/%s", *MESH_CONFIGMAP)
        self.apply(settings)

    async def _watch(self, rv: int) -> None:
        ns, name = MESH_CONFIGMAP
        while True:
            watch = self.store.watch(CONFIGMAPS, namespace=ns, since_rv=rv)
            try:
                async for event in watch:
                    rv = max(rv, event.rv)
                    if (event.obj.get("metadata") or {}).get("name") != name:
                        continue
                    self._on_object(None if event.type is EventType.DELETED else event.obj)
            except Expired:
                rv = self.store.current_rv
                self._on_object(self.store.get(CONFIGMAPS, ns, name))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mesh config watch failed; restarting")
                await asyncio.sleep(0.5)
            finally:
                watch.close()
