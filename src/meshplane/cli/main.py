"""Entry point of the ``meshplane`` command. Each subcommand parses its flags and calls one function."""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any

from meshplane.cli import (
    analyze_cmd,
    bootstrap_cmd,
    cluster_cmds,
    diag_cmds,
    locate,
    runtime_cmds,
    security_cmds,
    serverproc,
    trace_cmd,
)
from meshplane.model.spec import parse_duration

# Modules that add their own subcommands: each has ``register(subparsers)``; each subcommand sets ``func``.
_EXTENSIONS: list[Any] = [bootstrap_cmd, runtime_cmds, cluster_cmds, security_cmds, trace_cmd, analyze_cmd, diag_cmds]


def _seconds(flag: str, text: str) -> float:
    """A positive duration flag (``20m``, ``1.5s``: the product's one duration parser) in seconds."""
    ns = parse_duration(text)
    if ns is None or ns <= 0:
        raise serverproc.ServerConfigError(f"{flag}: {text!r} is not a positive duration (e.g. 20m, 30s)")
    return ns / 1e9


def _networks(flag: str, texts: list[str] | None) -> tuple[str, ...]:
    """CIDR flags, each as its network (``10.32.0.1/16`` -> ``10.32.0.0/16``)."""
    out = []
    for text in texts or ():
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError as e:
            raise serverproc.ServerConfigError(f"{flag}: {text!r} is not a network (e.g. 10.32.0.0/16)") from e
    return tuple(out)


def _server(args: argparse.Namespace) -> int:
    api_host, api_port = serverproc.parse_addr(args.api_addr, 8080)
    xds = None if args.xds_addr in ("", "none") else serverproc.parse_addr(args.xds_addr, 15010)
    tokens = serverproc.read_token_file(Path(args.token_file)) if args.token_file else None
    if args.ca_addr in ("", "none"):
        ca: tuple[str | None, int] = (None, 0)
    elif args.ca_addr is None:  # next to xDS: its host, port 15012 (0 when xDS takes any free port)
        ca = ((xds[0], 15012 if xds[1] else 0) if xds else ("127.0.0.1", 15012))
    else:
        ca = serverproc.parse_addr(args.ca_addr, 15012)
    if args.otlp_addr in ("", "none"):
        otlp: tuple[str | None, int] = (None, 0)
    elif args.otlp_addr is None:  # next to xDS: its host, port 15011 (0 when xDS takes any free port)
        otlp = ((xds[0], 15011 if xds[1] else 0) if xds else (None, 0))
    else:
        otlp = serverproc.parse_addr(args.otlp_addr, 15011)
    if bool(args.ca_root_cert) != bool(args.ca_root_key):
        raise serverproc.ServerConfigError("--ca-root-cert and --ca-root-key go together")
    opts = serverproc.ServerOptions(
        data_dir=locate.data_dir_for_server(args),
        api_host=api_host,
        api_port=api_port,
        tokens=tokens,
        history_limit=args.history_limit,
        audit_limit=args.audit_limit,
        xds_host=xds[0] if xds else None,
        xds_port=xds[1] if xds else 0,
        debounce_quiet=args.debounce_quiet,
        debounce_max=args.debounce_max,
        ca_host=ca[0],
        ca_port=ca[1],
        trust_domain=args.trust_domain,
        ca_root_cert=Path(args.ca_root_cert) if args.ca_root_cert else None,
        ca_root_key=Path(args.ca_root_key) if args.ca_root_key else None,
        cert_ttl_s=args.cert_ttl,
        inbound_mtls=args.inbound_mtls,
        locality_lb=args.locality_lb,
        jwks_ca_bundle=Path(args.jwks_ca_bundle) if args.jwks_ca_bundle else None,
        jwks_refresh_s=_seconds("--jwks-refresh-interval", args.jwks_refresh_interval),
        mesh_config=Path(args.mesh_config) if args.mesh_config else None,
        otlp_host=otlp[0],
        otlp_port=otlp[1],
        console_scrape=not args.no_console_scrape,
        console_scrape_networks=_networks("--console-scrape-network", args.console_scrape_network),
        write_status=not args.no_status,
        store_url=args.store,
        etcd_cacert=Path(args.etcd_cacert) if args.etcd_cacert else None,
        etcd_cert=Path(args.etcd_cert) if args.etcd_cert else None,
        etcd_key=Path(args.etcd_key) if args.etcd_key else None,
        replica_id=args.replica_id,
        ca_dir=Path(args.ca_dir) if args.ca_dir else None,
    )
    asyncio.run(serverproc.run_server(opts))
    return 0


