"""``meshplane proxy-config``, ``proxy-status``, ``version`` and ``describe``: istioctl's diagnosis commands.

Where ``proxy-config`` reads from: the Envoy admin interface of the instance, at the address its agent records in
``HOME/instances/NAME/status.json`` (``admin``). The admin listens on the instance's own address only: a loopback
address (127.x.y.z:15000) or, in a transparent mesh, the instance's address in its network namespace (10.B.c.n,
on the bridge the mesh created, which has no other port and forwards nothing). The command runs on the machine of
the local runtime, so it reads the admin directly rather than through a proxy in the agent: one fewer server to
run per instance and the very bytes Envoy reports. ``--admin URL`` reads any other Envoy whose admin is on a
loopback address (refused otherwise: the admin can change a proxy's state and is never to be reached across a
network).

INSTANCE is a runtime instance name (``productpage-v1-cluster-1-0``), istioctl's ``POD.NAMESPACE``, or a full proxy
id (``sidecar~127.223.1.2~productpage-v1-cluster-1-0.default~default.svc.cluster.local``), as ``proxy-status``
prints them.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from meshplane import __version__
from meshplane.cli import locate
from meshplane.cli.serverproc import ServerConfigError
from meshplane.client import ClientError, SyncClient
from meshplane.diag import ConfigDump, ConfigDumpError, configdump, render_table

TIMEOUT_S = 10.0
KINDS = ("clusters", "listeners", "routes", "endpoints", "secret", "bootstrap", "all")


class DiagError(ServerConfigError):
    """A diagnosis command cannot show what was asked; the message says why (exit status 2, one line)."""


# --- finding an instance's admin -----------------------------------------------------------------------------

def _pod_part(name: str) -> str:
    """``sidecar~IP~POD.NS~DOMAIN`` -> ``POD.NS``; anything else unchanged."""
    parts = name.split("~")
    return parts[2] if len(parts) == 4 else name


def instance_dir(home: Path, name: str) -> Path:
    """The runtime instance directory ``name`` (an instance name, ``POD.NAMESPACE`` or a proxy id) stands for."""
    root = home / "instances"
    pod = _pod_part(name)
    candidates = [pod]
    if "." in pod:
        candidates.append(pod.split(".", 1)[0])
    for c in candidates:
        d = root / c
        if c and (d / "status.json").is_file():
            return d
    known = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    hint = f" (instances: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''})" if known else \
        " (no instances: is a mesh running there? `meshplane status --home ...`)"
    raise DiagError(f"no instance {name!r} in {home}{hint}")


def check_admin(url: str, *, networks: tuple[ipaddress.IPv4Network, ...] = (), what: str = "--admin") -> str:
    """``url`` as an admin base URL, refused unless it is on a loopback address or in one of ``networks`` (the
    bridges of the mesh whose instance recorded it)."""
    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    host = parsed.hostname or ""
    try:
        addr = ipaddress.ip_address(host)
        allowed = addr.is_loopback or any(addr in n for n in networks)
    except ValueError:
        allowed = host == "localhost"
    if not allowed:
        where = "loopback addresses" + (" and this mesh's own bridge" if networks else "")
        raise DiagError(f"{what} {url!r}: the Envoy admin is read on {where} only (127.0.0.0/8, ::1)")
    return f"{parsed.scheme or 'http'}://{parsed.netloc}"


def mesh_bridges(home: Path) -> tuple[ipaddress.IPv4Network, ...]:
    """The subnets of the bridges a transparent local mesh created for its instances' network namespaces
    (``HOME/net``, :mod:`meshplane.runtime.netns`): its instances' addresses, and so their admins, are there, on
    this machine only (the bridge has no other port and forwards nothing)."""
    from meshplane.runtime import netns

    out = []
    for entry in netns.NetRecords(home / "net").entries():
        name = entry.get("name", "")
        if entry.get("kind") == "bridge" and name.startswith("mpbr") and name[4:].isdigit():
            out.append(ipaddress.IPv4Network(netns.bridge_for(int(name[4:])).subnet))
    return tuple(out)


def admin_url(args: argparse.Namespace) -> tuple[str, str]:
    """(admin base URL, instance label) for the command's INSTANCE or ``--admin``."""
    if args.admin:
        return check_admin(str(args.admin)), str(args.instance or args.admin)
    if not args.instance:
        raise DiagError("give an INSTANCE (see `meshplane proxy-status`) or --admin URL")
    home = locate.home_of(args)
    d = instance_dir(home, str(args.instance))
    try:
        status = json.loads((d / "status.json").read_text())
    except (OSError, ValueError) as e:
        raise DiagError(f"instance {d.name}: cannot read {d / 'status.json'} ({e})") from None
    admin = str(status.get("admin") or "")
    if not admin:
        raise DiagError(f"instance {d.name} records no Envoy admin address yet (is its agent running?)")
    return check_admin(admin, networks=mesh_bridges(home), what=f"instance {d.name}'s admin"), d.name


