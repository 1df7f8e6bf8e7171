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
- ``full_no_exchange``: the four metrics without the identity exchange filters.

    python bench/metrics_filter_cost.py --rate 2000 --duration 5 --rounds 2

Loopback only (127.0.99.1), bounded in count and time; every Envoy started is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.route.v3 import route_pb2

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
LOADGEN_SOURCE = Path(__file__).resolve().parent / "loadgen" / "loadgen.cc"


def _bootstrap(port: int, logs: list[object], exchange: list[object]) -> bootstrap_pb2.Bootstrap:
    rc = route_pb2.RouteConfiguration(name="direct")
    vh = rc.virtual_hosts.add(name="all", domains=["*"])
    route = vh.routes.add()
    route.match.prefix = "/"
    route.direct_response.status = 200
    route.direct_response.body.inline_string = "ok"
    hcm = http_connection_manager("inbound", route_config=rc, access_logs=logs,  # type: ignore[arg-type]
                                  peer_filters=exchange)  # type: ignore[arg-type]
    b = bootstrap_pb2.Bootstrap()
    b.admin.address.socket_address.address = HOST
    b.admin.address.socket_address.port_value = port + 1
    lst = b.static_resources.listeners.add(name="inbound")
    lst.address.socket_address.address = HOST
    lst.address.socket_address.port_value = port
    lst.filter_chains.add().filters.append(hcm)
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
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=2000.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2, help="variants alternate within each round")
    args = p.parse_args()
    loadgen, why = build_cached(LOADGEN_SOURCE, "loadgen")
    if loadgen is None:
        raise SystemExit(f"metrics_filter_cost: {why}")
    envoy = find_envoy()
    env = {**os.environ, **peer_environment({"WORKLOAD_NAME": "reviews-v1", "NAMESPACE": "default",
                                             "LABELS": {"app": "reviews", "version": "v1"}, "CLUSTER_ID": "c1"})}
    per_request: dict[str, list[float]] = {}
    with TemporaryDirectory(prefix="meshplane-metrics-cost-") as tmp:
        for rnd in range(args.rounds):
            for i, (name, (logs, exchange)) in enumerate(_variants().items()):
                port = 18100 + 2 * i
                cfg = Path(tmp) / f"{name}.pb"
                cfg.write_bytes(_bootstrap(port, logs, exchange).SerializeToString())
                proc = subprocess.Popen([envoy, "-c", str(cfg), "--concurrency", "1", "--base-id",
                                         str(700 + 10 * rnd + i), "-l", "error"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    time.sleep(1.5)
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
    print(f"Envoy CPU per request at {args.rate:.0f} rps, {args.rounds} rounds (mean):")
    print("| variant | µs per request | vs none |")
    print("|---|---|---|")
    for name, values in per_request.items():
        mean = sum(values) / len(values)
        print(f"| {name} | {mean:.1f} | {mean / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
