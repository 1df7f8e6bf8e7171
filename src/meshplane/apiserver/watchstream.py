"""Streaming a store watch to an HTTP client in the Kubernetes watch protocol.

One JSON object per line (``{"type": ..., "object": ...}``), flushed as it happens. The lifetime rules come from
kube-apiserver and what clients do with them: a watch lives long (30-60 min unless ``timeoutSeconds``), BOOKMARK
events carry progress when asked for, history that was compacted away is answered in-stream with a 410 ``Expired``
Status and the stream closes, and a client that went away is noticed within a second (aiohttp does not cancel the
handler by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from meshplane.apiserver.status import status_object
from meshplane.store import Expired, Store, Watch, WatchEvent

Render = Callable[[WatchEvent, bool], dict[str, Any] | None]
Bookmark = Callable[[int], dict[str, Any]]

_POLL = 1.0


async def stream(
    request: web.Request,
    store: Store,
    watch: Watch,
    *,
    render: Render,
    bookmark: Bookmark | None,
    timeout_seconds: float | None,
    bookmark_interval: float = 5.0,
) -> web.StreamResponse:
    """Send events until the timeout, the client leaving, the store closing, or an expiry."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    deadline = time.monotonic() + (timeout_seconds if timeout_seconds else random.uniform(1800, 3600))
    iterator = watch.__aiter__()
    last_rv = 0
    first = True
    next_bookmark = time.monotonic() + bookmark_interval
    pending: asyncio.Task[WatchEvent] | None = None
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=min(_POLL, max(deadline - now, 0.01)))
            if not done:
                if bookmark is not None and time.monotonic() >= next_bookmark:
                    rv = max(last_rv, store.current_rv)
                    await _send(resp, {"type": "BOOKMARK", "object": bookmark(rv)})
                    last_rv = rv
                    next_bookmark = time.monotonic() + bookmark_interval
                continue
            task, pending = pending, None
            try:
                event = task.result()
            except StopAsyncIteration:
                break
            except Expired as e:
                await _send(resp, {"type": "ERROR", "object": status_object(410, "Expired", str(e))})
                break
            last_rv = max(last_rv, event.rv)
            payload = render(event, first)
            if payload is not None:
                first = False
                await _send(resp, payload)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        watch.close()
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await resp.write_eof()
    return resp


async def _send(resp: web.StreamResponse, payload: dict[str, Any]) -> None:
    await resp.write(json.dumps(payload, separators=(",", ":")).encode() + b"\n")
