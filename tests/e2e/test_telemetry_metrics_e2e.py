"""Istio's standard metrics on real Envoys: ``istio_requests_total`` and its labels, as Istio documents them.

Two sidecars with certificates from the CA (productpage calls reviews over auto mTLS under STRICT), each serving
``/stats/prometheus`` on its metrics listener (Istio's 15090): the destination reports the caller's workload, app,
version and SPIFFE id with ``connection_security_policy="mutual_tls"``; the source reports who answered. The
identity headers that carry this never reach either application, and a plaintext caller (PERMISSIVE) is
reported as ``none`` with an unknown source. The identity goes only to the mesh: a host outside it (a
``MESH_EXTERNAL`` ServiceEntry, the PassthroughCluster) never receives it, not even one the application forged,
and is still counted by the source.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from e2e_objects import service_entry, virtual_service
from envoy_harness import wait_until
from security_mesh import PA, REVIEWS, SE, SecurityMesh

from meshplane.store import GroupResource
from meshplane.translate import telemetry
from tests.support.promtext import samples

pytestmark = pytest.mark.envoy

SPIFFE = "spiffe://cluster.local/ns/default/sa/"
N = 7


async def _scrape(address: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"http://{address}/stats/prometheus") as r:
        assert r.status == 200
        return await r.text()


def _find(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Samples of ``name`` whose labels include ``labels``."""
    return [(dict(lbls), v) for (n, lbls), v in samples(text).items()
            if n == name and labels.items() <= dict(lbls).items()]


async def test_requests_total_with_istio_labels_under_strict_mtls(sec: SecurityMesh) -> None:
    reviews = await sec.workload("reviews", labels={"version": "v2"})
    productpage = await sec.workload("productpage", serve=False, labels={"version": "v1"})
    await sec.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}})
    await sec.synced()
    await sec.eventually("productpage", "/warm", 200)
    assert reviews.backend is not None
    reviews.backend.requests.clear()
    before = await _scrape(reviews.envoy.stats_address)
    warm = sum(v for _, v in _find(before, "istio_requests_total", reporter="destination"))

    for i in range(N):
        status, _, headers = await sec.h.get(f"http://{productpage.envoy.listen_host}:15001/p/{i}", host=REVIEWS)
        assert status == 200
        assert not [h for h in headers if h.lower().startswith("x-meshplane-peer")], headers  # stripped for the app
    assert len(reviews.backend.requests) == N
    for _, _, seen in reviews.backend.requests:
        assert not [h for h in seen if h.startswith("x-meshplane-peer")], seen  # stripped for the server app too

    dest = await _scrape(reviews.envoy.stats_address)
    assert "envoy_istio_" not in dest, "served under Istio's names"
    (labels, count), = _find(dest, "istio_requests_total", reporter="destination", response_code="200",
                             connection_security_policy="mutual_tls")
    assert count - warm == N
    assert labels == {
        "reporter": "destination", "response_code": "200", "response_flags": "-", "request_protocol": "http",
        "connection_security_policy": "mutual_tls",
        "source_workload": "productpage", "source_workload_namespace": "default", "source_app": "productpage",
        "source_version": "v1", "source_cluster": "local", "source_principal": SPIFFE + "productpage",
        "destination_workload": "reviews", "destination_workload_namespace": "default", "destination_app": "reviews",
        "destination_version": "v2", "destination_cluster": "local", "destination_principal": SPIFFE + "reviews",
        "destination_service": REVIEWS, "destination_service_name": "reviews",
        "destination_service_namespace": "default"}

    async def histograms_flushed() -> bool:
        # Envoy publishes histograms at its stats flush (every 5 s), counters at once.
        text = await _scrape(reviews.envoy.stats_address)
        return all(sum(v for _, v in _find(text, f"istio_{h}_count", reporter="destination")) == warm + N
                   for h in ("request_duration_milliseconds", "request_bytes", "response_bytes"))

    await wait_until(histograms_flushed, timeout=20, what="request histograms flushed")

    src = await _scrape(productpage.envoy.stats_address)
    (labels, count), = _find(src, "istio_requests_total", reporter="source", response_code="200")
    assert count - warm == N
    assert {k: labels[k] for k in ("source_workload", "source_version", "source_principal", "destination_workload",
                                   "destination_version", "destination_principal", "destination_service",
                                   "destination_service_name", "connection_security_policy")} == {
        "source_workload": "productpage", "source_version": "v1", "source_principal": SPIFFE + "productpage",
        "destination_workload": "reviews", "destination_version": "v2", "destination_principal": SPIFFE + "reviews",
        "destination_service": REVIEWS, "destination_service_name": "reviews",
        "connection_security_policy": "unknown"}  # Istio's source reporter does not know the server's policy


