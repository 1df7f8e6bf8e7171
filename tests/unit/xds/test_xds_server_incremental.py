"""The push pipeline's cost follows what changed (counted, never timed): nothing is built while no proxy is
connected, an endpoint change updates the registry incrementally without a new push context, and a failing
generator leaves the proxy on its last good config with the error in its status.

The "proxy" here is a Connection registered directly with the server (no gRPC stream): what is under test is
the server's bookkeeping; the ADS protocol over real streams is covered by tests/e2e/test_xds_protocol_e2e.py.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "translate"))

from _translate_helpers import bookinfo_registry, context, fqdn, service_entry, workload_entry

from meshplane.model import xdstypes
from meshplane.model.proxy import Locality, Proxy
from meshplane.model.push import PushRequest
from meshplane.model.resources import GroupResource
from meshplane.store import MemoryStore
from meshplane.xds import XdsServer, XdsSettings
from meshplane.xds.connection import Connection, PushState
from meshplane.xds.default_translator import DefaultTranslator
from meshplane.xds.encoding import Encoder
from meshplane.xds.protocol import SyncState, XdsRequest
from meshplane.xds.translator import ResourceLike

SE = GroupResource("networking.istio.io", "serviceentries")
WE = GroupResource("networking.istio.io", "workloadentries")
VS = GroupResource("networking.istio.io", "virtualservices")
NODE = "sidecar~127.0.5.1~client-0.default~default.svc.cluster.local"


async def _nothing(_data: bytes) -> None:
    return None


def _connect(server: XdsServer) -> Connection:
    conn = Connection(delta=False, peer="test", translator=server.translator, send=_nothing)
    conn.proxy = server.translator.proxy_from_node(NODE, {"NAMESPACE": "default"}, Locality())
    server.register(conn)
    return conn


async def test_builds_nothing_without_proxies_and_updates_endpoints_incrementally() -> None:
    store = MemoryStore()
    await store.start()
    for i in range(20):
        await store.create(SE, service_entry(f"s{i}", selector={"app": f"s{i}"}), actor="test")
        await store.create(WE, workload_entry(f"s{i}-0", f"10.0.0.{i + 1}", {"app": f"s{i}"}), actor="test")
    server = XdsServer(store, XdsSettings(debounce_quiet=0.01, debounce_max=0.05))
    await server.start("127.0.0.1:0")
    try:
        assert server.context_builds == 1  # built at start-up, before any proxy connects
        for i in range(20, 30):  # bulk writes with nobody connected
            await store.create(SE, service_entry(f"s{i}", selector={"app": f"s{i}"}), actor="test")
        await server.wait_idle()
        assert server.context_builds == 1 and server.deferred_flushes >= 1

        _connect(server)
        assert server.state is not None  # what a proxy's first request does
        assert server.context_builds == 2  # the deferred changes, built once on demand

        we = store.get(WE, "default", "s3-0")
        assert we is not None
        await store.update(WE, {**we, "spec": {**we["spec"], "address": "10.9.9.9"}}, actor="test")
        await server.wait_idle()
        assert server.context_builds == 2  # no new push context for an endpoint change
        assert server.registry_updates == 1 and server.eds_pushes == 1
        assert [e.address for e in server.registry.endpoints_of(fqdn("s3"))] == ["10.9.9.9"]

        await store.create(VS, {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                "metadata": {"name": "s1", "namespace": "default"},
                                "spec": {"hosts": [fqdn("s1")], "http": [{"route": [
                                    {"destination": {"host": fqdn("s1")}}]}]}}, actor="test")
        await server.wait_idle()
        assert server.context_builds == 3 and server.full_pushes == 1
    finally:
        await server.stop(0)
        await store.close()


class _Flaky(DefaultTranslator):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def generate(self, type_url: str, proxy: Proxy, ctx: object,
                 names: Collection[str] | None = None) -> Sequence[ResourceLike]:
        if self.fail:
            raise RuntimeError("builder bug")
        return super().generate(type_url, proxy, ctx, names)


async def test_a_failing_generator_keeps_the_last_good_config_and_reports_it() -> None:
    translator = _Flaky()
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    conn = Connection(delta=False, peer="test", translator=translator, send=send)
    conn.proxy = translator.proxy_from_node(NODE, {"NAMESPACE": "default"}, Locality())
    state = PushState(ctx=context(bookinfo_registry()), epoch=1, config_version=1, encoder=Encoder())
    await conn.handle(XdsRequest(type_url=xdstypes.CLUSTER), state)
    wt = conn.watched[xdstypes.CLUSTER]
    good: dict[str, Any] = dict(wt.sent)
    await conn.handle(XdsRequest(type_url=xdstypes.CLUSTER, nonce=wt.nonce_sent, version_info=wt.version_sent),
                      state)
    assert len(sent) == 1 and wt.state is SyncState.SYNCED

    translator.fail = True
    await conn.push(PushRequest(full=True), state)  # a push while failing sends nothing
    assert len(sent) == 1
    wt.always_respond = True  # as after a CDS push: the next matching request must be answered ...
    await conn.handle(XdsRequest(type_url=xdstypes.CLUSTER, nonce=wt.nonce_sent, version_info=wt.version_sent),
                      state)
    assert len(sent) == 2 and wt.sent == good  # ... and is, with the last good clusters
    assert "builder bug" in conn.generate_errors[xdstypes.CLUSTER]

    translator.fail = False
    await conn.push(PushRequest(full=True), state)
    assert xdstypes.CLUSTER not in conn.generate_errors


async def test_an_east_west_gateway_moving_is_a_full_push() -> None:
    """Every service with endpoints on a remote network is sent through that network's gateway: its endpoints
    moving changes other services' EDS too, so it cannot be an endpoint-only push of the gateway's own host."""
    store = MemoryStore()
    await store.start()
    await store.create(SE, service_entry("ewgw", selector={"istio": "eastwestgateway"}), actor="test")
    await store.create(WE, workload_entry("ewgw-0", "10.1.0.1", {"istio": "eastwestgateway"}), actor="test")
    await store.create(SE, service_entry("plain", selector={"app": "plain"}), actor="test")
    await store.create(WE, workload_entry("plain-0", "10.0.0.1", {"app": "plain"}), actor="test")
    server = XdsServer(store, XdsSettings(debounce_quiet=0.01, debounce_max=0.05))
    await server.start("127.0.0.1:0")
    try:
        _connect(server)
        assert server.state is not None
        builds = server.context_builds
        plain = store.get(WE, "default", "plain-0")
        assert plain is not None
        await store.update(WE, {**plain, "spec": {**plain["spec"], "address": "10.0.0.2"}}, actor="test")
        await server.wait_idle()
        assert server.context_builds == builds and server.eds_pushes == 1  # an ordinary endpoint: EDS only
        gw = store.get(WE, "default", "ewgw-0")
        assert gw is not None
        await store.update(WE, {**gw, "spec": {**gw["spec"], "address": "10.1.0.2"}}, actor="test")
        await server.wait_idle()
        assert server.context_builds == builds + 1 and server.eds_pushes == 1 and server.full_pushes == 1
    finally:
        await server.stop(0)
        await store.close()


class _Source:
    """A registry source that reports what changed (``IncrementalRegistry``), like a member cluster's."""

    def __init__(self, hosts: list[str]) -> None:
        from meshplane.model.service import Endpoint, Service, ServicePort

        self._svc = {h: Service(h, "default", (ServicePort(9080, "http", "HTTP"),)) for h in hosts}
        self.eps: dict[str, tuple[Endpoint, ...]] = {
            h: (Endpoint(f"10.2.0.{i + 1}", cluster_id="remote"),) for i, h in enumerate(hosts)}
        self.pending: set[str] = set()
        self.services_changed = True
        self.asked = 0

    @property
    def cluster_id(self) -> str:
        return "remote"

    @property
    def source(self) -> str:
        return "Fake"

    def services(self) -> Sequence[Any]:
        return tuple(self._svc.values())

    def endpoints(self) -> dict[str, Any]:
        return dict(self.eps)

    def take_changes(self) -> frozenset[str] | None:
        self.asked += 1
        out = None if self.services_changed else frozenset(self.pending)
        self.services_changed = False
        self.pending.clear()
        return out

    def move(self, host: str, address: str) -> None:
        from meshplane.model.service import Endpoint

        self.eps[host] = (Endpoint(address, cluster_id="remote"),)
        self.pending.add(host)


