"""The demo's Bookinfo-shaped application: one small aiohttp program that plays productpage, details, reviews and
ratings depending on ``--service`` and ``--version``.

Why our own and not Istio's Bookinfo: it must run from a Python install with no containers, and it must make
routing observable. Every answer is JSON describing who answered (service, version, cluster, zone, instance) and
the calls it made, recursively, so one request through the ingress shows the whole path the mesh chose. A failed
call appears with its ``status`` and ``error`` while the caller still answers 200, as Bookinfo degrades.

The callers keep Bookinfo's own timeouts, because Istio's fault-injection task is about them: productpage gives
details 3 s and reviews 3 s with one more attempt (so a 7 s delay on ratings shows up as "reviews unavailable"
after ~6 s), reviews v2 gives ratings 10 s and v3 2.5 s. ``--timeout`` sets one timeout for every call instead.

Calls go to plain service names (``http://reviews:9080/``) through the sidecar, used as an explicit HTTP proxy
(``http_proxy`` in the environment). The headers the mesh routes and traces on are copied from the incoming
request to every outgoing one (Bookinfo's list, plus W3C ``traceparent``/``baggage`` and ASM's lane header).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import signal
from typing import Any

import aiohttp
from aiohttp import web

FORWARDED = ("end-user", "x-request-id", "traceparent", "tracestate", "baggage", "x-asm-prefer-tag",
             "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "user-agent")

# Who calls whom: Bookinfo's call graph (reviews v1 never calls ratings).
CALLS: dict[tuple[str, str], tuple[str, ...]] = {
    ("productpage", "*"): ("details", "reviews"),
    ("reviews", "v2"): ("ratings",),
    ("reviews", "v3"): ("ratings",),
    # The lanes sample (``meshplane demo up --scenario lanes``): mocka -> mockb -> mockc.
    ("mocka", "*"): ("mockb",),
    ("mockb", "*"): ("mockc",),
}
MOCK_EXTRA = ("traceparent", "tracestate", "baggage", "end-user")


def mock_forwarded(headers: Any) -> dict[str, str]:
    """What a lanes-sample mock propagates: every ``x-`` header but x-forwarded-* and x-envoy-*, plus W3C trace
    context, baggage and end-user (the headers OpenTelemetry-instrumented applications carry along)."""
    out = {}
    for name, value in headers.items():
        low = name.lower()
        if (low.startswith("x-") and not low.startswith(("x-forwarded-", "x-envoy-"))) or low in MOCK_EXTRA:
            out[low] = value
    return out


def callees(service: str, version: str) -> tuple[str, ...]:
    return CALLS.get((service, version)) or CALLS.get((service, "*")) or ()


# Bookinfo's client side of each call: (timeout in seconds, attempts); a further attempt follows any answer that is
# not a 200. Calls not listed get DEFAULT_CALL.
CALL_POLICY: dict[tuple[str, str, str], tuple[float, int]] = {
    ("productpage", "*", "details"): (3.0, 1),
    ("productpage", "*", "reviews"): (3.0, 2),
    ("reviews", "v2", "ratings"): (10.0, 1),
    ("reviews", "v3", "ratings"): (2.5, 1),
}
DEFAULT_CALL = (10.0, 1)


def call_policy(service: str, version: str, target: str) -> tuple[float, int]:
    return CALL_POLICY.get((service, version, target)) or CALL_POLICY.get((service, "*", target)) or DEFAULT_CALL


class DemoApp:
    def __init__(self, service: str, version: str, *, cluster: str, zone: str, instance: str, port: int,
                 proxy: str | None, timeout_s: float | None = None, forward_x: bool = False) -> None:
        self.service = service
        self.version = version
        self.cluster = cluster
        self.zone = zone
        self.instance = instance
        self.port = port
        self.proxy = proxy
        self.timeout_s = timeout_s  # None: Bookinfo's per-call timeouts (CALL_POLICY)
        self.forward_x = forward_x
        self.session: aiohttp.ClientSession | None = None

    def identity(self) -> dict[str, Any]:
        return {"service": self.service, "version": self.version, "cluster": self.cluster, "zone": self.zone,
                "instance": self.instance}

    async def call(self, target: str, headers: dict[str, str]) -> dict[str, Any]:
        timeout_s, attempts = call_policy(self.service, self.version, target)
        if self.timeout_s is not None:
            timeout_s, attempts = self.timeout_s, 1
        answer: dict[str, Any] = {}
        for _ in range(attempts):
            answer = await self._call_once(target, headers, aiohttp.ClientTimeout(total=timeout_s))
            if answer["status"] == 200:
                break
        return answer

    async def _call_once(self, target: str, headers: dict[str, str], timeout: aiohttp.ClientTimeout) -> dict[str, Any]:
        assert self.session is not None
        url = f"http://{target}:{self.port}/{target}"
        try:
            async with self.session.get(url, headers=headers, proxy=self.proxy, timeout=timeout) as r:
                body = await r.read()
                if r.status != 200:
                    return {"service": target, "status": r.status, "error": body.decode(errors="replace")[:200],
                            "calls": []}
                try:
                    data = json.loads(body)
                except ValueError:
                    return {"service": target, "status": 502, "error": "answer is not JSON", "calls": []}
                if not isinstance(data, dict):
                    return {"service": target, "status": 502, "error": "answer is not an object", "calls": []}
                return {**data, "status": r.status}
        except TimeoutError:
            return {"service": target, "status": 504, "error": f"no answer within {timeout.total:g} s", "calls": []}
        except (aiohttp.ClientError, OSError) as e:
            return {"service": target, "status": 503, "error": f"{type(e).__name__}: {e}", "calls": []}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.forward_x:
            headers = mock_forwarded(request.headers)
        else:
            headers = {h: request.headers[h] for h in FORWARDED if h in request.headers}
        if "end-user" not in headers and request.cookies.get("user"):
            headers["end-user"] = request.cookies["user"]
        calls = await asyncio.gather(*(self.call(t, headers) for t in callees(self.service, self.version)))
        doc = {**self.identity(), "calls": list(calls)}
        if self.forward_x:
            doc["headers"] = headers  # what it received and propagated: makes lane headers observable
        if self.service == "productpage" and _wants_html(request):
            return web.Response(text=render_html(doc, headers.get("end-user", "")), content_type="text/html")
        return web.json_response(doc)

    async def healthz(self, request: web.Request) -> web.Response:
        # A switch for demos and tests of readiness: while the file named by DEMO_UNHEALTHY_FILE exists, fail.
        flag = os.environ.get("DEMO_UNHEALTHY_FILE")
        if flag and os.path.exists(flag):
            return web.json_response({"status": "unhealthy", **self.identity()}, status=503)
        return web.json_response({"status": "ok", **self.identity()})

    async def login(self, request: web.Request) -> web.Response:
        user = request.query.get("user") or (await request.post()).get("username") or ""
        resp = web.HTTPFound("/productpage")
        resp.set_cookie("user", str(user))
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        resp = web.HTTPFound("/productpage")
        resp.del_cookie("user")
        raise resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_route("*", "/login", self.login)
        app.router.add_get("/logout", self.logout)
        app.router.add_get("/{tail:.*}", self.handle)

        async def session_ctx(_: web.Application) -> Any:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
            yield
            await self.session.close()

        app.cleanup_ctx.append(session_ctx)
        return app


def _wants_html(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    h, j = accept.find("text/html"), accept.find("json")
    return h >= 0 and (j < 0 or h < j)


def _render_call(c: dict[str, Any]) -> str:
    ok = c.get("status", 200) == 200
    who = html.escape(f"{c.get('service')} {c.get('version', '')}")
    where = html.escape(f"{c.get('cluster', '')} {c.get('zone', '')} {c.get('instance', '')}")
    err = "" if ok else f" <b>unavailable</b> ({c.get('status')}: {html.escape(str(c.get('error', '')))})"
    inner = "".join(_render_call(x) for x in c.get("calls") or [])
    return f"<li>{who} <small>{where}</small>{err}<ul>{inner}</ul></li>"


def render_html(doc: dict[str, Any], user: str) -> str:
    greeting = f"signed in as {html.escape(user)} (<a href='/logout'>sign out</a>)" if user else (
        "<form action='/login' method='post'>user <input name='username'><button>sign in</button></form>")
    return ("<!doctype html><html><head><title>Bookinfo (meshplane demo)</title></head><body>"
            f"<h1>The Comedy of Errors</h1><p>{greeting}</p><p>This page was served by:</p>"
            f"<ul>{_render_call(doc)}</ul></body></html>")


async def serve(app: DemoApp, host: str, port: int) -> None:
    runner = web.AppRunner(app.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"{app.service} {app.version} listening on {host}:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="meshplane-demoapp", description=__doc__.splitlines()[0])
    p.add_argument("--service", required=True,
                   choices=["productpage", "details", "reviews", "ratings", "mocka", "mockb", "mockc"])
    p.add_argument("--version", default="v1")
    p.add_argument("--listen", default=os.environ.get("MESH_APP_LISTEN", "127.0.0.1:19080"),
                   help="HOST:PORT the application listens on (its sidecar forwards inbound calls here)")
    p.add_argument("--port", type=int, default=9080, help="port of the services it calls (default 9080)")
    p.add_argument("--timeout", type=float, default=None,
                   help="one timeout in seconds for every outgoing call, without retries (default: Bookinfo's)")
    p.add_argument("--forward-x", action="store_true",
                   help="propagate every x- header (and trace context, baggage) and report them: the lanes mocks")
    # Where it runs, for its answers: from the command line (what a pod's downward API would give), else the
    # runtime's MESH_* environment of explicit interception.
    p.add_argument("--cluster", default=os.environ.get("MESH_CLUSTER", ""))
    p.add_argument("--zone", default=os.environ.get("MESH_ZONE", ""))
    p.add_argument("--instance", default=os.environ.get("MESH_INSTANCE", ""))
    a = p.parse_args(argv)
    host, _, port = a.listen.rpartition(":")
    proxy = os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY") or None
    app = DemoApp(a.service, a.version, cluster=a.cluster, zone=a.zone, instance=a.instance,
                  port=a.port, proxy=proxy, timeout_s=a.timeout, forward_x=a.forward_x)
    asyncio.run(serve(app, host, int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
