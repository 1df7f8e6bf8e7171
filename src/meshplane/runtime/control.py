"""What the runtime's commands do, apart from argument parsing: start a supervisor in the background and wait
until the mesh is ready, stop everything a home records, report status, scale, find logs.

Why ``up`` returns instead of staying in the foreground: ``meshplane demo up`` is meant to be followed by curl and
kubectl in the same terminal. The supervisor is detached (its own session), writes its log to
``HOME/logs/supervisor.log``, and ``up`` polls ``runtime.json`` until the phase is ``running`` (every instance
ready and every proxy SYNCED) or ``failed``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from meshplane.agent.procs import record_for, stop_records, write_record
from meshplane.client import ClientError, SyncClient
from meshplane.runtime import netns
from meshplane.runtime.home import Home
from meshplane.runtime.manifest import Manifest, ManifestError, load_manifest


class RuntimeCommandError(Exception):
    """A runtime command cannot do what was asked; the message says why and what to do."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start(home: Home, manifest_path: Path, *, timeout_s: float = 300.0, delta: bool = False,
          prometheus: str = "auto", interception: str = "", replicas: int = 1) -> dict[str, Any]:
    """Start a supervisor for ``manifest_path`` in the background; return its view once the mesh is ready.
    ``prometheus``: ``auto`` (run Prometheus when it is installed), ``on`` (required) or ``off``;
    ``interception``: ``auto``, ``transparent`` or ``explicit`` over the manifest's ``mesh.interception``."""
    if home.running_supervisor() is not None:
        raise RuntimeCommandError(f"a mesh is already running in {home.root}; run `meshplane down --home "
                                  f"{home.root}` first")
    try:
        load_manifest(manifest_path)
    except ManifestError as e:
        raise RuntimeCommandError(str(e)) from e
    if home.records():  # left behind by a supervisor that was killed: clean up before starting again
        stop(home)
    home.create()
    if manifest_path.resolve() != home.manifest_file.resolve():
        shutil.copyfile(manifest_path, home.manifest_file)
    home.replicas_file.unlink(missing_ok=True)
    home.runtime_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "meshplane.cli.main", "up", "--foreground", "--home", str(home.root),
            "-f", str(home.manifest_file), "--prometheus", prometheus, "--replicas", str(replicas)] + (
                ["--delta"] if delta else [])
    if interception:
        argv += ["--interception", interception]
    log_path = home.logs / "supervisor.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    # Recorded here too, in case the supervisor dies before it records itself.
    write_record(home.procs / "supervisor.json", record_for(proc.pid, "supervisor", group=False))
    deadline = time.monotonic() + timeout_s
    while True:
        view = home.read_runtime()
        if view and view.get("pid") == proc.pid:
            if view.get("phase") == "running":
                return view
            if view.get("phase") == "failed":
                raise RuntimeCommandError(f"the mesh failed to start: {view.get('error')}\n"
                                          f"--- {log_path} ---\n{_tail(log_path)}")
            looping = crash_looping(view)
            if looping:
                raise RuntimeCommandError(looping + f"\nthe mesh keeps retrying in the background: fix the manifest, "
                                                    f"then `meshplane down --home {home.root}` and `up` again")
        code = proc.poll()
        if code is not None:
            stop(home)
            raise RuntimeCommandError(f"the supervisor exited with {code}\n--- {log_path} ---\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeCommandError(
                f"the mesh is not ready after {timeout_s:.0f}s (it keeps starting in the background; see "
                f"`meshplane status --home {home.root}` and {log_path})")
        time.sleep(0.2)


CRASH_LOOP_RESTARTS = 3


def crash_looping(view: dict[str, Any]) -> str:
    """While the mesh starts: why it cannot become ready because an instance keeps exiting (its application or
    agent exited CRASH_LOOP_RESTARTS times in a row, each time soon after it started), with the end of that
    process's log; "" otherwise. Without this, ``up`` would wait out its whole timeout for an instance whose
    command cannot run."""
    for inst in view.get("instances") or []:
        last = inst.get("lastExit") or {}
        if int(last.get("inARow") or 0) >= CRASH_LOOP_RESTARTS:
            log = Path(str(last.get("log", "")))
            return (f"instance {inst.get('name')} keeps exiting: its {last.get('process')} exited with "
                    f"{last.get('code')} ({last.get('inARow')} times in a row)\n--- {log} ---\n{_tail(log, 15)}")
    return ""


