"""The control plane's JWKS resolver: fetches the keys of every RequestAuthentication ``jwksUri``, as istiod does.

Why in the control plane and not in Envoy: Envoy fetching the keys itself (``remote_jwks``) needs a cluster to the
issuer from every proxy, and when the fetch fails the provider has no keys at all; istiod instead fetches once,
caches, and sends the key set inline. Translation stays pure: this module does the I/O and the push context gets
its result (``jwks()``: ``jwksUri`` -> JWKS JSON) through the translator (``xds.default_translator``); translation
puts a key set nobody can sign for in place of keys that are not known (``translate.jwt.UNAVAILABLE_JWKS``), so a
failure never opens the door.

What it does, per URI named by any RequestAuthentication (followed with a list + watch of the store): a rule's
``jwksUri``, or for a rule with neither ``jwks`` nor ``jwksUri`` its issuer's OpenID discovery document, as
Istio (``translate.jwt.jwks_source``):

* fetch (``https`` verified against ``JwksSettings.ca_bundle`` or the system's CAs; ``http`` for loopback tests),
  with the smallest ``timeout`` of the rules naming the URI (Istio's default 5 s);
* keep the last good key set; refetch every ``refresh_interval`` (istiod's default: 20 min); after a failure
  retry with exponential backoff from ``retry_initial`` up to ``retry_max``;
* when a URI's key set changes (first fetch, rotation, a URI no longer named), call ``on_change`` (the server asks
  the xDS server for a full push);
* count failed fetches by issuer (``failures()``, exported as ``meshplane_jwks_fetch_failures_total{issuer}``);
* write each RequestAuthentication's ``status.conditions``: type ``JwksResolved``, ``True``/``Resolved`` when
  every ``jwksUri`` of it has keys, ``False``/``FetchFailed`` (message: the URI and the error) or
  ``False``/``Pending`` (not fetched yet). The condition's ``lastTransitionTime`` moves only when its status does.

Errors: a fetch fails with ``JwksFetchError`` (the message names the URI and says why); it never escapes the
resolver's tasks, it becomes status, a counter and a log line.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from meshplane.model.resources import REQUEST_AUTHENTICATIONS
from meshplane.model.spec import DecodeError, RequestAuthentication, decode_resource
from meshplane.store import Conflict, Expired, NotFound, Store
from meshplane.store.errors import StoreError
from meshplane.store.types import EventType, JSONObject
from meshplane.translate.jwt import OPENID_CONFIGURATION, jwks_source

log = logging.getLogger("meshplane.jwks")

CONDITION = "JwksResolved"
ACTOR = "system:meshplane-jwks-resolver"
DEFAULT_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1 << 20


class JwksFetchError(Exception):
    """One fetch of one JWKS URI failed; the message says which URI and why."""


@dataclass(frozen=True, slots=True)
class JwksSettings:
    refresh_interval: float = 20 * 60.0  # seconds between fetches of a URI whose keys are known
    retry_initial: float = 1.0  # first retry after a failed fetch; doubles up to retry_max
    retry_max: float = 60.0
    ca_bundle: Path | None = None  # PEM CA certificates for https URIs; None: the system's
    default_timeout: float = DEFAULT_TIMEOUT_S  # a rule without ``timeout``


@dataclass
class _Target:
    """One URI and what the resolver knows of it."""

    uri: str
    issuers: frozenset[str]
    timeout: float
    jwks: str | None = None  # the last good key set
    error: str = ""  # the last fetch's error ("" after a success)
    task: asyncio.Task[None] | None = field(default=None, repr=False)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_jwks(uri: str, text: str) -> str:
    """``text`` if it is a JWKS document (a JSON object with a non-empty ``keys`` list of objects)."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise JwksFetchError(f"{uri}: not JSON: {e}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
        raise JwksFetchError(f"{uri}: not a JWKS document (no non-empty \"keys\" list)")
    return text


