"""``meshplane trace [TRACE_ID]``: the traces the control plane's collector received (``cli.trace_api``).

Without an id: the most recent traces, one line each (id, root service and operation, spans, duration, errors).
With one: the trace as an indented tree of spans (service, operation, kind, duration, status), children under the
span that started them, by start time; spans whose parent never arrived are shown as roots.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meshplane.cli import locate
from meshplane.client import ClientError, SyncClient

TIMEOUT_S = 30.0
EXIT_FAILED = 1


def _client(args: argparse.Namespace) -> SyncClient:
    ep = locate.endpoint(args)
    return SyncClient(ep.api, token=ep.token, timeout=TIMEOUT_S)


def render_list(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no traces (is tracing on? see docs/observability.md, Tracing)\n"
    rows = [("TRACE ID", "ROOT", "SPANS", "DURATION", "ERRORS")]
    for t in items:
        rows.append((str(t.get("traceId", "")), f"{t.get('rootService', '')} {t.get('rootName', '')}".strip(),
                     str(t.get("spans", 0)), f"{float(t.get('durationMs', 0)):.1f}ms", str(t.get("errors", 0))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows)


def render_tree(spans: list[dict[str, Any]]) -> str:
    """One line per span, indented two spaces per level under its parent."""
    ids = {str(s.get("spanId")) for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for s in sorted(spans, key=lambda s: int(s.get("startTimeUnixNano", 0))):
        parent = str(s.get("parentSpanId") or "")
        if parent and parent in ids:
            children.setdefault(parent, []).append(s)
        else:
            roots.append(s)
    lines: list[str] = []

    def walk(s: dict[str, Any], depth: int) -> None:
        lines.append(f"{'  ' * depth}{s.get('service') or '?'}: {s.get('name') or '?'} [{s.get('kind', '')}] "
                     f"{float(s.get('durationMs', 0)):.1f}ms {s.get('status', 'UNSET')}")
        for c in children.get(str(s.get("spanId")), []):
            walk(c, depth + 1)

    for r in roots:
        walk(r, 0)
    return "".join(line + "\n" for line in lines)


def _trace(args: argparse.Namespace) -> int:
    try:
        with _client(args) as api:
            if args.trace_id:
                spans = api.trace(args.trace_id)
                out = json.dumps(spans, indent=2) + "\n" if args.output == "json" else (
                    f"trace {args.trace_id.lower()}\n" + render_tree(spans))
            else:
                items = api.traces(service=args.service, limit=args.limit)
                out = json.dumps(items, indent=2) + "\n" if args.output == "json" else render_list(items)
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(out)
    return 0


def register(sub: Any) -> None:
    t = sub.add_parser("trace", help="recent traces, or one trace as a tree of spans (the server's collector)")
    t.add_argument("trace_id", nargs="?", metavar="TRACE_ID", help="32 hexadecimal digits; none: list recent traces")
    t.add_argument("--service", default="", help="only traces with a span of this workload")
    t.add_argument("--limit", type=int, default=20, help="how many recent traces (default 20)")
    t.add_argument("-o", "--output", choices=["text", "json"], default="text")
    locate.add_server_flags(t)
    t.set_defaults(func=_trace)


__all__ = ["register", "render_list", "render_tree"]
