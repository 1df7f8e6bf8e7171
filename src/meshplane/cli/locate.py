"""Where the commands that talk to a running control plane find it: one resolution order for every command.

Why one module: ``proxy-status``, ``cluster``, ``trace``, ``audit``, ``kubeconfig``, ``bootstrap``, ``version``,
``proxy-config`` and ``describe`` used to each read ``--server`` / ``--data-dir`` their own way, so after
``meshplane demo up`` half of them needed flags and the other half did not. The order, first match wins:

1. ``--server URL`` (it must be a URL: ``127.0.0.1:8080`` without ``http://`` is refused with the fix);
2. ``--data-dir DIR``: the ``server.json`` a ``meshplane server`` writes there;
3. ``--home DIR``, else ``$MESHPLANE_HOME``: the local mesh's server (``HOME/server/server.json``);
4. ``./mesh-data`` (``meshplane server``'s default data dir) when a server recorded itself there;
5. ``~/.meshplane`` (the default home of ``meshplane up`` / ``demo up``).

A state file whose server process is gone is reported as such (a server killed with SIGKILL leaves it behind).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshplane.cli.serverproc import STATE_FILE, ServerConfigError

DEFAULT_DATA_DIR = Path("mesh-data")


@dataclass(frozen=True, slots=True)
class ServerEndpoint:
    """A running control plane: its API URL, bearer token ("" = none), xDS address ("" = unknown), where it was
    found (for messages) and, for a local mesh with replicas, every replica's API (``apis``; each proxy is
    connected to one of them, so ``proxy-status`` asks them all)."""

    api: str
    token: str = ""
    xds: str = ""
    source: str = ""
    apis: tuple[str, ...] = ()

    def replicas(self) -> list[str]:
        """Every replica's API URL, this one first (only this one when no others are known)."""
        return [self.api] + [a for a in self.apis if a != self.api]


def default_home() -> Path:
    return Path(os.environ.get("MESHPLANE_HOME") or Path.home() / ".meshplane").expanduser().absolute()


def home_of(args: argparse.Namespace) -> Path:
    """``--home``, else ``$MESHPLANE_HOME``, else ``~/.meshplane``."""
    home = getattr(args, "home", None)
    return Path(home).expanduser().absolute() if home else default_home()


def add_home_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", default=None,
                   help="state directory of a local mesh (default $MESHPLANE_HOME or ~/.meshplane)")


def add_server_flags(p: argparse.ArgumentParser, *, token: bool = True) -> None:
    """``--server``, ``--data-dir``, ``--home`` (and ``--token``): the flags :func:`endpoint` reads."""
    p.add_argument("--server", default=None, help="URL of the meshplane API, e.g. http://127.0.0.1:8080 "
                                                  "(default: found through --data-dir, --home or ./mesh-data)")
    p.add_argument("--data-dir", default=None, help="data dir of a `meshplane server` (reads its server.json)")
    add_home_flag(p)
    if token:
        p.add_argument("--token", default=None, help="bearer token (default: the server state's token, if any)")


def check_url(flag: str, text: str) -> str:
    """``text`` as an API base URL, or a ServerConfigError saying how to write it."""
    text = text.strip()
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        hint = f"http://{text}" if text and "://" not in text else "http://127.0.0.1:8080"
        raise ServerConfigError(f"{flag} {text!r} is not a URL of the API: write it with its scheme, e.g. {hint}")
    try:
        parsed.port  # noqa: B018 (validates the port)
    except ValueError:
        raise ServerConfigError(f"{flag} {text!r}: the port must be a number") from None
    return text.rstrip("/")


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # nothing to check against
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _from_state(path: Path, token: str) -> ServerEndpoint:
    try:
        state: Any = json.loads(path.read_text())
    except OSError as e:
        raise ServerConfigError(f"no running server found: cannot read {path} ({e.strerror})") from None
    except ValueError:
        raise ServerConfigError(f"{path} is corrupt (not JSON)") from None
    if not isinstance(state, dict) or not state.get("api"):
        raise ServerConfigError(f"{path} is corrupt (no API address)")
    if not _pid_alive(state.get("pid")):
        raise ServerConfigError(f"the server recorded in {path} (pid {state.get('pid')}) is not running")
    return ServerEndpoint(str(state["api"]).rstrip("/"), token or str(state.get("token") or ""),
                          str(state.get("xds") or ""), str(path))


def endpoint(args: argparse.Namespace) -> ServerEndpoint:
    """The control plane the command's flags (or, without flags, the environment) point at."""
    token = str(getattr(args, "token", None) or "")
    server = getattr(args, "server", None)
    if server:
        return ServerEndpoint(check_url("--server", str(server)), token, source="--server")
    data_dir = getattr(args, "data_dir", None)
    if data_dir:
        return _from_state(Path(data_dir) / STATE_FILE, token)
    home = getattr(args, "home", None) or os.environ.get("MESHPLANE_HOME")
    if home:
        return _from_home(Path(home).expanduser().absolute(), token)
    local = DEFAULT_DATA_DIR / STATE_FILE
    if local.is_file():
        return _from_state(local, token)
    try:
        return _from_home(default_home(), token)
    except ServerConfigError as e:
        raise ServerConfigError(f"{e}; nor in ./{DEFAULT_DATA_DIR} (pass --server URL, --data-dir DIR or --home DIR)"
                                ) from None


def _from_home(home: Path, token: str) -> ServerEndpoint:
    path = home / "server" / STATE_FILE
    if path.is_file():
        ep = _from_state(path, token)
        return dataclasses.replace(ep, apis=_runtime_apis(home))
    raise ServerConfigError(f"no running mesh in {home} (start one with `meshplane demo up --home {home}` or "
                            f"`meshplane up -f FILE --home {home}`)")


def _runtime_apis(home: Path) -> tuple[str, ...]:
    """The replicas' API URLs the local runtime recorded in HOME/runtime.json (``--replicas N``)."""
    try:
        view: Any = json.loads((home / "runtime.json").read_text())
    except (OSError, ValueError):
        return ()
    apis = view.get("apis") if isinstance(view, dict) else None
    return tuple(str(a).rstrip("/") for a in apis if a) if isinstance(apis, list) else ()


def data_dir_for_server(args: argparse.Namespace) -> Path:
    """The data dir ``meshplane server`` uses: ``--data-dir``, else HOME/server for ``--home`` or
    ``$MESHPLANE_HOME``, else ./mesh-data."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    home = getattr(args, "home", None) or os.environ.get("MESHPLANE_HOME")
    if home:
        return Path(home).expanduser().absolute() / "server"
    return DEFAULT_DATA_DIR


__all__ = ["ServerEndpoint", "add_home_flag", "add_server_flags", "check_url", "data_dir_for_server",
           "default_home", "endpoint", "home_of"]