def stop(home: Home, *, grace_s: float = 30.0) -> list[int]:
    """Stop the supervisor (which stops its instances in order), then anything still recorded. Returns the PIDs
    that could not be stopped (empty on success)."""
    sup = home.running_supervisor()
    if sup is not None:
        os.kill(sup.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while sup.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if sup.alive():
            os.kill(sup.pid, signal.SIGKILL)
    # After a SIGKILLed supervisor, or if it could not finish: stop every recorded process ourselves.
    records = home.records()
    left = stop_records([r for _, r in records], grace=10.0)
    for path, rec in records:
        if rec not in left:
            path.unlink(missing_ok=True)
    # Then the network namespaces, veths and the bridge of a transparent mesh (their iptables go with them).
    net_left = netns.remove_recorded(netns.NetRecords(home.root / "net")) if not left else []
    if net_left:
        raise RuntimeCommandError(f"could not remove {', '.join(net_left)} (recorded in {home.root / 'net'})")
    if not left:
        home.runtime_file.unlink(missing_ok=True)
    return [r.pid for r in left]


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _proxies(api: str) -> list[dict[str, Any]]:
    try:
        with SyncClient(api, timeout=3) as client:
            return client.proxies()
    except ClientError:
        return []


def status(home: Home) -> dict[str, Any]:
    """The mesh as ``meshplane status -o json`` prints it."""
    view = home.read_runtime() or {}
    sup = home.running_supervisor()
    phase = str(view.get("phase") or "stopped")
    if sup is None and phase not in ("stopped",):
        phase = "dead" if view else "stopped"
    api = str(view.get("api") or "")
    apis = [str(a) for a in view.get("apis") or [api] if a]  # replicas: each proxy is on one of them
    proxies = {str(p.get("nodeId", "")).split("~")[1]: p for a in (apis if sup else []) for p in _proxies(a)
               if str(p.get("nodeId", "")).count("~") == 3}
    workloads = []
    for inst in view.get("instances") or []:
        st = home.read_instance_status(str(inst.get("name")))
        app_ok = inst.get("gateway") or _pid_alive(inst.get("pid"))
        proxy = proxies.get(str(inst.get("address")), {})
        workloads.append({
            **inst,
            "ready": bool(st.get("ready")) and bool(app_ok) and sup is not None,
            "envoyPid": st.get("envoyPid"),
            "envoyRestarts": st.get("envoyRestarts", 0),
            "registered": st.get("registered", False),
            "sync": proxy.get("state", "DISCONNECTED"),
        })
    return {
        "name": view.get("name", ""),
        "home": str(home.root),
        "phase": phase,
        "pid": view.get("pid") if sup else None,
        "error": view.get("error", ""),
        "api": api,
        "console": f"{api}/console/" if api else "",
        "xds": view.get("xds", ""),
        "replicas": view.get("replicas", 1),
        "apis": apis,
        "ingress": view.get("ingress", {}),
        "prometheus": view.get("prometheus", ""),
        "clusters": view.get("clusters", []),
        "workloads": workloads,
    }


def format_status(st: dict[str, Any]) -> str:
    lines = [f"mesh {st['name'] or '-'} in {st['home']}: {st['phase']}" + (f" ({st['error']})" if st["error"]
                                                                          else "")]
    if st["api"]:
        lines.append(f"  API      {st['api']}    (kubectl --server {st['api']} get workloadentries -A)")
        lines.append(f"  xDS      {st['xds']}")
        lines.append(f"  console  {st.get('console') or st['api'] + '/console/'}")
    for c, url in sorted(st["ingress"].items()):
        lines.append(f"  ingress  {c}: {url}")
    if st["clusters"]:
        lines.append("  clusters " + ", ".join(f"{c['name']} ({c['network']}, {c['region']}/{c['zone']})"
                                               for c in st["clusters"]))
    if st["workloads"]:
        head = ("NAME", "NAMESPACE", "CLUSTER", "ZONE", "ADDRESS", "PID", "READY", "PROXY", "RESTARTS")
        rows = [head] + [(w["name"], w["namespace"], w["cluster"], w["zone"], w["address"], str(w["pid"] or "-"),
                          "yes" if w["ready"] else "no", w["sync"], str(w["restarts"] + w["envoyRestarts"]))
                         for w in st["workloads"]]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines.append("")
        lines += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def current_manifest(home: Home) -> Manifest:
    if not home.manifest_file.exists():
        raise RuntimeCommandError(f"no mesh in {home.root} (run `meshplane up -f FILE --home {home.root}`)")
    try:
        return load_manifest(home.manifest_file)
    except ManifestError as e:
        raise RuntimeCommandError(str(e)) from e


def scale(home: Home, name: str, replicas: int, *, cluster: str | None = None,
          namespace: str | None = None) -> list[str]:
    """Set the replica count of a workload (in one cluster or all of its clusters); returns the placements."""
    if replicas < 0:
        raise RuntimeCommandError("--replicas must be 0 or more")
    manifest = current_manifest(home)
    matches = manifest.find(name, namespace)
    if not matches:
        raise RuntimeCommandError(f"no workload {name!r}" + (f" in namespace {namespace}" if namespace else "")
                                  + f" in {home.manifest_file}")
    if len(matches) > 1:
        raise RuntimeCommandError(f"workload {name!r} exists in several namespaces: pass -n NAMESPACE")
    w = matches[0]
    if cluster is not None and cluster not in w.clusters:
        raise RuntimeCommandError(f"workload {name} does not run in cluster {cluster!r} (it runs in "
                                  f"{', '.join(w.clusters)})")
    keys = [w.key(c) for c in ([cluster] if cluster else list(w.clusters))]
    current = home.read_replicas()
    current.update({k: replicas for k in keys})
    home.write_replicas(current)
    sup = home.running_supervisor()
    if sup is not None:
        os.kill(sup.pid, signal.SIGHUP)
    return keys


def wait_scaled(home: Home, keys: list[str], replicas: int, timeout_s: float = 120.0) -> bool:
    """Wait until each placement runs exactly ``replicas`` ready instances."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = status(home)
        ok = True
        for key in keys:
            ns, _, rest = key.partition("/")
            name, _, cl = rest.partition("@")
            insts = [w for w in st["workloads"] if w["namespace"] == ns and w["workload"] == name
                     and w["cluster"] == cl]
            if len(insts) != replicas or not all(w["ready"] for w in insts):
                ok = False
        if ok:
            return True
        time.sleep(0.3)
    return False


COMPONENTS = ("app", "agent", "envoy", "access")  # access: the sidecar's access log (Envoy's standard output)


def log_files(home: Home, name: str, *, cluster: str | None = None, component: str | None = None) -> list[Path]:
    """Log files of an instance (``reviews-v1-cluster-1-0``), of every instance of a workload (``reviews-v1``),
    or of ``server`` / ``supervisor``."""
    if name in ("server", "supervisor"):
        return [home.logs / f"{name}.log"]
    root = home.root / "instances"
    dirs = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    chosen = [d for d in dirs if d.name == name]
    if not chosen:
        chosen = [d for d in dirs if d.name.startswith(name + "-") and d.name[len(name) + 1:].rsplit("-", 1)[-1]
                  .isdigit() and (cluster is None or d.name[len(name) + 1:].rsplit("-", 1)[0] == cluster)]
    if not chosen:
        raise RuntimeCommandError(f"no instance or workload named {name!r} in {home.root}")
    comps = [component] if component else list(COMPONENTS)
    return [d / f"{c}.log" for d in chosen for c in comps if (d / f"{c}.log").exists()]