class JwksResolver:
    """Resolves the ``jwksUri`` of every RequestAuthentication in ``store``; see the module docstring."""

    def __init__(self, store: Store, settings: JwksSettings | None = None,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.settings = settings or JwksSettings()
        self._store = store
        self.on_change: Callable[[str], None] = on_change or (lambda _reason: None)
        self._targets: dict[str, _Target] = {}
        self._failures: dict[tuple[str, ...], int] = {}
        # (namespace, name) -> its rules that name a jwksUri: (uri, issuer, timeout in ns or None)
        self._policies: dict[tuple[str, str], tuple[tuple[str, str, int | None], ...]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._status_dirty = asyncio.Event()
        self.fetches = 0

    # --- what translation and metrics read -----------------------------------------------------------------

    def jwks(self) -> Mapping[str, str]:
        """``jwksUri`` -> the last good JWKS fetched from it (URIs without one are absent)."""
        return {uri: t.jwks for uri, t in self._targets.items() if t.jwks is not None}

    def failures(self) -> Mapping[tuple[str, ...], int]:
        """Failed fetches by (issuer,) since start."""
        return dict(self._failures)

    def errors(self) -> Mapping[str, str]:
        """``jwksUri`` -> the last fetch's error, for URIs whose last fetch failed."""
        return {uri: t.error for uri, t in self._targets.items() if t.error}

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl_context()))
        rv = self._resync()
        self._watch_task = asyncio.create_task(self._watch_loop(rv), name="jwks-watch")
        self._status_task = asyncio.create_task(self._status_loop(), name="jwks-status")

    async def stop(self) -> None:
        tasks = [t for t in (self._watch_task, self._status_task) if t is not None]
        tasks += [t.task for t in self._targets.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watch_task = self._status_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ssl_context(self) -> ssl.SSLContext:
        cafile = str(self.settings.ca_bundle) if self.settings.ca_bundle is not None else None
        return ssl.create_default_context(cafile=cafile)

    # --- following the store ------------------------------------------------------------------------------

    def _resync(self) -> int:
        objs, rv = self._store.list(REQUEST_AUTHENTICATIONS)
        self._policies = {}
        for obj in objs:
            self._read(obj)
        self._retarget()
        return rv

    async def _watch_loop(self, rv: int) -> None:
        while True:
            watch = self._store.watch(REQUEST_AUTHENTICATIONS, since_rv=rv)
            try:
                async for event in watch:
                    rv = max(rv, event.rv)
                    md = event.obj["metadata"]
                    if event.type == EventType.DELETED:
                        self._policies.pop((str(md.get("namespace") or ""), str(md["name"])), None)
                    else:
                        self._read(event.obj)
                    self._retarget()
            except Expired:
                rv = self._resync()
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("jwks: RequestAuthentication watch failed; relisting")
                await asyncio.sleep(1.0)
                rv = self._resync()
                continue
            finally:
                watch.close()
            return  # the store is closing

    def _read(self, obj: JSONObject) -> None:
        md = obj["metadata"]
        key = (str(md.get("namespace") or ""), str(md["name"]))
        try:
            spec = decode_resource(REQUEST_AUTHENTICATIONS, obj).spec
        except DecodeError as e:
            log.error("jwks: RequestAuthentication %s/%s does not decode: %s", *key, e)
            self._policies.pop(key, None)
            return
        assert isinstance(spec, RequestAuthentication)
        self._policies[key] = tuple((source, r.issuer or "", r.timeout) for r in spec.jwt_rules
                                    for source in [jwks_source(r)] if source is not None)

    def _retarget(self) -> None:
        """Start fetching new URIs, stop fetching those no longer named; update issuers and timeouts."""
        wanted: dict[str, tuple[set[str], float | None]] = {}
        for rules in self._policies.values():
            for uri, issuer, timeout_ns in rules:
                issuers, timeout = wanted.setdefault(uri, (set(), None))
                if timeout_ns:
                    t = timeout_ns / 1e9
                    timeout = t if timeout is None else min(timeout, t)
                issuers.add(issuer)
                wanted[uri] = (issuers, timeout)
        changed = False
        for uri in list(self._targets):
            if uri not in wanted:
                gone = self._targets.pop(uri)
                if gone.task is not None:
                    gone.task.cancel()
                changed = changed or gone.jwks is not None
        for uri, (issuers, timeout) in wanted.items():
            effective = timeout if timeout is not None else self.settings.default_timeout
            known = self._targets.get(uri)
            if known is None:
                new = _Target(uri, frozenset(issuers), effective)
                self._targets[uri] = new
                new.task = asyncio.get_running_loop().create_task(self._follow(new), name=f"jwks {uri}")
            else:
                known.issuers, known.timeout = frozenset(issuers), effective
        if changed:
            self.on_change("jwks: a jwksUri is no longer used")
        self._status_dirty.set()

    # --- fetching -----------------------------------------------------------------------------------------

    async def _follow(self, target: _Target) -> None:
        """Fetch ``target`` now, then every refresh interval; after a failure, retry with backoff."""
        delay = self.settings.retry_initial
        while True:
            try:
                text = await self.fetch(target.uri, target.timeout)
            except Exception as e:  # any failed fetch is status and a retry, never a dead task
                error = str(e) if isinstance(e, JwksFetchError) else f"{target.uri}: {e!r}"
                if target.error != error:
                    log.warning("jwks: %s (issuers %s); retrying in %.1fs", error, ", ".join(sorted(target.issuers)),
                                delay)
                target.error = error
                for issuer in target.issuers:
                    self._failures[(issuer,)] = self._failures.get((issuer,), 0) + 1
                self._status_dirty.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max)
                continue
            delay = self.settings.retry_initial
            was_failing, target.error = bool(target.error), ""
            if text != target.jwks:
                target.jwks = text
                log.info("jwks: keys of %s %s", target.uri, "fetched" if not was_failing else "fetched again")
                self.on_change(f"jwks: keys of {target.uri} changed")
            self._status_dirty.set()
            await asyncio.sleep(self.settings.refresh_interval)

    async def fetch(self, uri: str, timeout: float) -> str:
        """The JWKS text of ``uri`` (one GET; two for an issuer's OpenID discovery document, whose ``jwks_uri``
        names the key set), or ``JwksFetchError``."""
        if not uri.endswith(OPENID_CONFIGURATION):
            return validate_jwks(uri, await self._get(uri, timeout))
        try:
            doc = json.loads(await self._get(uri, timeout))
        except ValueError as e:
            raise JwksFetchError(f"{uri}: not JSON: {e}") from None
        keys_uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
        if not isinstance(keys_uri, str) or not keys_uri.startswith(("https://", "http://")):
            raise JwksFetchError(f"{uri}: the OpenID configuration has no http(s) \"jwks_uri\"")
        return validate_jwks(keys_uri, await self._get(keys_uri, timeout))

    async def _get(self, uri: str, timeout: float) -> str:
        """One GET of ``uri``: its body as text, or ``JwksFetchError``."""
        assert self._session is not None, "start() first"
        self.fetches += 1
        try:
            async with self._session.get(uri, timeout=aiohttp.ClientTimeout(total=timeout),
                                         allow_redirects=True) as r:
                if r.status != 200:
                    raise JwksFetchError(f"{uri}: HTTP {r.status}")
                body = await r.content.read(MAX_JWKS_BYTES + 1)
        except TimeoutError:
            raise JwksFetchError(f"{uri}: no answer within {timeout:g}s") from None
        except aiohttp.ClientError as e:
            raise JwksFetchError(f"{uri}: {e}") from None
        if len(body) > MAX_JWKS_BYTES:
            raise JwksFetchError(f"{uri}: larger than {MAX_JWKS_BYTES} bytes")
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise JwksFetchError(f"{uri}: not UTF-8") from None

    # --- status -------------------------------------------------------------------------------------------

    def condition(self, uris: tuple[str, ...]) -> tuple[str, str, str]:
        """(status, reason, message) of ``JwksResolved`` for a policy naming ``uris``."""
        failed = [self._targets[u] for u in uris if u in self._targets and self._targets[u].error]
        if failed:
            return "False", "FetchFailed", "; ".join(
                t.error + (" (the keys fetched before are still used)" if t.jwks is not None else
                           " (tokens of this issuer are refused until its keys are fetched)") for t in failed)
        pending = [u for u in uris if u not in self._targets or self._targets[u].jwks is None]
        if pending:
            return "False", "Pending", f"keys not fetched yet: {', '.join(pending)}"
        return "True", "Resolved", f"keys fetched from {', '.join(uris)}"

    async def _status_loop(self) -> None:
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            for key, rules in list(self._policies.items()):
                await self._write_status(key, tuple(dict.fromkeys(uri for uri, _, _ in rules)))

    async def _write_status(self, key: tuple[str, str], uris: tuple[str, ...]) -> None:
        for _ in range(5):
            obj = self._store.get(REQUEST_AUTHENTICATIONS, *key)
            if obj is None:
                return
            new = _with_condition(obj, self.condition(uris) if uris else None)
            if new is None:
                return  # already says so
            try:
                await self._store.update(REQUEST_AUTHENTICATIONS, new, actor=ACTOR,
                                         expected_rv=int(obj["metadata"]["resourceVersion"]))
                return
            except Conflict:
                continue
            except NotFound:
                return
            except StoreError as e:
                log.warning("jwks: cannot write the status of RequestAuthentication %s/%s: %s", *key, e)
                return


def _with_condition(obj: JSONObject, cond: tuple[str, str, str] | None) -> dict[str, Any] | None:
    """``obj`` with its ``JwksResolved`` condition set to ``cond`` (removed when None); None when unchanged."""
    status = dict(obj.get("status") or {})
    conditions = [dict(c) for c in status.get("conditions") or [] if isinstance(c, dict)]
    before = next((c for c in conditions if c.get("type") == CONDITION), None)
    others = [c for c in conditions if c.get("type") != CONDITION]
    if cond is None:
        if before is None:
            return None
        after = others
    else:
        st, reason, message = cond
        if before is not None and (before.get("status"), before.get("reason"), before.get("message")) == cond:
            return None
        when = str(before.get("lastTransitionTime")) if before and before.get("status") == st else _now()
        after = [*others, {"type": CONDITION, "status": st, "reason": reason, "message": message,
                           "lastTransitionTime": when,
                           "observedGeneration": int(obj["metadata"].get("generation") or 0)}]
    new = copy.deepcopy(dict(obj))
    status["conditions"] = after
    new["status"] = status
    return new
