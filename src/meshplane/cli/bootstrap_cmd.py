"""``meshplane bootstrap``: a working Envoy bootstrap for the metadata given on the command line (the keys are
documented in docs/proxy-metadata.md). Without ``--xds-addr`` it points at the xDS address of the control plane
that ``--server`` / ``--data-dir`` / ``--home`` (or, without them, ./mesh-data or ~/.meshplane) finds, else
127.0.0.1:15010. ``proxy-status`` lives in :mod:`meshplane.cli.diag_cmds`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import yaml

from meshplane.agent.bootstrap import build_bootstrap
from meshplane.cli import locate, serverproc
from meshplane.client import ClientError, SyncClient
from meshplane.model.proxy import Locality

DEFAULT_XDS = "127.0.0.1:15010"


def _pairs(text: str, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise serverproc.ServerConfigError(f"{flag}: expected KEY=VALUE[,KEY=VALUE...], got {item!r}")
        out[key] = value
    return out


def _xds_addr(args: argparse.Namespace) -> str:
    """``--xds-addr``, else the located server's (a flag naming a server that is not found is an error), else the
    default."""
    if args.xds_addr:
        return str(args.xds_addr)
    explicit = bool(args.server or args.data_dir or args.home or os.environ.get("MESHPLANE_HOME"))
    try:
        ep = locate.endpoint(args)
    except serverproc.ServerConfigError:
        if explicit:
            raise
        return DEFAULT_XDS
    if not ep.xds:  # --server: ask it
        try:
            with SyncClient(ep.api, token=ep.token, timeout=10.0) as client:
                xds = str(client.control_plane_version().get("xds") or "")
        except ClientError as e:
            raise serverproc.ServerConfigError(str(e)) from None
        if xds:
            return xds
        if explicit:
            raise serverproc.ServerConfigError(f"the server found through {ep.source} records no xDS address: "
                                               "pass --xds-addr HOST:PORT")
        return DEFAULT_XDS
    return ep.xds


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
        _xds_addr(args),
        args.admin_addr,
        delta=args.delta,
    )
    if args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))
    else:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
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
    b.add_argument("--xds-addr", default=None,
                   help="the control plane's xDS address (default: the located server's, else 127.0.0.1:15010)")
    locate.add_server_flags(b, token=False)
    b.add_argument("--admin-addr", default="127.0.0.1:15000", help="where Envoy's admin interface listens")
    b.add_argument("--delta", action="store_true", help="use incremental (Delta) xDS")
    b.add_argument("-o", "--output", choices=["json", "yaml"], default="json")
    b.set_defaults(func=_bootstrap)