def _get(url: str, what: str) -> Any:
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=TIMEOUT_S) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise DiagError(f"{what}: the Envoy admin answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DiagError(f"{what}: cannot reach the Envoy admin at {url.split('/', 3)[2]} ({reason}); is the "
                        "instance running? (`meshplane status`)") from None
    except ValueError:
        raise DiagError(f"{what}: the Envoy admin's answer is not JSON") from None


def read_dump(admin: str, label: str, kind: str) -> ConfigDump:
    raw = _get(admin + "/config_dump", f"proxy-config {kind} {label}")
    status: Any = {}
    if kind in ("endpoints", "all"):
        status = _get(admin + "/clusters?format=json", f"proxy-config {kind} {label}")
    try:
        return ConfigDump(raw, status if isinstance(status, dict) else {})
    except ConfigDumpError as e:
        raise DiagError(f"proxy-config {kind} {label}: {e}") from None


# --- proxy-config --------------------------------------------------------------------------------------------

def _tables(dump: ConfigDump, args: argparse.Namespace, kind: str) -> str:
    port = int(getattr(args, "port", 0) or 0)
    if kind == "clusters":
        return render_table(configdump.CLUSTER_HEADER, configdump.cluster_rows(
            dump, fqdn=args.fqdn or "", port=port, subset=args.subset or "", direction=args.direction or ""))
    if kind == "listeners":
        return render_table(configdump.LISTENER_HEADER, configdump.listener_rows(
            dump, port=port, address=args.address or ""))
    if kind == "routes":
        return render_table(configdump.ROUTE_HEADER, configdump.route_rows(dump, name=args.name or ""))
    if kind == "endpoints":
        return render_table(configdump.ENDPOINT_HEADER, configdump.endpoint_rows(
            dump, cluster=args.cluster or "", status=args.status or ""))
    if kind == "secret":
        return render_table(configdump.SECRET_HEADER, configdump.secret_rows(dump, datetime.datetime.now(
            datetime.UTC)))
    if kind == "bootstrap":
        b = dump.bootstrap()
        node = b.get("node") or {}
        ads = ((b.get("dynamic_resources") or {}).get("ads_config") or {}).get("grpc_services") or [{}]
        xds = (ads[0].get("envoy_grpc") or {}).get("cluster_name", "-")
        return render_table(("NODE", "CLUSTER", "XDS CLUSTER"), [[str(node.get("id", "")),
                                                                   str(node.get("cluster", "")), str(xds)]])
    out = []
    for k in ("clusters", "listeners", "routes", "endpoints", "secret"):
        out.append(f"--- {k} ---\n" + _tables(dump, args, k))
    return "\n".join(out)


def _proxy_config(args: argparse.Namespace) -> int:
    admin, label = admin_url(args)
    kind = str(args.kind)
    dump = read_dump(admin, label, kind)
    if args.output == "short":
        sys.stdout.write(_tables(dump, args, kind))
        return 0
    data = dump.of(kind)
    if kind == "all" and dump.clusters_status:
        data = {"config_dump": data, "clusters": dict(dump.clusters_status)}
    if args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    else:
        print(json.dumps(data, indent=2))
    return 0


# --- proxy-status --------------------------------------------------------------------------------------------

STATUS_TYPES = ("CDS", "LDS", "EDS", "RDS", "SDS")