async def test_plaintext_caller_is_reported_as_none_and_cannot_forge_an_identity(sec: SecurityMesh) -> None:
    reviews = await sec.workload("reviews")
    await sec.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "PERMISSIVE"}})
    await sec.synced()

    async def answered() -> bool:
        return await sec.plaintext("reviews") == 200

    await wait_until(answered, what="plaintext answered")
    forged = {"x-meshplane-peer": "admin-tool;kube-system"}  # workload;namespace (the rest: unknown)
    status, _, headers = await sec.h.get(f"http://{reviews.envoy.listen_host}:8080/forged", headers=forged)
    assert status == 200
    assert not [h for h in headers if h.lower().startswith("x-meshplane-peer")], "a plaintext caller is not told"
    assert reviews.backend is not None
    _, _, seen = reviews.backend.requests[-1]
    assert "x-meshplane-peer" not in seen
    text = await _scrape(reviews.envoy.stats_address)
    rows = _find(text, "istio_requests_total", reporter="destination", connection_security_policy="none")
    assert rows and all(lbls["source_principal"] == "unknown" for lbls, _ in rows)
    # A plaintext caller's headers are taken as it sent them (Istio trusts its peer-metadata headers the same way),
    # but never as a principal: only the certificate gives one.
    assert {lbls["source_workload"] for lbls, _ in rows} == {"unknown", "admin-tool"}


async def test_counts_survive_a_listener_update(sec: SecurityMesh) -> None:
    """A config push replaces the inbound listener; Istio's counters keep counting (a reset would lose what
    Prometheus has not scraped yet)."""
    reviews = await sec.workload("reviews")
    await sec.workload("productpage", serve=False)
    await sec.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "PERMISSIVE"}})
    await sec.synced()
    await sec.eventually("productpage", "/warm", 200)

    async def total() -> float:
        text = await _scrape(reviews.envoy.stats_address)
        return sum(v for _, v in _find(text, "istio_requests_total", reporter="destination",
                                       source_workload="productpage"))

    start = await total()
    for i in range(N):
        assert await sec.call("productpage", f"/a/{i}") == 200
    assert await total() == start + N
    pa = sec.store.get(PA, "default", "default")
    assert pa is not None
    await sec.store.update(PA, {**pa, "spec": {"mtls": {"mode": "STRICT"}}}, actor="test")
    await sec.synced()
    await asyncio.sleep(2)  # the old listener drains
    for i in range(N):
        assert await sec.call("productpage", f"/b/{i}") == 200
    assert await total() == start + 2 * N


EXTERNAL = "api.example.com"
MORE = "more{}.default.svc.cluster.local"
VS = GroupResource("networking.istio.io", "virtualservices")


