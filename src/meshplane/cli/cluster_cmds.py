"""Subcommands of the cluster area: ``meshplane cluster add|list|remove``.

Why through the HTTP API (not the store): a running server owns the store, and the API is where validation,
audit and credential redaction happen. A cluster is one MemberCluster object (meshplane.io/v1, cluster-scoped);
the server's member-cluster controller connects to it and writes its status, which ``list`` shows. The
kubeconfig is read from the file and sent once; it is never printed (the API never returns it either).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshplane.cli import locate
from meshplane.client import ClientError, SyncClient

API_VERSION, KIND = "meshplane.io/v1", "MemberCluster"
TIMEOUT_S = 30.0
EXIT_FAILED = 1


class _ApiError(Exception):
    """The command's arguments cannot make a request; the message says which."""


def _client(args: argparse.Namespace) -> SyncClient:
    ep = locate.endpoint(args)
    return SyncClient(ep.api, token=ep.token, timeout=TIMEOUT_S)


def _parse_selector(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise _ApiError(f"--discovery-selector {text!r}: expected key=value[,key=value]")
        labels[key.strip()] = value.strip()
    return labels


def member_cluster(args: argparse.Namespace) -> dict[str, Any]:
    """The MemberCluster object ``cluster add`` creates."""
    spec: dict[str, Any] = {}
    if args.local:
        if not (args.region and args.zone):
            raise _ApiError("--local needs --region and --zone")
        spec["local"] = True
    else:
        if not args.kubeconfig:
            raise _ApiError("give --kubeconfig FILE (a Kubernetes cluster) or --local --region R --zone Z")
        try:
            spec["kubeconfig"] = Path(args.kubeconfig).read_text()
        except OSError as e:
            raise _ApiError(f"--kubeconfig {args.kubeconfig}: {e.strerror}") from None
    for key in ("network", "region", "zone"):
        value = getattr(args, key)
        if value:
            spec[key] = value
    if args.discovery_selector:
        spec["discoverySelectors"] = [{"matchLabels": _parse_selector(s)} for s in args.discovery_selector]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": args.name}, "spec": spec}


def _condition(obj: dict[str, Any], ctype: str) -> str:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return str(c.get("status") or "Unknown")
    return "Unknown"


def _age(created: str) -> str:
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return "?"
    secs = max(0, int(time.time() - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def rows(items: list[dict[str, Any]]) -> list[list[str]]:
    out = [["NAME", "NETWORK", "REGION", "ZONE", "CONNECTED", "SYNCED", "ERROR", "AGE"]]
    for obj in sorted(items, key=lambda o: str(o.get("metadata", {}).get("name"))):
        spec, md = obj.get("spec") or {}, obj.get("metadata") or {}
        error = str((obj.get("status") or {}).get("lastError") or "")
        out.append([
            str(md.get("name") or ""), str(spec.get("network") or "-"), str(spec.get("region") or "-"),
            str(spec.get("zone") or "-"), _condition(obj, "Connected"), _condition(obj, "Synced"),
            (error[:60] + "...") if len(error) > 63 else (error or "-"), _age(str(md.get("creationTimestamp") or "")),
        ])
    return out


def _print_table(table: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _add(args: argparse.Namespace) -> int:
    obj = member_cluster(args)
    with _client(args) as api:
        created = api.create(obj)
    spec = created.get("spec") or {}
    kind = "local" if spec.get("local") else "kubernetes"
    print(f"membercluster/{args.name} added ({kind}, network {spec.get('network') or '-'})")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _client(args) as api:
        items = api.list(API_VERSION, KIND)
    if args.output == "json":
        json.dump({"items": items}, sys.stdout, indent=2)
        print()
    else:
        _print_table(rows(items))
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _client(args) as api:
        api.delete(API_VERSION, KIND, args.name)
    print(f"membercluster/{args.name} removed")
    return 0


def _guard(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            code: int = func(args)
        except (_ApiError, ClientError) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        return code

    return run


def _common(p: argparse.ArgumentParser) -> None:
    locate.add_server_flags(p)


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``meshplane`` parser's subparsers."""
    c = sub.add_parser("cluster", help="member clusters of the mesh: add, list, remove")
    csub = c.add_subparsers(dest="cluster_command", required=True)

    a = csub.add_parser("add", help="add a member cluster (a Kubernetes cluster or a local one)")
    a.add_argument("name")
    a.add_argument("--kubeconfig", help="kubeconfig reaching the cluster's API server (stored, never shown)")
    a.add_argument("--local", action="store_true", help="a cluster run by meshplane's local runtime")
    a.add_argument("--network", default="", help="the network the cluster's workloads are on")
    a.add_argument("--region", default="", help="default region of the cluster's workloads")
    a.add_argument("--zone", default="", help="default zone of the cluster's workloads")
    a.add_argument("--discovery-selector", action="append", default=[], metavar="K=V[,K=V]",
                   help="only namespaces with these labels are part of the mesh (repeatable: any matches)")
    _common(a)
    a.set_defaults(func=_guard(_add))

    ls = csub.add_parser("list", help="member clusters and their connection status")
    ls.add_argument("-o", "--output", choices=["table", "json"], default="table")
    _common(ls)
    ls.set_defaults(func=_guard(_list))

    r = csub.add_parser("remove", help="remove a member cluster; its endpoints leave every proxy")
    r.add_argument("name")
    _common(r)
    r.set_defaults(func=_guard(_remove))