def status_types(items: list[dict[str, Any]]) -> tuple[str, ...]:
    """The per-type columns: istioctl's, then any other type a proxy was served (ECDS for extension configs, NDS
    for a transparent instance's DNS name table), so nothing a proxy syncs is left out of its row."""
    extra = sorted({str(t) for p in items for t in (p.get("types") or {})} - set(STATUS_TYPES))
    return (*STATUS_TYPES, *extra)


def proxy_name(p: dict[str, Any]) -> str:
    """istioctl's NAME: ``POD.NAMESPACE`` from the node id (one per instance, so replicas differ), else the id."""
    pod = _pod_part(str(p.get("nodeId", "")))
    return pod if pod != p.get("nodeId") else str(p.get("nodeId") or "")


def proxy_status_rows(items: list[dict[str, Any]], columns: tuple[str, ...] = STATUS_TYPES) -> list[list[str]]:
    rows = []
    for p in sorted(items, key=proxy_name):
        types = p.get("types") or {}
        cells = [str((types.get(t) or {}).get("state", "-")).replace("NOT_SENT", "-") for t in columns]
        cp = p.get("controlPlane") or {}
        plane = f"{cp.get('id')}@{cp.get('xds')}" if cp.get("id") else "-"
        errors = "; ".join(f"{t}: {v['error']}" for t, v in types.items() if (v or {}).get("error"))
        rows.append([proxy_name(p), str(p.get("cluster") or "-"), *cells, plane, str(p.get("envoyVersion") or "-"),
                     errors])
    return rows


def connected_proxies(ep: locate.ServerEndpoint) -> list[dict[str, Any]]:
    """Every proxy connected to the control plane, asking each replica (a proxy is on one of them; each row's
    ``controlPlane`` says which). A replica that does not answer is skipped when another does."""
    items: list[dict[str, Any]] = []
    errors: list[str] = []
    for api in ep.replicas():
        try:
            with SyncClient(api, token=ep.token, timeout=TIMEOUT_S) as client:
                items += client.proxies()
        except ClientError as e:
            errors.append(str(e))
    if errors and len(errors) == len(ep.replicas()):
        raise ServerConfigError(errors[0])
    for err in errors:
        print(f"warning: {err}", file=sys.stderr)
    return items


def _proxy_status(args: argparse.Namespace) -> int:
    items = connected_proxies(locate.endpoint(args))
    if args.instance:
        items = [p for p in items if args.instance in (proxy_name(p), p.get("nodeId"))
                 or proxy_name(p).split(".", 1)[0] == args.instance]
        if not items:
            raise DiagError(f"no connected proxy {args.instance!r}")
    if args.output == "json":
        print(json.dumps(items, indent=2))
        return 0
    columns = status_types(items)
    header = ("NAME", "CLUSTER", *columns, "ISTIOD", "VERSION", "ERROR")
    table = render_table(header, proxy_status_rows(items, columns))
    sys.stdout.write(table)
    return 0


# --- version -------------------------------------------------------------------------------------------------

def version_info(args: argparse.Namespace) -> dict[str, Any]:
    """Client, control plane and proxies' versions; the control plane part is absent when none is found."""
    info: dict[str, Any] = {"clientVersion": {"version": __version__}}
    if args.remote:
        planes: list[dict[str, Any]] = []
        proxies: list[dict[str, Any]] = []
        try:
            ep = locate.endpoint(args)
            for i, api in enumerate(ep.replicas()):  # each replica has its own proxies
                try:
                    with SyncClient(api, token=ep.token, timeout=TIMEOUT_S) as client:
                        planes.append(client.control_plane_version())
                        proxies += client.proxies()
                except ClientError:
                    if i == 0:
                        raise
        except (ServerConfigError, ClientError) as e:
            info["controlPlaneError"] = str(e)
            return info
        info["meshVersion"] = [{"component": "meshplane-server", "revision": "default",
                                "info": {"id": cp.get("id", ""), "version": cp.get("version", ""),
                                         "xds": cp.get("xds", "")}} for cp in planes]
        counts: dict[str, int] = {}
        for p in proxies:
            v = str(p.get("envoyVersion") or "unknown")
            counts[v] = counts.get(v, 0) + 1
        info["dataPlaneVersion"] = [{"envoyVersion": v, "proxies": n} for v, n in sorted(counts.items())]
    return info


