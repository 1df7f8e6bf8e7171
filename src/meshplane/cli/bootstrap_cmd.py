"""``meshplane bootstrap`` and ``meshplane proxy-status``: the proxy-facing commands of the control plane.

``bootstrap`` prints a working Envoy bootstrap for the metadata given on the command line (the keys are documented
in docs/proxy-metadata.md); ``proxy-status`` prints, per connected proxy and xDS type, SYNCED / STALE / NACKED with
the rejection text, from the running server's management API.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from meshplane.agent.bootstrap import build_bootstrap
from meshplane.cli import serverproc
from meshplane.client import ClientError, SyncClient
from meshplane.model.proxy import Locality

TIMEOUT_S = 10.0


def _pairs(text: str, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise serverproc.ServerConfigError(f"{flag}: expected KEY=VALUE[,KEY=VALUE...], got {item!r}")
        out[key] = value
    return out


def _bootstrap(args: argparse.Namespace) -> int:
    ip = args.ip
    metadata: dict[str, Any] = {
        "NAMESPACE": args.namespace,
        "WORKLOAD_NAME": args.workload,
        "SERVICE_ACCOUNT": args.service_account,
        "LABELS": _pairs(args.labels, "--labels"),
        "CLUSTER_ID": args.cluster,
        "NETWORK": args.network,
        "INSTANCE_IPS": ip,
    }
    if args.inbound_ports:
        metadata["INBOUND_PORTS"] = args.inbound_ports
    for extra in args.meta:
        metadata.update(_pairs(extra, "--meta"))
    node_id = args.node_id or f"{args.type}~{ip}~{args.workload}.{args.namespace}~{args.namespace}.svc.cluster.local"
    doc = build_bootstrap(
        node_id,
        metadata,
        Locality(args.region, args.zone, args.subzone),
        args.xds_addr,
        args.admin_addr,
        delta=args.delta,
    )
    if args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    else:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return 0


def _api_url(args: argparse.Namespace) -> tuple[str, str]:
    """(API URL, bearer token) from ``--server`` or the server state in ``--data-dir``."""
    if args.server:
        return str(args.server), ""
    state = serverproc.read_state(Path(args.data_dir))
    return str(state["api"]), str(state.get("token") or "")


def _proxy_status(args: argparse.Namespace) -> int:
    url, token = _api_url(args)
    try:
        with SyncClient(url, token=token, timeout=TIMEOUT_S) as client:
            items = client.proxies()
    except ClientError as e:
        raise serverproc.ServerConfigError(str(e)) from e
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    types = ("CDS", "LDS", "EDS", "RDS")
    print(f"{'NAME':<48} {'CLUSTER':<12} " + " ".join(f"{t:<8}" for t in types) + " ERROR")
    for p in items:
        cells = [p["types"].get(t, {}).get("state", "-").replace("NOT_SENT", "-") for t in types]
        errors = "; ".join(f"{t}: {v['error']}" for t, v in p["types"].items() if v.get("error"))
        name = f"{p['workload']}.{p['namespace']}" if p["workload"] else p["nodeId"]
        print(f"{name:<48} {p['cluster'] or '-':<12} " + " ".join(f"{c:<8}" for c in cells) + f" {errors}")
    return 0


def register(sub: Any) -> None:
    b = sub.add_parser("bootstrap", help="print an Envoy bootstrap for a proxy with the given identity")
    b.add_argument("--type", choices=["sidecar", "router"], default="sidecar", help="sidecar or gateway (router)")
    b.add_argument("--node-id", default="", help="default: TYPE~IP~WORKLOAD.NAMESPACE~NAMESPACE.svc.cluster.local")
    b.add_argument("--namespace", default="default")
    b.add_argument("--workload", required=True, help="workload name (e.g. reviews-v1)")
    b.add_argument("--service-account", default="default")
    b.add_argument("--labels", default="", help="KEY=VALUE,... (e.g. app=reviews,version=v1)")
    b.add_argument("--cluster", default="", help="member cluster id")
    b.add_argument("--network", default="")
    b.add_argument("--region", default="")
    b.add_argument("--zone", default="")
    b.add_argument("--subzone", default="")
    b.add_argument("--ip", default="127.0.0.1", help="the instance's address (listeners bind here)")
    b.add_argument("--inbound-ports", default="", help="PORT[/PROTOCOL][=APP_PORT],... the workload serves")
    b.add_argument("--meta", action="append", default=[], help="extra node metadata KEY=VALUE,... (repeatable)")
    b.add_argument("--xds-addr", default="127.0.0.1:15010", help="the control plane's xDS address")
    b.add_argument("--admin-addr", default="127.0.0.1:15000", help="where Envoy's admin interface listens")
    b.add_argument("--delta", action="store_true", help="use incremental (Delta) xDS")
    b.add_argument("-o", "--output", choices=["json", "yaml"], default="json")
    b.set_defaults(func=_bootstrap)

    s = sub.add_parser("proxy-status", help="sync state of every connected proxy, per xDS type")
    s.add_argument("--data-dir", default="./mesh-data", help="data dir of a local server (to find it)")
    s.add_argument("--server", default="", help="API URL (instead of --data-dir)")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")
    s.set_defaults(func=_proxy_status)
