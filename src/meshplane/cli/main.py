"""Entry point of the ``meshplane`` command. Each subcommand parses its flags and calls one function."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from meshplane.cli import bootstrap_cmd, cluster_cmds, runtime_cmds, security_cmds, serverproc

# Modules that add their own subcommands: each has ``register(subparsers)``; each subcommand sets ``func``.
_EXTENSIONS: list[Any] = [bootstrap_cmd, runtime_cmds, cluster_cmds, security_cmds]


def _server(args: argparse.Namespace) -> int:
    api_host, api_port = serverproc.parse_addr(args.api_addr, 8080)
    xds = None if args.xds_addr in ("", "none") else serverproc.parse_addr(args.xds_addr, 15010)
    tokens = serverproc.read_token_file(Path(args.token_file)) if args.token_file else None
    opts = serverproc.ServerOptions(
        data_dir=Path(args.data_dir),
        api_host=api_host,
        api_port=api_port,
        tokens=tokens,
        history_limit=args.history_limit,
        xds_host=xds[0] if xds else None,
        xds_port=xds[1] if xds else 0,
        debounce_quiet=args.debounce_quiet,
        debounce_max=args.debounce_max,
    )
    asyncio.run(serverproc.run_server(opts))
    return 0


def _kubeconfig(args: argparse.Namespace) -> int:
    state = serverproc.read_state(Path(args.data_dir))
    sys.stdout.write(serverproc.kubeconfig(state))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshplane", description="A multi-cluster service mesh control plane.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("server", help="run the control plane (Kubernetes-compatible API, xDS)")
    s.add_argument("--data-dir", default="./mesh-data", help="where the store and state live (default ./mesh-data)")
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
        "--xds-addr", default="127.0.0.1:15010", help="address of the xDS (ADS gRPC) server; 'none' to disable"
    )
    s.add_argument("--debounce-quiet", type=float, default=0.1, help="push after this many seconds without changes")
    s.add_argument("--debounce-max", type=float, default=1.0, help="push at the latest this long after a change")
    s.set_defaults(func=_server)

    k = sub.add_parser("kubeconfig", help="print a kubeconfig for the running server")
    k.add_argument("--data-dir", default="./mesh-data")
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
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
