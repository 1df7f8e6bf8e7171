"""Zero trust through real Envoys: certificates from meshplane's CA (CSR signed over gRPC with a bootstrap token)
delivered over SDS on Unix sockets; PeerAuthentication STRICT / PERMISSIVE; a server presenting the wrong SPIFFE id
is refused; rotation of certificates and of the root under a continuous request loop loses no request; a CSR
for someone else's identity is refused and audited; private keys appear in no log and not in the store;
the server's application sees the caller in ``x-forwarded-client-cert`` exactly as Istio's auto mTLS task shows."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from envoy_harness import Harness
from security_mesh import DR, PA, SE, WE, SecurityMesh

from meshplane.security import WorkloadKey
from meshplane.store import MemoryStore
from meshplane.translate import MeshSettings
from meshplane.xds.default_translator import DefaultTranslator

pytestmark = pytest.mark.envoy


async def test_strict_refuses_plaintext_and_wrong_identity(sec: SecurityMesh) -> None:
    await sec.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, namespace="istio-system")
    await sec.workload("reviews")
    await sec.workload("sleep", serve=False)
    await sec.synced()
    await sec.eventually("sleep", "/", 200)  # auto mTLS with certificates from our CA
    assert await sec.plaintext("reviews") == 0  # plaintext to a STRICT port: the handshake fails
    reviews = sec.workloads["reviews"].backend
    assert reviews is not None and reviews.requests
    # The server now presents another identity: the client verifies the SPIFFE id from the WorkloadEntry.
    versions = await sec.issue(sec.workloads["reviews"], service_account="impostor")
    await sec.workloads["reviews"].sds.wait_acked("default", versions["default"])
    await sec.eventually("sleep", "/", 503)
    for _ in range(5):
        assert await sec.call("sleep", "/") == 503
    issued = [e.subject for e in sec.audit.events(kind="certificate.issued")]
    assert "spiffe://cluster.local/ns/default/sa/impostor" in issued


async def test_permissive_accepts_both(sec: SecurityMesh) -> None:
    await sec.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, namespace="istio-system")
    await sec.apply(PA, "PeerAuthentication", "reviews", {"selector": {"matchLabels": {"app": "reviews"}},
                                                         "mtls": {"mode": "PERMISSIVE"}})
    await sec.workload("reviews")
    await sec.workload("sleep", serve=False)
    await sec.synced()
    await sec.eventually("sleep", "/", 200)
    assert await sec.plaintext("reviews") == 200
    assert await sec.call("sleep", "/") == 200


async def test_rotation_under_traffic_loses_no_request(sec: SecurityMesh, caplog: pytest.LogCaptureFixture,
                                                       store: MemoryStore) -> None:
    """Three renewals of short-lived certificates, then a root rotation with overlap (bundle with both roots,
    certificates from the new root, bundle with the new root only), while requests run back to back, each on a
    new TLS connection. Every request must succeed."""
    caplog.set_level(logging.DEBUG)
    sec.ttl_s = 60
    await sec.apply(PA, "PeerAuthentication", "default", {"mtls": {"mode": "STRICT"}}, namespace="istio-system")
    server, client = await sec.workload("reviews"), await sec.workload("sleep", serve=False)
    await sec.synced()
    await sec.eventually("sleep", "/", 200)
    results: list[int] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            results.append(await sec.call("sleep", "/"))

    async def requests_pass(n: int) -> None:
        target = len(results) + n
        while len(results) < target:
            await asyncio.sleep(0.01)

    task = asyncio.create_task(loop())
    try:
        await requests_pass(10)
        for _ in range(3):  # renewals
            for w in (server, client):
                v = await sec.issue(w)
                await w.sds.wait_acked("default", v["default"])
            await requests_pass(10)
        old_root = sec.ca.root_pem
        sec.ca.rotate_root(datetime.timedelta(hours=1))
        bundle = sec.ca.trust_bundle_pem()
        assert old_root in bundle
        for w in (server, client):  # 1. both roots trusted everywhere
            v = w.sds.update(trust_bundle_pem=bundle)
            await w.sds.wait_acked("ROOTCA", v["ROOTCA"])
        await requests_pass(10)
        for w in (server, client):  # 2. certificates from the new root
            v = await sec.issue(w)
            await w.sds.wait_acked("default", v["default"])
        await requests_pass(10)
        for w in (server, client):  # 3. overlap over: the old root is gone
            v = w.sds.update(trust_bundle_pem=sec.ca.root_pem)
            await w.sds.wait_acked("ROOTCA", v["ROOTCA"])
        await requests_pass(10)
    finally:
        stop.set()
        await task
    assert len(results) >= 70 and set(results) == {200}, f"failures: {[r for r in results if r != 200]}"
    # Private keys never in logs nor in the store.
    for w in (server, client):
        secret_line = w.key.private_key_pem().decode().splitlines()[1]
        assert secret_line not in caplog.text
    assert "PRIVATE KEY" not in caplog.text
    dumped = repr([store.list(gr) for gr in (SE, WE, DR, PA)]) + repr(store.audit())
    assert "PRIVATE KEY" not in dumped


async def test_csr_for_another_identity_is_refused_and_audited(sec: SecurityMesh,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert sec.ca_client is not None
    token = sec.tokens.issue("default", "sleep")
    victim = WorkloadKey(sec.ca.identity("prod", "payments"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sec.ca_client.create_certificate(victim.csr_pem(), token)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sec.ca_client.create_certificate(victim.csr_pem(), token[:-2] + "xx")
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sec.ca_client.create_certificate(victim.csr_pem(), "")
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    own = WorkloadKey(sec.ca.identity("default", "sleep"))
    chain, bundle = await sec.ca_client.create_certificate(own.csr_pem(), token)
    assert own.public_key_matches(chain) and sec.ca.root_pem in bundle
    refused = sec.audit.events(kind="certificate.refused")
    assert len(refused) == 3
    assert refused[0].subject == "spiffe://cluster.local/ns/default/sa/sleep"
    assert refused[0].target == "spiffe://cluster.local/ns/prod/sa/payments"
    assert [e.subject for e in sec.audit.events(kind="certificate.issued")] == [
        "spiffe://cluster.local/ns/default/sa/sleep"]
    for k in (victim, own):
        assert k.private_key_pem().decode().splitlines()[1] not in caplog.text


@pytest.fixture
async def permissive(store: MemoryStore, harness: Harness, xds, tmp_path: Path) -> AsyncIterator[SecurityMesh]:  # type: ignore[no-untyped-def]
    """A mesh with Istio's defaults: no PeerAuthentication means PERMISSIVE, clients use auto mTLS."""
    server, address = await xds(DefaultTranslator(MeshSettings(inbound_mtls=True)))
    m = await SecurityMesh(store, harness, server, address, tmp_path).start()
    yield m
    await m.close()