def _kubeconfig(args: argparse.Namespace) -> int:
    ep = locate.endpoint(args)
    sys.stdout.write(serverproc.kubeconfig({"api": ep.api, "token": ep.token}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshplane", description="A multi-cluster service mesh control plane.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("server", help="run the control plane (Kubernetes-compatible API, xDS)")
    s.add_argument("--data-dir", default=None,
                   help="where the store and state live (default HOME/server with --home or $MESHPLANE_HOME, "
                        "else ./mesh-data)")
    locate.add_home_flag(s)
    s.add_argument("--api-addr", default="127.0.0.1:8080", help="address of the Kubernetes-compatible API")
    s.add_argument(
        "--token-file",
        help="bearer tokens, one 'token,user' per line; required when serving on a non-loopback address",
    )
    s.add_argument(
        "--history-limit",
        type=int,
        default=100_000,
        help="watch events kept so clients can resume; older resume points get 410 Expired (default 100000)",
    )
    s.add_argument(
        "--audit-limit",
        type=int,
        default=100_000,
        help="audit records kept, the newest (the oldest are deleted as new ones come); 0 keeps every record "
        "(default 100000)",
    )
    s.add_argument(
        "--xds-addr", default="127.0.0.1:15010", help="address of the xDS (ADS gRPC) server; 'none' to disable"
    )
    s.add_argument("--store", default=None, metavar="URL",
                   help="where API objects live: 'sqlite' (default, in --data-dir) or "
                        "etcd://HOST:PORT[,HOST:PORT...][/PREFIX], shared by replicas (docs/ha.md)")
    s.add_argument("--etcd-cacert", metavar="FILE", help="CA certificate of the etcd members (TLS)")
    s.add_argument("--etcd-cert", metavar="FILE", help="client certificate for etcd (with --etcd-key)")
    s.add_argument("--etcd-key", metavar="FILE", help="client key for etcd (with --etcd-cert)")
    s.add_argument("--replica-id", default="", help="this replica's name in leader election, proxy-status and version "
                   "(default host-pid)")
    s.add_argument("--ca-dir", default=None, metavar="DIR",
                   help="the CA's key material (default DATA_DIR/ca); replicas on one machine share one")
    s.add_argument("--debounce-quiet", type=float, default=0.1, help="push after this many seconds without changes")
    s.add_argument("--debounce-max", type=float, default=1.0, help="push at the latest this long after a change")
    s.add_argument("--ca-addr", default=None,
                   help="address of the certificate signing service (gRPC); default: the xDS host, port 15012 "
                        "(0 when xDS uses port 0); 'none' to run without a CA")
    s.add_argument("--trust-domain", default="cluster.local", help="SPIFFE trust domain (default cluster.local)")
    s.add_argument("--ca-root-cert", help="a plugged-in root certificate (PEM), shared by several control planes")
    s.add_argument("--ca-root-key", help="the plugged-in root's private key (PEM); read, never copied")
    s.add_argument("--cert-ttl", type=int, default=24 * 3600,
                   help="longest workload certificate lifetime in seconds (default 86400)")
    s.add_argument("--inbound-mtls", action="store_true",
                   help="inbound ports without a PeerAuthentication accept mTLS and plaintext (PERMISSIVE); "
                        "for meshes whose proxies get certificates from the agent over SDS")
    s.add_argument("--locality-lb", action=argparse.BooleanOptionalAction, default=True,
                   help="mesh-wide locality load balancing: same zone first, failover to the next zone, region, "
                        "with retries and a passive health check that need no outlierDetection (default on)")
    s.add_argument("--jwks-ca-bundle", metavar="FILE",
                   help="PEM CA certificates that https jwksUri servers are verified against (default: the "
                        "system's)")
    s.add_argument("--jwks-refresh-interval", default="20m", metavar="DURATION",
                   help="how often the keys of each RequestAuthentication jwksUri are fetched again (default 20m)")
    s.add_argument("--mesh-config", metavar="FILE",
                   help="Istio MeshConfig (YAML: extensionProviders, rootNamespace, ...), published as ConfigMap "
                        "istio-system/istio and reloaded when the file or the ConfigMap changes")
    s.add_argument("--otlp-addr", default=None,
                   help="address of the OTLP/gRPC trace collector (the built-in tracing provider 'meshplane'); "
                        "default: the xDS host, port 15011 (0 when xDS uses port 0); 'none' to run without it")
    s.add_argument("--no-console-scrape", action="store_true",
                   help="the console's topology does not read the proxies' metrics (its other pages still work)")
    s.add_argument("--console-scrape-network", action="append", metavar="CIDR",
                   help="the console's topology also reads the proxies with an address in this network (besides "
                        "loopback): the local runtime's network namespaces; repeatable")
    s.add_argument("--no-status", action="store_true",
                   help="write no status (Reconciled condition, analysis messages) into Istio and ASM objects")
    s.set_defaults(func=_server)

    k = sub.add_parser("kubeconfig", help="print a kubeconfig for the running server")
    locate.add_server_flags(k)
    k.set_defaults(func=_kubeconfig)

    for module in _EXTENSIONS:
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except serverproc.ServerConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        print(f"error: {e.strerror or e}: an address this command listens on is taken by another process",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
