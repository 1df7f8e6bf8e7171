"""Every failure a call of the product's own API can report, in one hierarchy.

    ClientError             base: ``what`` names the call ("create WorkloadEntry default/web-0")
    ├── InvalidRequest      no request was made: a kind the API does not serve, an object without a name
    ├── Unreachable         no answer: connection refused or lost, timeout, bad URL
    ├── BadResponse         an answer of success that is not the JSON the endpoint promises
    └── Refused             the API answered an error status; ``code``, ``reason``, ``message`` from its Status
        ├── NotFound        404
        └── Conflict        409 (AlreadyExists on create, a stale resourceVersion on update)

Why one hierarchy: each caller used to catch its own mix of aiohttp, urllib and JSON exceptions and format its
own message; now a caller catches ``ClientError`` (or the one subclass it treats specially, such as ``NotFound``
on delete) and prints ``str(e)``, which always names the object or endpoint and carries the API's answer. A body
of success is never put into a message (a gateway credential's private key travels in one).
"""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE = 300  # characters of a non-Status error body kept in a message


class ClientError(Exception):
    """Base of every error of the client; ``what`` names the call."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.what = what


class InvalidRequest(ClientError):
    """The call cannot be made at all (nothing was sent)."""


class Unreachable(ClientError):
    """The API did not answer: the request may or may not have been carried out."""

    def __init__(self, what: str, base: str, detail: str) -> None:
        super().__init__(what, f"cannot reach the meshplane API at {base} ({detail})")
        self.base = base
        self.detail = detail


class BadResponse(ClientError):
    """The API answered with success, but not with what the endpoint returns (not JSON, not an object)."""


class Refused(ClientError):
    """The API answered with an error status. ``message`` is its Status message (or the start of the body when the
    answer is not a Status), ``status`` the whole Status object when there is one."""

    def __init__(self, what: str, code: int, reason: str, message: str, status: dict[str, Any] | None = None) -> None:
        super().__init__(what, f"HTTP {code}: {message or reason}")
        self.code = code
        self.reason = reason
        self.message = message
        self.status = status


class NotFound(Refused):
    """HTTP 404: the object (or the endpoint) does not exist."""


class Conflict(Refused):
    """HTTP 409: the object exists already (create) or changed since it was read (update)."""


def refused(what: str, code: int, phrase: str, body: bytes) -> Refused:
    """The error for an answer with status ``code``: a Kubernetes Status's reason and message when the body is one,
    else the HTTP reason phrase and the start of the body."""
    status: dict[str, Any] | None = None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        status = doc
        reason = str(doc.get("reason") or phrase)
        message = str(doc.get("message") or reason)
    else:
        reason = phrase
        message = body.decode(errors="replace").strip()[:MAX_MESSAGE] or phrase
    cls = {404: NotFound, 409: Conflict}.get(code, Refused)
    return cls(what, code, reason, message, status)
