"""Subcommands of the local runtime: ``up``, ``down``, ``status``, ``logs``, ``scale``, ``demo``, ``agent``.

Parsing only: each subcommand turns its flags into a call of :mod:`meshplane.runtime.control` (or the supervisor
or the agent) and prints the result. ``--home DIR`` on every command selects the mesh (default ~/.meshplane, or
``$MESHPLANE_HOME``), so several meshes coexist.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from meshplane.runtime.home import Home, default_home

EXIT_FAILED = 1


def _home(args: argparse.Namespace) -> Home:
    return Home(Path(args.home) if args.home else default_home())


def _add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", default=None, help="state directory of the mesh (default $MESHPLANE_HOME or "
                                                "~/.meshplane)")


def _print_ready(view: dict[str, Any], home: Home) -> None:
    print(f"mesh {view.get('name')} is ready ({home.root})")
    if view.get("interceptionReason"):
        print(f"  interception {view.get('interceptionReason')}")
    for warning in view.get("warnings") or []:
        print(f"  warning: {warning}")
    print(f"  API     {view.get('api')}")
    print(f"  xDS     {view.get('xds')}")
    if view.get("api"):
        print(f"  console {view.get('api')}/console/")
    for cluster, url in sorted((view.get("ingress") or {}).items()):
        print(f"  ingress {cluster}: {url}")  # the base URL: each scenario says which path to ask for
    if view.get("prometheus"):
        print(f"  Prometheus {view.get('prometheus')}")
    print(f"next: meshplane status --home {home.root}    meshplane down --home {home.root}")


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_FAILED


def _up(args: argparse.Namespace) -> int:
    from meshplane.runtime import control
    from meshplane.runtime.manifest import ManifestError, load_manifest

    home = _home(args)
    if args.foreground:
        from meshplane.runtime.supervisor import run_supervisor

        try:
            manifest = load_manifest(Path(args.file))
        except ManifestError as e:
            return _error(str(e))
        return run_supervisor(home, manifest, delta=args.delta, prometheus=args.prometheus,
                              interception=args.interception or "", replicas=args.replicas)
    try:
        view = control.start(home, Path(args.file), timeout_s=args.timeout, delta=args.delta,
                             prometheus=args.prometheus, interception=args.interception or "",
                             replicas=args.replicas)
    except control.RuntimeCommandError as e:
        return _error(str(e))
    _print_ready(view, home)
    return 0


def _down(args: argparse.Namespace) -> int:
    from meshplane.runtime import control, netns

    home = _home(args)
    if (not home.records() and home.read_runtime() is None
            and not netns.NetRecords(home.root / "net").entries()):
        print(f"nothing to stop: no mesh is recorded in {home.root}")
        return 0
    try:
        left = control.stop(home)
    except control.RuntimeCommandError as e:
        return _error(str(e))
    if left:
        return _error(f"could not stop processes {left}")
    print(f"stopped everything recorded in {home.root}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from meshplane.runtime import control

    st = control.status(_home(args))
    if args.output == "json":
        print(json.dumps(st, indent=2))
    else:
        sys.stdout.write(control.format_status(st))
    return 0


def _scale(args: argparse.Namespace) -> int:
    from meshplane.runtime import control

    home = _home(args)
    try:
        keys = control.scale(home, args.name, args.replicas, cluster=args.cluster, namespace=args.namespace)
    except control.RuntimeCommandError as e:
        return _error(str(e))
    print(f"scaled {', '.join(keys)} to {args.replicas}")
    if args.wait and home.running_supervisor() is not None and not control.wait_scaled(home, keys, args.replicas,
                                                                                       args.timeout):
        return _error(f"not all placements reached {args.replicas} ready instances; see meshplane status")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from meshplane.runtime import control

    home = _home(args)
    if home.read_runtime() is None and not (home.root / "instances").is_dir() and not home.logs.is_dir():
        return _error(f"no mesh in {home.root}: nothing is running there (start one with `meshplane demo up` or "
                      f"`meshplane up -f FILE`; another mesh: --home DIR)")
    try:
        files = control.log_files(home, args.name, cluster=args.cluster, component=args.component)
    except control.RuntimeCommandError as e:
        return _error(str(e))
    if not args.follow:
        files = [f for f in files if f.exists()]
    if not files:
        state = "is not running" if home.running_supervisor() is None else "runs"
        return _error(f"no {args.component + ' ' if args.component else ''}log of {args.name!r} in {home.root} "
                      f"(the mesh there {state})")
    multi = len(files) > 1
    offsets: dict[Path, int] = {}
    for f in files:
        lines = f.read_text(errors="replace").splitlines() if f.exists() else []
        for line in lines[-args.tail:] if args.tail else lines:
            print(f"[{f.parent.name}/{f.stem}] {line}" if multi else line)
        offsets[f] = f.stat().st_size if f.exists() else 0
    sys.stdout.flush()
    while args.follow:
        time.sleep(0.3)
        for f in files:
            size = f.stat().st_size if f.exists() else 0
            if size > offsets[f]:
                with open(f, "rb") as fh:
                    fh.seek(offsets[f])
                    chunk = fh.read().decode(errors="replace")
                offsets[f] = size
                for line in chunk.splitlines():
                    print(f"[{f.parent.name}/{f.stem}] {line}" if multi else line, flush=True)
    return 0


def _all_ok(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("status", 200) != 200:
        return False
    return all(_all_ok(c) for c in doc.get("calls") or [])


def wait_for_ingress(urls: dict[str, str], timeout_s: float) -> list[str]:
    """Wait until every ingress answers ``/productpage`` with every call in the chain successful; returns the
    clusters whose ingress did not (empty when all did)."""
    pending = dict(urls)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for cluster, url in list(pending.items()):
            req = urllib.request.Request(url + "/productpage", headers={"Accept": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200 and _all_ok(json.loads(r.read())):
                        del pending[cluster]
            except (urllib.error.URLError, OSError, ValueError):
                pass
        if pending:
            time.sleep(0.3)
    return sorted(pending)


def _demo_up(args: argparse.Namespace) -> int:
    from meshplane.runtime import control
    from meshplane.runtime.demo import demo_manifest_yaml

    home = _home(args)
    home.create()
    path = home.root / "demo.yaml"
    lanes = getattr(args, "scenario", "bookinfo") == "lanes"
    if lanes:
        from meshplane.runtime.lanes_demo import lanes_manifest_yaml

        path.write_text(lanes_manifest_yaml())
    else:
        path.write_text(demo_manifest_yaml(networks=getattr(args, "networks", 1)))
    try:
        view = control.start(home, path, timeout_s=args.timeout, delta=args.delta, prometheus=args.prometheus,
                             interception=args.interception or "", replicas=args.replicas)
    except control.RuntimeCommandError as e:
        return _error(str(e))
    if lanes:  # no lane exists until the user applies one: ready means every instance ready and synced
        _print_ready(view, home)
        print(f"next: kubectl --server {view.get('api')} apply -f <lane group and lanes> (see docs/lanes.md)")
        for url in list((view.get("ingress") or {}).values())[:1]:
            print(f"then: curl -H 'x-asm-prefer-tag: v2' {url}/mock    (the mocks answer any path)")
        return 0
    failing = wait_for_ingress(dict(view.get("ingress") or {}), args.timeout)
    if failing:
        return _error(f"the mesh runs but the Bookinfo page does not answer through the ingress of "
                      f"{', '.join(failing)}; see `meshplane status --home {home.root}`")
    _print_ready(view, home)
    api = view.get("api")
    print(f"try:  curl -H 'Accept: application/json' {next(iter(view['ingress'].values()))}/productpage")
    print(f"      kubectl --server {api} get serviceentries,workloadentries,virtualservices -A")
    return 0


def _agent(args: argparse.Namespace) -> int:
    from meshplane.agent.config import AgentConfig, AgentConfigError
    from meshplane.agent.main import run

    if args.config:
        path = Path(args.config)
    elif args.instance:
        path = _home(args).instance_dir(args.instance) / "agent.json"
    else:
        return _error("give --config FILE, or --instance NAME (its HOME/instances/NAME/agent.json)")
    try:
        cfg = AgentConfig.load(path)
    except AgentConfigError as e:
        return _error(str(e))
    return run(cfg)


def _add_prometheus(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prometheus", choices=["auto", "on", "off"], default="auto",
                   help="run a Prometheus scraping the control plane and every proxy: auto (when installed, the "
                        "default), on (required), off")


def _add_interception(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interception", choices=["auto", "transparent", "explicit"],
                   default=None,
                   help="transparent: each instance in its own network namespace with iptables capture and the "
                        "DNS proxy (needs root); explicit: applications use their sidecar as http_proxy; auto: "
                        "transparent when possible (default: the manifest's mesh.interception, else "
                        "$MESHPLANE_INTERCEPTION, else auto)")


def _add_replicas(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="control-plane replicas; more than 1 runs them on an etcd on loopback (docs/ha.md)")


def register(sub: Any) -> None:
    """Add this module's subcommands to the ``meshplane`` parser's subparsers."""
    p = sub.add_parser("up", help="start a local mesh from a manifest; returns when it is ready")
    p.add_argument("-f", "--file", required=True, help="the manifest (clusters, workloads, services, config)")
    p.add_argument("--foreground", action="store_true", help="run the supervisor in this process (no return)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness (default 300)")
    p.add_argument("--delta", action="store_true", help="proxies use Delta xDS instead of State of the World")
    _add_prometheus(p)
    _add_interception(p)
    _add_replicas(p)
    _add_home(p)
    p.set_defaults(func=_up)

    p = sub.add_parser("down", help="stop every process of the local mesh (also after the supervisor was killed)")
    _add_home(p)
    p.set_defaults(func=_down)

    p = sub.add_parser("status", help="clusters, workloads, proxies and their sync state")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    _add_home(p)
    p.set_defaults(func=_status)

    p = sub.add_parser("scale", help="change how many instances of a workload run")
    p.add_argument("name", help="workload name, e.g. reviews-v1")
    p.add_argument("--replicas", type=int, required=True)
    p.add_argument("--cluster", help="only in this cluster (default: every cluster the workload runs in)")
    p.add_argument("-n", "--namespace", help="namespace of the workload (when the name is ambiguous)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="return without waiting for readiness")
    p.add_argument("--timeout", type=float, default=120.0)
    _add_home(p)
    p.set_defaults(func=_scale)

    p = sub.add_parser("logs", help="logs of an instance, a workload's instances, 'server' or 'supervisor'")
    p.add_argument("name")
    p.add_argument("--cluster")
    p.add_argument("-c", "--component", choices=["app", "agent", "envoy", "access"])
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=0, help="only the last N lines of each file")
    _add_home(p)
    p.set_defaults(func=_logs)

    demo = sub.add_parser("demo", help="the Bookinfo-shaped demo mesh on two clusters")
    dsub = demo.add_subparsers(dest="demo_command", required=True)
    p = dsub.add_parser("up", help="start the demo; returns when /productpage answers through both ingresses")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--delta", action="store_true")
    _add_prometheus(p)
    _add_interception(p)
    p.add_argument("--scenario", choices=["bookinfo", "lanes"], default="bookinfo",
                   help="bookinfo (default) or lanes: the mocka -> mockb -> mockc traffic-lanes sample")
    p.add_argument("--networks", type=int, choices=[1, 2], default=1,
                   help="bookinfo: 2 puts cluster-2 on network-2, reached through east-west gateways")
    _add_replicas(p)
    _add_home(p)
    p.set_defaults(func=_demo_up)
    p = dsub.add_parser("down", help="stop the demo (same as meshplane down)")
    _add_home(p)
    p.set_defaults(func=_down)

    p = sub.add_parser("agent", help="run the sidecar agent of one workload instance (Envoy, registration, health)")
    p.add_argument("--config", help="agent configuration JSON (see docs/runtime.md)")
    p.add_argument("--instance", help="instead of --config: the local mesh instance whose agent.json to run "
                                      "(in --home)")
    _add_home(p)
    p.set_defaults(func=_agent)
