"""``meshplane analyze``: Istio's config analysis (``istioctl analyze``) of the live mesh, or of files before they
are applied.

    meshplane analyze                      # the live config of namespace default
    meshplane analyze -A                   # every namespace
    meshplane analyze -f vs.yaml -f dir/   # the files merged over the live config (nothing is stored)
    meshplane analyze --local -f vs.yaml   # the files alone

Output and exit codes are istioctl's: one line per message (``Error [IST0101] (VirtualService default/bookinfo)
Referenced gateway not found: "bookinfo-gatewy"``), ``✔ No validation issues found when analyzing namespace:
default.`` on stderr when there is none; exit code 79 when a message is at least as bad as
``--failure-threshold`` (Error) in text output, 65 when a file cannot be read as YAML, 1 when the server cannot be
reached and there are no files. Without a reachable server, files are analyzed alone (with a note on stderr): what
they name must then be in them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from meshplane.analysis import Level, analyze
from meshplane.analysis.merge import Submitted, merged_input
from meshplane.cli import locate
from meshplane.cli.serverproc import ServerConfigError
from meshplane.client import ClientError, SyncClient
from meshplane.model.config import ConfigSnapshot
from meshplane.model.service import RegistrySnapshot

TIMEOUT_S = 30.0
EXIT_ISSUES = 79  # istioctl's ExitAnalyzerFoundIssues
EXIT_DATA = 65  # istioctl's ExitDataError: a file could not be parsed
EXIT_FAILED = 1
_EXTENSIONS = (".yaml", ".yml", ".json")
DOC = "docs/diagnosis.md"


class _Unreadable(Exception):
    pass


def _client(args: argparse.Namespace) -> SyncClient:
    """The server as every command finds it (:mod:`meshplane.cli.locate`: --server URL, --data-dir, --home or
    $MESHPLANE_HOME, ./mesh-data, ~/.meshplane)."""
    ep = locate.endpoint(args)
    return SyncClient(ep.api, token=ep.token, timeout=TIMEOUT_S)


def _files(paths: list[str]) -> list[Path | None]:
    """Every file named, directories walked for .yaml/.yml/.json; None is stdin (``-``)."""
    out: list[Path | None] = []
    for p in paths:
        if p == "-":
            out.append(None)
            continue
        path = Path(p)
        if path.is_dir():
            out.extend(sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in _EXTENSIONS))
        elif path.is_file():
            out.append(path)
        else:
            raise _Unreadable(f"{p}: no such file or directory")
    return out


def read_objects(paths: list[str]) -> list[dict[str, Any]]:
    """``{"object", "origin"}`` for each object of each file (``kind: List`` items included)."""
    items: list[dict[str, Any]] = []
    for f in _files(paths):
        name = "-" if f is None else str(f)
        try:
            text = sys.stdin.read() if f is None else f.read_text()
            docs = list(yaml.safe_load_all(text))
        except (OSError, yaml.YAMLError) as e:
            raise _Unreadable(f"{name}: {e}") from e
        for doc in docs:
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise _Unreadable(f"{name}: expected a YAML object, got {type(doc).__name__}")
            for obj in doc.get("items") or [] if doc.get("kind") == "List" else [doc]:
                items.append({"object": obj, "origin": name})
    return items


def _local(objects: list[dict[str, Any]], namespace: str, default_ns: str) -> list[dict[str, Any]]:
    from meshplane.cli.analyze_api import message_json

    inp = merged_input(ConfigSnapshot(0), RegistrySnapshot(), [Submitted(o["object"], o["origin"])
                                                               for o in objects], default_namespace=default_ns)
    return [message_json(m) for m in analyze(inp, namespace=namespace or None)]


def render_line(item: dict[str, Any]) -> str:
    ref = f" {item['reference']}" if item.get("reference") else ""
    return f"{item.get('level')} [{item.get('code')}] ({item.get('origin')}{ref}) {item.get('message')}"


def _level(item: dict[str, Any]) -> Level:
    try:
        return Level.parse(str(item.get("level", "")))
    except ValueError:
        return Level.ERROR


def _analyze(args: argparse.Namespace) -> int:
    try:
        failure = Level.parse(args.failure_threshold)
        output = Level.parse(args.output_threshold)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 64
    files = [*args.file, *args.files]
    default_ns = args.namespace or "default"
    namespace = "" if args.all_namespaces else default_ns
    target = "all namespaces" if args.all_namespaces else f"namespace: {default_ns}"
    try:
        objects = read_objects(files) if files else None
    except _Unreadable as e:
        print(f"Error(s) adding files: {e}", file=sys.stderr)
        return EXIT_DATA
    items: list[dict[str, Any]]
    if args.local:
        if objects is None:
            print("error: --local analyzes files: give them with -f FILE", file=sys.stderr)
            return 64
        items = _local(objects, namespace, default_ns)
    else:
        try:
            with _client(args) as api:
                items = api.analyze(namespace=namespace, objects=objects, default_namespace=default_ns)
        except (ClientError, ServerConfigError) as e:
            if objects is None:
                print(f"error: {e}", file=sys.stderr)
                return EXIT_FAILED
            print(f"note: no meshplane server reachable ({e}); analyzing the files alone", file=sys.stderr)
            items = _local(objects, namespace, default_ns)
    shown = [i for i in items if _level(i).rank >= output.rank]
    if args.output in ("json", "yaml"):
        sys.stdout.write(json.dumps(shown, indent=2) + "\n" if args.output == "json" else
                         yaml.safe_dump(shown, sort_keys=False))
        return 0
    for item in shown:
        print(render_line(item))
    if not shown:
        what = target if not files else (", ".join(files) if len(files) > 1 else files[0])
        print(f"\u2714 No validation issues found when analyzing {what}.", file=sys.stderr)
    if any(_level(i).rank >= failure.rank for i in items):
        print(f"Error: Analyzers found issues when analyzing {target}.\nSee {DOC} (Analysis) for the codes, their "
              "causes and resolutions.", file=sys.stderr)
        return EXIT_ISSUES
    return 0


def register(sub: Any) -> None:
    a = sub.add_parser("analyze", help="Istio's config analysis of the live mesh, or of files before they are applied")
    a.add_argument("files", nargs="*", metavar="FILE", help="files or directories to analyze (as -f)")
    a.add_argument("-f", "--file", action="append", default=[], metavar="FILE",
                   help="a file or directory of YAML/JSON objects to analyze merged over the live config; - for "
                        "stdin (repeatable)")
    a.add_argument("-n", "--namespace", default="", help="the namespace whose messages are shown (default: default)")
    a.add_argument("-A", "--all-namespaces", action="store_true", help="messages of every namespace")
    a.add_argument("-o", "--output", choices=["text", "log", "json", "yaml"], default="text")
    a.add_argument("--failure-threshold", default="Error",
                   help="the level at which the exit code is 79 (Error, Warning, Info; default Error)")
    a.add_argument("--output-threshold", default="Info", help="the lowest level shown (default Info)")
    a.add_argument("--local", action="store_true", help="analyze the files alone, without the server")
    a.add_argument("--server", help="URL of the meshplane API")
    a.add_argument("--home", help="state directory of a local mesh (default $MESHPLANE_HOME or ~/.meshplane)")
    a.add_argument("--data-dir", default="", help="data dir of the running server (instead of --home)")
    a.add_argument("--token", help="bearer token (default: the server state's token, if any)")
    a.set_defaults(func=_analyze)


__all__ = ["EXIT_ISSUES", "read_objects", "register", "render_line"]