def _version(args: argparse.Namespace) -> int:
    info = version_info(args)
    if args.output == "json":
        print(json.dumps(info, indent=2))
        return 0
    if args.output == "yaml":
        sys.stdout.write(yaml.safe_dump(info, sort_keys=False))
        return 0
    if args.short:
        print(f"client version: {__version__}")
    else:
        print(f"client version: meshplane {__version__} (Python {sys.version.split()[0]})")
    for m in info.get("meshVersion") or []:
        i = m["info"]
        print(f"control plane version: {i['version']}" + ("" if args.short else f" ({i['id']}, xDS {i['xds']})"))
    for d in info.get("dataPlaneVersion") or []:
        print(f"data plane version: {d['envoyVersion']} ({d['proxies']} proxies)")
    if info.get("controlPlaneError") and not args.short:
        print(f"control plane: not reachable ({info['controlPlaneError']})", file=sys.stderr)
    return 0


# --- describe ------------------------------------------------------------------------------------------------

def _describe(args: argparse.Namespace) -> int:
    from meshplane.cli.describe_cmd import describe

    return describe(args)


def register(sub: Any) -> None:
    p = sub.add_parser("proxy-config", aliases=["pc"],
                       help="an instance's Envoy configuration: clusters, listeners, routes, endpoints, secret, "
                            "bootstrap or all (from its admin)")
    p.add_argument("kind", choices=(*KINDS, "cluster", "listener", "route", "endpoint", "secrets"),
                   help="which part of the configuration")
    p.add_argument("instance", nargs="?", metavar="INSTANCE",
                   help="instance name, POD.NAMESPACE or proxy id (see `meshplane proxy-status`)")
    p.add_argument("--admin", default=None, help="an Envoy admin URL on a loopback address instead of INSTANCE")
    p.add_argument("-o", "--output", choices=["short", "json", "yaml"], default="short")
    p.add_argument("--fqdn", help="clusters: only services whose host contains this")
    p.add_argument("--port", type=int, help="clusters, listeners: only this port")
    p.add_argument("--subset", help="clusters: only this subset")
    p.add_argument("--direction", choices=["inbound", "outbound"], help="clusters: only this direction")
    p.add_argument("--address", help="listeners: only this address")
    p.add_argument("--name", help="routes: only this route configuration")
    p.add_argument("--cluster", help="endpoints: only clusters whose name contains this")
    p.add_argument("--status", help="endpoints: only this health status (HEALTHY, UNHEALTHY, ...)")
    locate.add_home_flag(p)
    p.set_defaults(func=_normalized(_proxy_config))

    s = sub.add_parser("proxy-status", aliases=["ps"],
                       help="sync state of every connected proxy, per xDS type, with its control plane and version")
    s.add_argument("instance", nargs="?", metavar="INSTANCE", help="only this proxy")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")
    locate.add_server_flags(s)
    s.set_defaults(func=_proxy_status)

    v = sub.add_parser("version", help="versions of the client, the control plane and the proxies' Envoys")
    v.add_argument("--short", action="store_true", help="versions only")
    v.add_argument("--remote", action=argparse.BooleanOptionalAction, default=True,
                   help="also ask the control plane (default on; --no-remote: the client only)")
    v.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    locate.add_server_flags(v)
    v.set_defaults(func=_version)

    d = sub.add_parser("describe", help="which VirtualServices, DestinationRules, PeerAuthentications and "
                                        "AuthorizationPolicies apply to a pod or service, and what they do")
    d.add_argument("target", choices=["pod", "po", "service", "svc"])
    d.add_argument("name", metavar="NAME", help="pod: an instance (WorkloadEntry) name; service: a host's short "
                                                "name or the full host")
    d.add_argument("-n", "--namespace", default="default")
    locate.add_server_flags(d)
    d.set_defaults(func=_describe)


_ALIASES = {"cluster": "clusters", "listener": "listeners", "route": "routes", "endpoint": "endpoints",
            "secrets": "secret"}


def _normalized(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        args.kind = _ALIASES.get(args.kind, args.kind)
        code: int = func(args)
        return code

    return run


__all__ = ["admin_url", "check_admin", "instance_dir", "proxy_name", "proxy_status_rows", "register",
           "version_info"]