async def test_identity_goes_to_the_mesh_only(sec: SecurityMesh) -> None:
    """productpage reaches reviews (in the mesh, mutual TLS) and a plain HTTP server declared by a MESH_EXTERNAL
    ServiceEntry: by its own host, by a path of reviews' VirtualService, and by one weight of a split (and reviews
    by two names, one routed by the VirtualService, one not). Another
    plain server is reached through the PassthroughCluster (ALLOW_ANY). Neither outside server ever sees
    ``x-meshplane-peer``, not even the one the application sends; reviews' sidecar still learns who called."""
    reviews = await sec.workload("reviews", labels={"version": "v2"})
    productpage = await sec.workload("productpage", serve=False, labels={"version": "v1"})
    external = await sec.h.backend("external")
    stray = await sec.h.backend("stray")
    await sec.store.create(SE, {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "external", "namespace": "default"},
        "spec": {"hosts": [EXTERNAL], "location": "MESH_EXTERNAL", "resolution": "STATIC",
                 "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                 "endpoints": [{"address": external.host, "ports": {"http": external.port}}]}}, actor="test")
    out = {"destination": {"host": EXTERNAL, "port": {"number": 80}}}
    await sec.store.create(VS, virtual_service("reviews", [REVIEWS], [
        {"match": [{"uri": {"prefix": "/ext/"}}], "route": [out]},
        {"match": [{"uri": {"prefix": "/split/"}}], "route": [
            {"destination": {"host": REVIEWS}, "weight": 50}, {**out, "weight": 50}]},
        {"route": [{"destination": {"host": REVIEWS}}]}]), actor="test")
    # More hosts in the mesh than outside it: the route configuration is "on", the hosts outside "off"; the
    # first of them is reviews' workload under another name (its virtual host inherits the "on").
    for i in range(4):
        se = service_entry(f"more{i}", MORE.format(i), selector={"app": "reviews" if i == 0 else f"more{i}"})
        await sec.store.create(SE, se, actor="test")
    await sec.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}})
    await sec.synced()
    await sec.eventually("productpage", "/warm", 200)
    await sec.eventually("productpage", "/warm", 200, host=EXTERNAL)
    dump = await productpage.envoy.config_dump()
    (rds,) = [r["route_config"] for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")
              for r in c.get("dynamic_route_configs", ()) if r["route_config"]["name"] == "http_proxy"]
    assert telemetry.PEER_SENDER in rds["typed_per_filter_config"]
    assert reviews.backend is not None
    reviews.backend.requests.clear()
    external.requests.clear()

    async def destination_total() -> float:
        text = await _scrape(reviews.envoy.stats_address)
        return sum(v for _, v in _find(text, "istio_requests_total", reporter="destination",
                                       source_workload="productpage", source_version="v1"))

    async def source_external() -> float:
        text = await _scrape(productpage.envoy.stats_address)
        return sum(v for _, v in _find(text, "istio_requests_total", reporter="source",
                                       destination_service=EXTERNAL, source_workload="productpage"))

    known_before, external_before = await destination_total(), await source_external()
    forged = {"x-meshplane-peer": "admin-tool;kube-system"}
    for i in range(N):
        assert await sec.call("productpage", f"/in/{i}", headers=forged) == 200
        assert await sec.call("productpage", f"/more/{i}", host=MORE.format(0), headers=forged) == 200
        assert await sec.call("productpage", f"/own/{i}", host=EXTERNAL, headers=forged) == 200
        assert await sec.call("productpage", f"/ext/{i}") == 200
        assert await sec.call("productpage", f"/pass/{i}", host=stray.address, headers=forged) == 200
    for i in range(4 * N):  # both halves of the split are taken
        assert await sec.call("productpage", f"/split/{i}", headers=forged) == 200

    outside = [*external.requests, *stray.requests]
    assert len(stray.requests) == N and len(external.requests) > 2 * N
    for _, path, seen in outside:
        assert not [h for h in seen if h.startswith("x-meshplane-peer")], (path, seen)
    split_inside = [p for _, p, _ in reviews.backend.requests if p.startswith("/split/")]
    split_outside = [p for _, p, _ in external.requests if p.startswith("/split/")]
    assert split_inside and split_outside and len(split_inside) + len(split_outside) == 4 * N
    for _, path, seen in reviews.backend.requests:
        assert not [h for h in seen if h.startswith("x-meshplane-peer")], (path, seen)
    # Every request that reached reviews was reported with the caller's identity (not the forged one) ...
    assert await destination_total() - known_before == len(reviews.backend.requests) == 2 * N + len(split_inside)
    text = await _scrape(reviews.envoy.stats_address)
    assert not _find(text, "istio_requests_total", source_workload="admin-tool")
    # ... and the source still counts what went outside, with nobody's answer as the destination.
    assert await source_external() - external_before == 2 * N + len(split_outside)
    rows = _find(await _scrape(productpage.envoy.stats_address), "istio_requests_total", reporter="source",
                 destination_service=EXTERNAL)
    assert rows and {lbls["destination_workload"] for lbls, _ in rows} == {"unknown"}