async def test_a_source_reporting_its_changed_hosts_is_updated_without_a_re_merge(monkeypatch: Any) -> None:
    from meshplane.registry import aggregator as aggregator_mod

    store = MemoryStore()
    await store.start()
    merges: list[int] = []
    real = aggregator_mod.aggregate

    def counting(sources: Any) -> Any:
        merges.append(1)
        return real(sources)

    diffs: list[int] = []
    real_diff = aggregator_mod.diff_endpoints

    def counting_diff(old: Any, new: Any) -> Any:
        diffs.append(1)
        return real_diff(old, new)

    monkeypatch.setattr(aggregator_mod, "aggregate", counting)
    monkeypatch.setattr(aggregator_mod, "diff_endpoints", counting_diff)
    source = _Source([fqdn(f"r{i}") for i in range(5)])
    server = XdsServer(store, XdsSettings(debounce_quiet=0.01, debounce_max=0.05))
    await server.start("127.0.0.1:0")
    try:
        _connect(server)
        server.add_registry(source)
        await server.wait_idle()
        assert server.registry.endpoints_of(fqdn("r2"))[0].address == "10.2.0.3"
        merges_before, diffs_before = len(merges), len(diffs)
        builds, eds = server.context_builds, server.eds_pushes

        source.move(fqdn("r2"), "10.2.9.9")
        server.registry_changed("r2 moved")
        await server.wait_idle()
        assert len(merges) == merges_before and len(diffs) == diffs_before  # no re-merge of the mesh, no diff
        assert server.context_builds == builds and server.eds_pushes == eds + 1
        assert server.registry.endpoints_of(fqdn("r2"))[0].address == "10.2.9.9"
        assert server.registry.endpoints_of(fqdn("r1"))[0].address == "10.2.0.2"

        source.services_changed = True  # a source that cannot tell (or whose services changed): merged whole
        source.move(fqdn("r3"), "10.2.8.8")
        server.registry_changed("r3 moved, services may differ")
        await server.wait_idle()
        assert len(merges) == merges_before + 1
        assert server.registry.endpoints_of(fqdn("r3"))[0].address == "10.2.8.8"

        server.remove_registry(source)
        await server.wait_idle()
        assert server.registry.endpoints_of(fqdn("r3")) == ()
    finally:
        await server.stop(0)
        await store.close()


