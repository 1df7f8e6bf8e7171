"""Create / list / watch throughput of the Kubernetes-compatible API, against a bare HTTP baseline.

Starts a real ``meshplane server`` (SQLite store, WAL, synchronous=FULL) in its own process and, as the baseline
measured in the same run, a bare aiohttp server in its own process that accepts the same POSTs and answers 201
without validating or storing anything. A client process creates N VirtualServices with C concurrent connections
against each, while a watch opened before the first create counts the events it receives; then lists everything.

    python bench/api_throughput.py            # N=10,000, C=32
    python bench/api_throughput.py -n 1000    # quick
    python bench/api_throughput.py -n 2000 --against ../wt-base --rounds 3   # this checkout vs another's server
    python bench/api_throughput.py -n 2000 --etcd --rounds 3   # the etcd store against SQLite, same run

Prints the figures and the ratio meshplane/baseline; with ``--against TREE``, the server of another checkout (e.g.
a worktree at an older commit, its own ``src`` on PYTHONPATH) is measured in the same run, alternated with this
one ``--rounds`` times, and the medians and their ratios (this/that) are printed. Loopback only; everything it
starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

PATH = "/apis/networking.istio.io/v1/namespaces/default/virtualservices"

BASELINE_SERVER = r"""
import sys
from aiohttp import web
async def create(request):
    body = await request.json()
    return web.json_response(body, status=201)
async def ok(request):
    return web.Response(text="ok")
app = web.Application(client_max_size=4 * 1024 * 1024)
app.add_routes([web.post("/apis/{tail:.*}", create), web.get("/readyz", ok)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


def vs(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": f"svc-{i}", "labels": {"app": f"svc-{i % 50}"}},
        "spec": {
            "hosts": [f"svc-{i}"],
            "http": [
                {
                    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                    "route": [{"destination": {"host": f"svc-{i}", "subset": "v2"}}],
                },
                {
                    "route": [
                        {"destination": {"host": f"svc-{i}", "subset": "v1"}, "weight": 80},
                        {"destination": {"host": f"svc-{i}", "subset": "v2"}, "weight": 20},
                    ],
                    "timeout": "2s",
                    "retries": {"attempts": 3, "perTryTimeout": "0.5s"},
                },
            ],
        },
    }


async def create_all(url: str, n: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                async with session.post(url + PATH, json=vs(i)) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"create {i}: HTTP {resp.status}: {await resp.text()}")
                    await resp.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


async def watch_count(url: str, n: int, ready: asyncio.Event, done: asyncio.Future[float]) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url + PATH, params={"watch": "true"}) as resp,
    ):
        ready.set()
        count = 0
        async for _line in resp.content:
            count += 1
            if count == n:
                done.set_result(time.perf_counter())
                return


async def run_meshplane(url: str, n: int, c: int) -> dict[str, float]:
    ready = asyncio.Event()
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    watcher = asyncio.create_task(watch_count(url, n, ready, done))
    await ready.wait()
    start = time.perf_counter()
    create_s = await create_all(url, n, c)
    watch_end = await asyncio.wait_for(done, 120)
    await watcher
    async with aiohttp.ClientSession() as session:
        t = time.perf_counter()
        async with session.get(url + PATH) as resp:
            items = (await resp.json())["items"]
        list_s = time.perf_counter() - t
        t = time.perf_counter()
        pages = 0
        token = ""
        while True:
            params = {"limit": "500", **({"continue": token} if token else {})}
            async with session.get(url + PATH, params=params) as resp:
                page = await resp.json()
            pages += 1
            token = page["metadata"].get("continue", "")
            if not token:
                break
        paged_s = time.perf_counter() - t
    assert len(items) == n, f"listed {len(items)} of {n}"
    return {
        "create_s": create_s,
        "watch_all_events_s": watch_end - start,
        "list_s": list_s,
        "list_paged_s": paged_s,
        "pages": pages,
    }


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


XDS_ADDR = "127.0.0.1:0"


HERE = Path(__file__).resolve().parents[1]


def measure_baseline(n: int, c: int) -> float:
    """Seconds the bare aiohttp server takes to answer the same N creates (the HTTP floor)."""
    port = free_port()
    base = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER, str(port)])
    try:
        wait_ready(f"http://127.0.0.1:{port}", base)
        return asyncio.run(create_all(f"http://127.0.0.1:{port}", n, c))
    finally:
        base.terminate()
        base.wait(10)