def _leaf_sha256(chain_pem: bytes) -> str:
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    return hashlib.sha256(leaf.public_bytes(Encoding.DER)).hexdigest()


async def test_xfcc_names_both_ends_of_auto_mtls(permissive: SecurityMesh) -> None:
    """Istio's auto mTLS task: httpbin sees ``By=<its own id>;Hash=<sha256 of sleep's certificate>;Subject="";
    URI=<sleep's id>``. A forged header from the client application is replaced (its sidecar sanitizes), and a
    plaintext client cannot hand one to the server's application either."""
    sec = permissive
    httpbin = await sec.workload("httpbin", namespace="foo")
    sleep = await sec.workload("sleep", namespace="foo", serve=False)
    await sec.synced()
    target = "httpbin.foo.svc.cluster.local"
    await sec.eventually("sleep", "/headers", 200, host=target)
    backend = httpbin.backend
    assert backend is not None
    want = (f"By=spiffe://cluster.local/ns/foo/sa/httpbin;Hash={_leaf_sha256(sleep.chain)};Subject=\"\";"
            "URI=spiffe://cluster.local/ns/foo/sa/sleep")
    assert backend.requests[-1][2].get("x-forwarded-client-cert") == want
    forged = "By=spiffe://cluster.local/ns/foo/sa/httpbin;URI=spiffe://cluster.local/ns/foo/sa/admin"
    assert await sec.call("sleep", "/forged", host=target, headers={"x-forwarded-client-cert": forged}) == 200
    assert backend.requests[-1][1] == "/forged" and backend.requests[-1][2].get("x-forwarded-client-cert") == want
    # PERMISSIVE also takes plaintext: Envoy drops the header of a request that did not come over mTLS.
    assert await sec.plaintext("httpbin", "/plain", headers={"x-forwarded-client-cert": forged}) == 200
    assert backend.requests[-1][1] == "/plain" and "x-forwarded-client-cert" not in backend.requests[-1][2]