async def test_an_endpoint_push_sends_the_same_bytes_to_streams_with_the_same_view() -> None:
    """An EDS push to a thousand proxies with one view encodes the assignment and the response once; a stream
    that already holds the pushed version gets nothing, one that is behind gets only what it lacks."""
    translator = DefaultTranslator()
    sent: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}

    def sender(key: str) -> Any:
        async def send(data: bytes) -> None:
            sent[key].append(data)
        return send

    objs = bookinfo_registry()
    ctx = context(objs)
    state = PushState(ctx=ctx, epoch=1, config_version=1, encoder=Encoder())
    conns = {}
    for key in sent:
        conn = Connection(delta=False, peer=key, translator=translator, send=sender(key))
        conn.proxy = translator.proxy_from_node(NODE, {"NAMESPACE": "default"}, Locality())
        names = frozenset(r.name for r in translator.generate(xdstypes.ENDPOINT, conn.proxy, ctx))
        await conn.handle(XdsRequest(type_url=xdstypes.ENDPOINT, names=names), state)
        conns[key] = conn
    reviews = fqdn("reviews")
    ctx2 = ctx.with_registry(context([*objs, workload_entry("reviews-v1b", "127.0.1.9", {"app": "reviews",
                                                                                    "version": "v1"})]).registry,
                             frozenset({reviews}))
    state2 = PushState(ctx=ctx2, epoch=2, config_version=1, encoder=Encoder())
    await conns["c"].push(PushRequest(full=False, endpoints_updated=frozenset({reviews})), state2)
    for key in ("a", "b", "c"):
        await conns[key].push(PushRequest(full=False, endpoints_updated=frozenset({reviews})), state2)
    assert len(sent["a"]) == len(sent["b"]) == 2 and sent["a"][1] is sent["b"][1]  # one bytes object
    assert len(sent["c"]) == 2  # already held the new version: the second push sent nothing
    from envoy.config.endpoint.v3 import endpoint_pb2
    from envoy.service.discovery.v3 import discovery_pb2

    resp = discovery_pb2.DiscoveryResponse.FromString(sent["a"][1])
    assert resp.type_url == xdstypes.ENDPOINT and resp.nonce == conns["a"].watched[xdstypes.ENDPOINT].nonce_sent
    cla = endpoint_pb2.ClusterLoadAssignment()
    assert len(resp.resources) == 1 and resp.resources[0].Unpack(cla)
    assert cla.cluster_name == f"outbound|9080||{reviews}"
    assert "127.0.1.9" in {e.endpoint.address.socket_address.address
                           for g in cla.endpoints for e in g.lb_endpoints}
