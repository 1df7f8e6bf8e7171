"""A WasmPlugin's module URL, read the same way by admission (which refuses any other) and translation.

Why here: meshplane fetches no modules; a WasmPlugin's ``url`` must be ``file:///absolute/path`` on the proxies'
host, which Envoy reads itself (a local data source).
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse


def file_path(url: str) -> str | None:
    """The path of a ``file://`` URL (``file:///a/b.wasm``, ``file://localhost/a/b.wasm``), None otherwise."""
    u = urlparse(url)
    if u.scheme != "file" or u.netloc not in ("", "localhost") or not u.path.startswith("/"):
        return None
    return unquote(u.path)


__all__ = ["file_path"]
