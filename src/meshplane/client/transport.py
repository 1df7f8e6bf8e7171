"""One HTTP exchange with the API: base URL, bearer token, timeout, and the mapping of every failure to
:mod:`meshplane.client.errors`.

Why a session may be handed in: the agent already keeps one small connection pool for Envoy's admin interface,
its readiness probe and the API; a client made with that session shares it and leaves closing it to its owner.
Without one, the transport opens its own on first use (inside the running event loop) and closes it in
:meth:`Transport.close`; ``trust_env`` then decides whether it honours ``HTTP(S)_PROXY`` / ``NO_PROXY`` (the
CLI's commands do, as kubectl does; the agent and the supervisor never did).

Several base URLs (comma-separated: the replicas of a replicated control plane, docs/ha.md): requests go to the
current one; when it refuses the connection (the request never left, so retrying even a write is safe), the next
one is tried, and it stays current until it fails in turn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from meshplane.client.errors import BadResponse, Unreachable, refused

JSON = "application/json"


def _detail(e: BaseException) -> str:
    """Why no answer came, in one line. An HTTP/2-only server (gRPC: the xDS, CA or trace port given where the API
    belongs) answers an HTTP/1.1 request with its binary SETTINGS frame, which aiohttp reports as a bad status line
    full of escaped bytes: say what it means instead."""
    text = str(e) or type(e).__name__
    if "Bad status line" in text and "x00" in text:  # the frame's length and type bytes, escaped
        return ("it answers HTTP/2 only: a gRPC port (xDS, CA or traces), not the API; the API's URL is the 'API' "
                "line of `meshplane status` or the first line `meshplane server` prints")
    return text.splitlines()[0] if text.strip() else type(e).__name__


class Transport:
    def __init__(self, base: str, *, token: str = "", timeout: float = 10.0,
                 session: aiohttp.ClientSession | None = None, trust_env: bool = False) -> None:
        self.bases = [b.strip().rstrip("/") for b in base.split(",") if b.strip()] or [base.rstrip("/")]
        self._current = 0
        self.token = token
        self.timeout = timeout
        self.trust_env = trust_env
        self._session = session
        self._owned = session is None

    @property
    def base(self) -> str:
        """The base URL requests go to now."""
        return self.bases[self._current]

    def __repr__(self) -> str:  # never the token
        return f"Transport({self.base!r})"

    def _headers(self, content_type: str, extra: Mapping[str, str] | None) -> dict[str, str]:
        h = {"Accept": JSON}
        if content_type:
            h["Content-Type"] = content_type
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(extra or {})
        return h

    async def call(self, method: str, path: str, what: str, *, body: Any = None, content_type: str = JSON,
                   query: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                   timeout: float | None = None, decode: bool = True) -> Any:
        """Send one request; the decoded JSON answer (None with ``decode=False``), or a ClientError."""
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=self.trust_env)
        seconds = self.timeout if timeout is None else timeout
        data = json.dumps(body).encode() if body is not None else None
        for _ in range(len(self.bases) - 1):  # the other replicas, when this one refuses the connection
            try:
                return await self._call_once(method, path, what, data, content_type, query, headers, seconds, decode)
            except Unreachable as e:
                if not isinstance(e.__cause__, aiohttp.ClientConnectorError):
                    raise
                self._current = (self._current + 1) % len(self.bases)
        return await self._call_once(method, path, what, data, content_type, query, headers, seconds, decode)

    async def _call_once(self, method: str, path: str, what: str, data: bytes | None, content_type: str,
                         query: Mapping[str, str] | None, headers: Mapping[str, str] | None, seconds: float,
                         decode: bool) -> Any:
        assert self._session is not None
        try:
            async with self._session.request(
                    method, self.base + path, data=data, params=query,
                    headers=self._headers(content_type if data is not None else "", headers),
                    timeout=aiohttp.ClientTimeout(total=seconds)) as r:
                raw = await r.read()
                if not 200 <= r.status < 300:
                    raise refused(what, r.status, r.reason or "", raw)
        except TimeoutError:
            raise Unreachable(what, self.base, f"no answer within {seconds:g}s") from None
        except (aiohttp.ClientError, OSError) as e:
            raise Unreachable(what, self.base, _detail(e)) from e
        if not decode:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise BadResponse(what, f"the answer is not JSON ({len(raw)} bytes)") from None

    async def close(self) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
        self._session, self._owned = None, True  # a later call opens (and owns) a new session
