"""Subcommands of the security area of the ``meshplane`` command: ``meshplane audit``, ``meshplane ca rotate-root``.

Why one merged trail: an operator asking "what happened" wants API changes (who changed which policy) and run-time
security events (certificates issued or refused, bootstrap tokens, authorization and OPA denies) on one time line.
The two come from two endpoints (``/management/v1/audit``: durable store records; ``/management/v1/security/audit``:
the control plane's bounded ring) and are merged here by timestamp, each item with a ``kind`` (``change`` for a
store record, else the event's kind such as ``certificate.issued`` or ``opa.deny``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from meshplane.cli import locate
from meshplane.cli.serverproc import ServerConfigError
from meshplane.client import ClientError, NotFound, SyncClient
from meshplane.model.spec import parse_duration

PAGE = 5000
TIMEOUT_S = 10.0


class AuditCommandError(Exception):
    """The audit trail could not be read; the message says why."""


def parse_since(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """A duration that long ago (``30s``, ``5m``, ``1h30m``, read by the product's one duration parser, plus days:
    ``1d``) or an RFC 3339 time."""
    now = now or datetime.datetime.now(datetime.UTC)
    text = text.strip()
    days = re.fullmatch(r"(\d+(?:\.\d+)?)d", text)
    ns = int(float(days.group(1)) * 86400 * 10**9) if days else parse_duration(text)
    if ns is not None and ns >= 0:
        return now - datetime.timedelta(microseconds=ns / 1000)
    try:
        t = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise AuditCommandError(f"--since {text!r}: expected a duration (30s, 5m, 2h, 1d) or an RFC 3339 time") from e
    return t if t.tzinfo else t.replace(tzinfo=datetime.UTC)


def _time(ts: str) -> datetime.datetime | None:
    try:
        t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=datetime.UTC)


def api_url(args: argparse.Namespace) -> tuple[str, str]:
    """(API URL, bearer token) as :func:`meshplane.cli.locate.endpoint` finds them."""
    try:
        ep = locate.endpoint(args)
    except ServerConfigError as e:
        raise AuditCommandError(str(e)) from None
    return ep.api, ep.token


def _pages(read: Callable[..., list[dict[str, Any]]], cursor: str) -> list[dict[str, Any]]:
    """Every item of a paged trail, following ``cursor`` (the last item's position) from page to page."""
    out: list[dict[str, Any]] = []
    since = 0
    while True:
        try:
            items = read(since=since, limit=PAGE)
        except NotFound:
            return out  # a server without a CA has no security trail
        out += items
        if len(items) < PAGE:
            return out
        since = int(items[-1][cursor])


def read_trail(api: str, token: str) -> list[dict[str, Any]]:
    """Changes and security events, oldest first, in one shape."""
    try:
        with SyncClient(api, token=token, timeout=TIMEOUT_S) as client:
            changes = _pages(client.audit, "resourceVersion")
            events = _pages(client.security_audit, "seq")
    except ClientError as err:
        raise AuditCommandError(str(err)) from err
    out: list[dict[str, Any]] = []
    for r in changes:
        out.append({"timestamp": r.get("timestamp", ""), "kind": "change", "subject": r.get("user", ""),
                    "target": f"{r.get('resource')}.{r.get('group') or 'core'} "
                              f"{str(r['namespace']) + '/' if r.get('namespace') else ''}{r.get('name')}",
                    "reason": r.get("verb", ""),
                    "details": {"resourceVersion": str(r.get("resourceVersion", "")),
                                "generation": f"{r.get('oldGeneration')}->{r.get('newGeneration')}"}})
    for e in events:
        out.append({"timestamp": e.get("timestamp", ""), "kind": e.get("kind", ""),
                    "subject": e.get("subject", ""), "target": e.get("target", ""),
                    "reason": e.get("reason", ""), "details": dict(e.get("details") or {})})
    epoch = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    out.sort(key=lambda i: _time(str(i["timestamp"])) or epoch)
    return out


def table(items: list[dict[str, Any]]) -> str:
    rows = [("TIME", "KIND", "SUBJECT", "TARGET", "REASON")]
    for i in items:
        t = _time(str(i["timestamp"]))
        rows.append((t.strftime("%Y-%m-%dT%H:%M:%SZ") if t else str(i["timestamp"]), str(i["kind"]),
                     str(i["subject"]), str(i["target"]), str(i["reason"])[:80]))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    return "\n".join("   ".join(r[c].ljust(widths[c]) for c in range(4)) + "   " + r[4] for r in rows)


def _audit(args: argparse.Namespace) -> int:
    try:
        api, token = api_url(args)
        items = read_trail(api, token)
        if args.since:
            since = parse_since(args.since)
            items = [i for i in items if (_time(str(i["timestamp"])) or since) >= since]
    except AuditCommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.kind:
        items = [i for i in items if str(i["kind"]).startswith(args.kind)]
    if args.output == "json":
        print(json.dumps({"kind": "AuditTrail", "apiVersion": "meshplane.io/v1", "items": items}, indent=1))
    else:
        print(table(items))
    return 0


def parse_overlap(text: str) -> float:
    """``--overlap``: a duration (``90m``, ``1h``, ``30d``) or a number of seconds. Its range is the server's to
    check (whole seconds within the root's lifetime), so the CLI and the API refuse the same values."""
    t = text.strip()
    days = re.fullmatch(r"(\d+(?:\.\d+)?)d", t)
    if days:
        return float(days.group(1)) * 86400
    ns = parse_duration(t)
    if ns is not None:
        return ns / 1e9
    try:
        seconds = float(t)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise AuditCommandError(f"--overlap {text!r}: expected a duration (90m, 1h, 30d) or a number of seconds")
    return seconds


def _rotate_root(args: argparse.Namespace) -> int:
    try:
        overlap = parse_overlap(args.overlap)
        api, token = api_url(args)
        with SyncClient(api, token=token, timeout=TIMEOUT_S) as client:
            pem = client.rotate_root(overlap)
    except AuditCommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    roots = pem.count("BEGIN CERTIFICATE")
    print(f"new root in place; {roots} root{'s' if roots != 1 else ''} trusted "
          f"(the previous one for {args.overlap})")
    return 0


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``meshplane`` parser's subparsers."""
    p = sub.add_parser("audit", help="the audit trail: API changes and security events (certificates, tokens, "
                                     "authorization and OPA denies)")
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.add_argument("--since", help="only events newer than this: a duration (30s, 5m, 2h, 1d) or an RFC 3339 time")
    p.add_argument("--kind", help="only events whose kind starts with this (change, certificate, authz, opa, ...)")
    locate.add_server_flags(p)
    p.set_defaults(func=_audit)

    ca = sub.add_parser("ca", help="the control plane's certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    r = ca_sub.add_parser("rotate-root", help="make a new root and intermediate; the previous root stays trusted "
                                              "for --overlap so workloads move over without a failed handshake")
    r.add_argument("--overlap", default="1h", help="how long the previous root stays trusted: a duration (90m, 1h, "
                                                   "30d) or seconds, at most the root's lifetime (default 1h)")
    r.add_argument("--server", help="URL of the API (default: the local mesh of --home)")
    r.add_argument("--data-dir", help="a `meshplane server` data dir (reads its server.json)")
    r.add_argument("--token", help="bearer token for the API")
    r.add_argument("--home", default=None, help="state directory of a local mesh (default $MESHPLANE_HOME or "
                                                "~/.meshplane)")
    r.set_defaults(func=_rotate_root)
