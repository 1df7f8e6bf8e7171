"""The console's HTTP side: its static page at ``/console/`` and its one JSON document, the topology.

Everything else the console shows it reads from the APIs that already exist (the Kubernetes-compatible API for
MemberClusters, lanes and policies; ``/management/v1/proxies``, ``/traces`` and both audit trails), so it shows
exactly what kubectl and the CLI see, and stays read-only. The static files hold no data, so they are served
without a token; the page sends the user's token with every API call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from meshplane.console.scraper import MetricsScraper, Target
from meshplane.console.topology import Workload

STATIC = Path(__file__).resolve().parent / "static"
TOPOLOGY_PATH = "/management/v1/console/topology"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
VENDOR_HINT = "run scripts/setup (it installs the graph library with npm)"


def _zone(locality: str) -> str:
    parts = locality.split("/")
    return parts[1] if len(parts) > 1 and parts[1] else ""


def topology_json(scraper: MetricsScraper, targets: list[Target]) -> dict[str, Any]:
    """Nodes (workloads, grouped by cluster and zone), edges (rate, errors, p99, mTLS) and how each proxy's
    scrape went."""
    nodes: dict[str, dict[str, Any]] = {}

    def node(w: Workload, *, zone: str = "", kind: str = "unknown") -> dict[str, Any]:
        n = nodes.get(w.id)
        if n is None:
            n = nodes[w.id] = {"id": w.id, "cluster": w.cluster, "namespace": w.namespace, "workload": w.name,
                               "zone": zone, "kind": kind, "proxies": 0}
        return n

    for t in targets:
        n = node(t.workload, zone=_zone(t.locality), kind=t.kind)
        n["proxies"] += 1
        if not n["zone"]:
            n["zone"] = _zone(t.locality)
    edges = scraper.edges()
    for e in edges:
        node(e.source)
        node(e.destination)
    now = time.time()
    return {
        "kind": "ConsoleTopology",
        "apiVersion": "meshplane.io/v1",
        "generatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "windowSeconds": scraper.settings.window_s,
        "intervalSeconds": scraper.settings.interval_s,
        "nodes": [nodes[k] for k in sorted(nodes)],
        "edges": [e.to_json() for e in edges],
        "scrape": [
            {"proxy": s.target.proxy, "workload": s.target.workload.id, "url": s.url, "error": s.error,
             "lastSuccess": None if s.last_ok is None
             else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s.last_ok))}
            for s in scraper.states()
        ],
    }


def console_routes(scraper: MetricsScraper | None, targets: Callable[[], list[Target]]) -> list[web.RouteDef]:
    """``scraper`` None: the topology answers 404 saying the scraper is off (the pages still work)."""

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/console/")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        path = (STATIC / name).resolve()
        if STATIC not in path.parents or not path.is_file():
            if name.startswith("vendor/"):
                raise web.HTTPNotFound(text=f"console asset {name} is missing: {VENDOR_HINT}")
            raise web.HTTPNotFound(text=f"no console asset {name}")
        return web.FileResponse(path, headers={"Content-Type": _TYPES.get(path.suffix, "application/octet-stream"),
                                               "Cache-Control": "no-cache"})

    async def topology(request: web.Request) -> web.Response:
        if scraper is None:
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                      "reason": "NotFound",
                                      "message": "the console's metrics scraper is off (--no-console-scrape)"},
                                     status=404)
        scraper.touch()
        return web.json_response(topology_json(scraper, targets()))

    return [
        web.get("/console", redirect),
        web.get("/console/", asset),
        web.get("/console/{name:.+}", asset),
        web.get(TOPOLOGY_PATH, topology),
    ]


__all__ = ["STATIC", "TOPOLOGY_PATH", "console_routes", "topology_json"]