def measure_server(n: int, c: int, tree: Path = HERE, store: tuple[str, ...] = ()) -> dict[str, float]:
    """One ``meshplane server`` of checkout ``tree`` (its ``src`` first on PYTHONPATH), fresh data dir;
    ``store``: extra arguments (``--store etcd://...``)."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        pythonpath = os.pathsep.join([str(tree / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath}
        srv = subprocess.Popen(
            [sys.executable, "-m", "meshplane.cli.main", "server", "--data-dir", tmp,
             "--api-addr", f"127.0.0.1:{port}", "--xds-addr", XDS_ADDR, *store],
            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, srv)
            cpu0 = _cpu(srv.pid)
            res = asyncio.run(run_meshplane(url, n, c))
            res["server_cpu_s"] = _cpu(srv.pid) - cpu0
            res["server_peak_rss_mb"] = rss_mb(srv.pid)
            res["creates_per_s"] = n / res["create_s"]
            return res
        finally:
            srv.terminate()
            srv.wait(10)


def against_tree(args: argparse.Namespace) -> None:
    """This checkout's server against another's, alternated ``--rounds`` times in one run (same client, same
    machine load): medians of each metric and their ratio (this / that)."""
    tree = Path(args.against).resolve()
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    for _ in range(max(1, args.rounds)):
        theirs.append(measure_server(args.n, args.c, tree))
        ours.append(measure_server(args.n, args.c))
    med = {k: statistics.median(r[k] for r in ours) for k in ours[0]}
    other = {k: statistics.median(r[k] for r in theirs) for k in theirs[0]}
    ratio = {k: round(med[k] / other[k], 3) if other[k] else None for k in med}
    print(json.dumps({"n": args.n, "concurrency": args.c, "rounds": args.rounds, "against": str(tree),
                      "load_average": [round(x, 2) for x in os.getloadavg()],
                      "this": {k: round(v, 3) for k, v in med.items()},
                      "that": {k: round(v, 3) for k, v in other.items()}, "this_over_that": ratio}, indent=2))


def etcd_against_sqlite(args: argparse.Namespace) -> None:
    """The server on a loopback etcd (a fresh key prefix each round) against the server on SQLite, alternated
    ``--rounds`` times in one run: medians and their ratio (etcd / sqlite). ``watch_all_events_s`` is the time
    from the first create until a watch opened before it has received every event."""
    sys.path.insert(0, str(HERE / "src"))
    from meshplane.runtime.etcd import start_etcd

    with tempfile.TemporaryDirectory() as tmp:
        etcd = start_etcd(Path(tmp) / "etcd")
        try:
            on_etcd: list[dict[str, float]] = []
            on_sqlite: list[dict[str, float]] = []
            for i in range(max(1, args.rounds)):
                on_sqlite.append(measure_server(args.n, args.c))
                on_etcd.append(measure_server(args.n, args.c, store=("--store", f"{etcd.url}/bench{i}/")))
        finally:
            etcd.stop()
    med = {k: statistics.median(r[k] for r in on_etcd) for k in on_etcd[0]}
    base = {k: statistics.median(r[k] for r in on_sqlite) for k in on_sqlite[0]}
    print(json.dumps({"n": args.n, "concurrency": args.c, "rounds": args.rounds,
                      "load_average": [round(x, 2) for x in os.getloadavg()],
                      "etcd": {k: round(v, 3) for k, v in med.items()},
                      "sqlite": {k: round(v, 3) for k, v in base.items()},
                      "etcd_over_sqlite": {k: round(med[k] / base[k], 3) if base[k] else None for k in med}},
                     indent=2))


def main() -> None:
    global XDS_ADDR
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="objects to create (default 10000)")
    ap.add_argument("-c", type=int, default=32, help="concurrent connections (default 32)")
    ap.add_argument("--no-xds", action="store_true", help="run the server without its xDS pipeline")
    ap.add_argument("--against", metavar="TREE",
                    help="also measure the server of another checkout (e.g. a worktree at an older commit) in this "
                    "run, alternating with this one --rounds times, and print this/that ratios")
    ap.add_argument("--rounds", type=int, default=1, help="with --against/--etcd: measurements of each, alternated")
    ap.add_argument("--etcd", action="store_true", help="the server on a loopback etcd against SQLite, same run")
    args = ap.parse_args()
    if args.etcd:
        etcd_against_sqlite(args)
        return
    if args.no_xds:
        XDS_ADDR = "none"
    if args.against:
        against_tree(args)
        return

    baseline_s = measure_baseline(args.n, args.c)
    res = measure_server(args.n, args.c)
    res["baseline_create_s"] = baseline_s
    res["create_ratio_vs_baseline"] = res["create_s"] / baseline_s
    print(json.dumps({"n": args.n, "concurrency": args.c, **{k: round(v, 3) for k, v in res.items()}}, indent=2))


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


if __name__ == "__main__":
    main()
