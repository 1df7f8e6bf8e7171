"""Shared helpers for translation tests: a Bookinfo mesh as ServiceEntries + WorkloadEntries, proxies built
through ``proxy_from_node``, decoding of generated resources, and ``envoy --mode validate`` of a static bootstrap
holding everything a proxy was given (EDS clusters inlined as STATIC, RDS inlined into the listeners)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshplane.api.kinds import default_registry
from meshplane.model import xdstypes
from meshplane.model.config import ConfigSnapshot
from meshplane.model.proxy import Locality, Proxy, proxy_from_node
from meshplane.registry import registry_from_config
from meshplane.translate import MeshSettings, PushContext, build_push_context, generate

DATA = Path(__file__).parent / "data"
SHARED_BOOKINFO = Path(__file__).parents[2] / "data" / "bookinfo"
NS = "default"
SUFFIX = f".{NS}.svc.cluster.local"


def fqdn(short: str, ns: str = NS) -> str:
    return f"{short}.{ns}.svc.cluster.local"


def istio_object(kind: str, name: str, ns: str, spec: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """A networking.istio.io/v1 object; the ``optional`` spec fields that are None or "" are left out."""
    present = {k: v for k, v in optional.items() if v is not None and v != ""}
    return {"apiVersion": "networking.istio.io/v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
            "spec": {**spec, **present}}


def service_entry(name: str, *, ns: str = NS, hosts: list[str] | None = None, ports: list[dict[str, Any]] | None = None,
                  resolution: str = "STATIC", location: str = "MESH_INTERNAL", selector: dict[str, str] | None = None,
                  endpoints: list[dict[str, Any]] | None = None, addresses: list[str] | None = None,
                  export_to: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "hosts": hosts or [fqdn(name, ns)],
        "ports": ports or [{"number": 9080, "name": "http", "protocol": "HTTP"}],
        "resolution": resolution,
        "location": location,
    }
    return istio_object("ServiceEntry", name, ns, spec, endpoints=endpoints, addresses=addresses or None,
                        exportTo=export_to or None,
                        workloadSelector={"labels": selector} if selector is not None else None)


def workload_entry(name: str, address: str, labels: dict[str, str], *, ns: str = NS, sa: str = "",
                   locality: str = "", ports: dict[str, int] | None = None) -> dict[str, Any]:
    return istio_object("WorkloadEntry", name, ns, {"address": address, "labels": labels}, serviceAccount=sa,
                        locality=locality, ports=ports or None)


BOOKINFO_IPS = {
    ("productpage", "v1"): "127.0.1.1",
    ("details", "v1"): "127.0.1.2",
    ("reviews", "v1"): "127.0.1.3",
    ("reviews", "v2"): "127.0.1.4",
    ("reviews", "v3"): "127.0.1.5",
    ("ratings", "v1"): "127.0.1.6",
}


def bookinfo_registry() -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for app in ("productpage", "details", "reviews", "ratings"):
        objs.append(service_entry(app, selector={"app": app}))
    for (app, version), ip in BOOKINFO_IPS.items():
        objs.append(workload_entry(f"{app}-{version}", ip, {"app": app, "version": version},
                                   sa=f"bookinfo-{app}", locality="region1/zone1/sub1"))
    return objs


def load_yaml(path: Path, namespace: str = NS) -> list[dict[str, Any]]:
    out = []
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict):
            doc.setdefault("metadata", {}).setdefault("namespace", namespace)
            out.append(doc)
    return out


def bookinfo_file(name: str) -> list[dict[str, Any]]:
    return load_yaml(SHARED_BOOKINFO / name)


def bookinfo_task_files() -> list[str]:
    return sorted(p.name for p in SHARED_BOOKINFO.glob("*.yaml"))


def snapshot(objs: Iterable[Mapping[str, Any]], version: int = 1) -> ConfigSnapshot:
    kinds = default_registry()
    by_gr: dict[Any, list[dict[str, Any]]] = {}
    for i, o in enumerate(objs):
        group = str(o["apiVersion"]).rpartition("/")[0]
        info = kinds.by_kind(group, str(o["kind"]))
        assert info is not None, o["kind"]
        obj = dict(o)
        obj["metadata"] = dict(o.get("metadata") or {})
        obj["metadata"].setdefault("namespace", NS)
        obj["metadata"].setdefault("creationTimestamp", f"2026-01-01T00:00:{i:02d}Z")
        by_gr.setdefault(info.gr, []).append(obj)
    return ConfigSnapshot.from_json(version, by_gr)


def context(objs: Iterable[Mapping[str, Any]], mesh: MeshSettings | None = None) -> PushContext:
    snap = snapshot(objs)
    return build_push_context(snap, registry_from_config(snap, "cluster-1"), mesh or MeshSettings())


def sidecar(app: str = "productpage", version: str = "v1", *, ns: str = NS, ip: str | None = None,
            inbound: str = "9080", **extra: Any) -> Proxy:
    ip = ip or BOOKINFO_IPS.get((app, version), "127.0.9.9")
    md: dict[str, Any] = {"NAMESPACE": ns, "LABELS": {"app": app, "version": version}, "INSTANCE_IPS": ip,
                          "SERVICE_ACCOUNT": f"bookinfo-{app}", "CLUSTER_ID": "cluster-1",
                          "INBOUND_PORTS": inbound, "APP_ADDRESS": "127.0.0.1"}
    md.update(extra)
    return proxy_from_node(f"sidecar~{ip}~{app}-{version}-0.{ns}~{ns}.svc.cluster.local", md,
                           Locality("region1", "zone1", "sub1"))


def gateway(labels: dict[str, str] | None = None, ns: str = "istio-system", **extra: Any) -> Proxy:
    md: dict[str, Any] = {"NAMESPACE": ns, "LABELS": labels or {"istio": "ingressgateway"},
                          "INSTANCE_IPS": "127.0.2.1", "GATEWAY_PORTS": "80=8080,443=8443",
                          "LISTEN_ADDRESS": "127.0.2.1"}
    md.update(extra)
    return proxy_from_node(f"router~127.0.2.1~ingress-0.{ns}~{ns}.svc.cluster.local", md, Locality("region1"))


def decode(type_url: str, proxy: Proxy, ctx: PushContext, names: Iterable[str] | None = None) -> list[Any]:
    cls: dict[str, Any] = {
        xdstypes.CLUSTER: cluster_pb2.Cluster,
        xdstypes.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
        xdstypes.LISTENER: listener_pb2.Listener,
        xdstypes.ROUTE: route_pb2.RouteConfiguration,
    }
    out = []
    for r in generate(type_url, proxy, ctx, list(names) if names is not None else None):
        msg = cls[type_url]()
        assert r.resource.Unpack(msg)
        out.append(msg)
    return out


def clusters(proxy: Proxy, ctx: PushContext) -> dict[str, cluster_pb2.Cluster]:
    return {c.name: c for c in decode(xdstypes.CLUSTER, proxy, ctx)}


def listeners(proxy: Proxy, ctx: PushContext) -> dict[str, listener_pb2.Listener]:
    return {x.name: x for x in decode(xdstypes.LISTENER, proxy, ctx)}


def routes(proxy: Proxy, ctx: PushContext) -> list[route_pb2.RouteConfiguration]:
    return list(decode(xdstypes.ROUTE, proxy, ctx))


def hcm_of(chain: Any) -> hcm_pb2.HttpConnectionManager | None:
    for f in chain.filters:
        if f.name == "envoy.filters.network.http_connection_manager":
            h = hcm_pb2.HttpConnectionManager()
            assert f.typed_config.Unpack(h)
            return h
    return None


def static_bootstrap(proxy: Proxy, ctx: PushContext) -> bootstrap_pb2.Bootstrap:
    """Everything generated for ``proxy`` in one static bootstrap Envoy can validate offline."""
    bs = bootstrap_pb2.Bootstrap()
    bs.node.id = proxy.id
    bs.node.cluster = "validate"
    cds = decode(xdstypes.CLUSTER, proxy, ctx)
    eds = {c.cluster_name: c for c in decode(xdstypes.ENDPOINT, proxy, ctx)}
    rds = {r.name: r for r in decode(xdstypes.ROUTE, proxy, ctx)}
    names = {c.name for c in cds}
    assert len(names) == len(cds), "duplicate cluster names"
    for c in cds:
        if c.type == cluster_pb2.Cluster.EDS:
            assert c.eds_cluster_config.service_name in eds, f"no EDS for {c.name}"
            c.type = cluster_pb2.Cluster.STATIC
            c.load_assignment.CopyFrom(eds[c.eds_cluster_config.service_name])
            c.ClearField("eds_cluster_config")
        bs.static_resources.clusters.append(c)
    sds = bs.static_resources.clusters.add(name=ctx.mesh.sds_cluster, type=cluster_pb2.Cluster.STATIC)
    sds.connect_timeout.seconds = 1
    sds.load_assignment.cluster_name = ctx.mesh.sds_cluster
    ep = sds.load_assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    ep.address, ep.port_value = "127.0.0.1", 1
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    opts = http_protocol_options_pb2.HttpProtocolOptions()
    opts.explicit_http_config.http2_protocol_options.SetInParent()
    sds.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].Pack(opts)
    used_rds: set[str] = set()
    for lst in decode(xdstypes.LISTENER, proxy, ctx):
        chains = list(lst.filter_chains) + ([lst.default_filter_chain] if lst.HasField("default_filter_chain") else [])
        for chain in chains:
            for f in chain.filters:
                h = hcm_of(type("C", (), {"filters": [f]})())
                if h is not None and h.HasField("rds"):
                    name = h.rds.route_config_name
                    assert name in rds, f"listener {lst.name} names unknown RDS {name}"
                    used_rds.add(name)
                    h.ClearField("rds")
                    h.route_config.CopyFrom(rds[name])
                    f.typed_config.Pack(h)
        bs.static_resources.listeners.append(lst)
    return bs


def envoy_validate(proxy: Proxy, ctx: PushContext, tmp: Path) -> str:
    bs = static_bootstrap(proxy, ctx)
    path = tmp / f"{proxy.type.value}-{abs(hash(proxy.id))}.pb"
    path.write_bytes(bs.SerializeToString())
    envoy = shutil.which("envoy")
    assert envoy, "envoy binary not on PATH"
    res = subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
                         capture_output=True, text=True, timeout=60)
    accepted = f"configuration '{path}' OK"
    if res.returncode in (-11, 139) and accepted in res.stdout + res.stderr:
        # Envoy 1.40's validation mode crashes while tearing down a stats scope with a ``sharing_name`` (the
        # metrics' shared scope, translate.telemetry) *after* it accepted the config; a serving Envoy does not
        # (the telemetry e2e tests run it and stop it cleanly). The verdict printed before the crash stands.
        return res.stdout
    assert res.returncode == 0, f"envoy rejected the config:\n{res.stdout}\n{res.stderr}"
    return res.stdout
