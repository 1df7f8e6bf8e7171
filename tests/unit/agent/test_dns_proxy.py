"""The agent's DNS proxy on real UDP sockets on loopback: mesh names from the name table (with Kubernetes short
forms), local NXDOMAIN under the mesh domain, forwarding with a cache, and answers when the upstream is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from meshplane.agent.dns import DnsProxy, expand_table
from meshplane.model import nds
from tests.support.resolver import Resolver, resolver


def _table() -> Any:
    t = nds.NameTable()
    r = t.table["reviews.default.svc.cluster.local"]
    r.ips.append("240.240.0.5")
    r.registry, r.shortname, r.namespace = "Kubernetes", "reviews", "default"
    o = t.table["ratings.other.svc.cluster.local"]
    o.ips.extend(["240.240.0.6", "fd00::6"])
    o.registry, o.shortname, o.namespace = "Kubernetes", "ratings", "other"
    t.table["api.example.com"].ips.append("240.240.0.9")
    t.table["*.corp.example.com"].ips.append("10.8.8.8")
    t.table["*.eu.corp.example.com"].ips.append("10.8.8.9")
    return t


@pytest.fixture
async def mesh_dns() -> AsyncIterator[tuple[DnsProxy, Resolver, int]]:
    async with resolver(lambda name: "192.0.2.7" if name.endswith("example.com") else None) as (up, up_port):
        proxy = DnsProxy("default", ("127.0.0.1", up_port))
        proxy.set_table(_table())
        [address] = await proxy.serve(["127.0.0.1:0"])  # one port free for both UDP and TCP, chosen by the kernel
        port = int(address.rpartition(":")[2])
        yield proxy, up, port
        await proxy.close()


async def _ask(port: int, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)


def _a(resp: dns.message.Message) -> list[str]:
    return [r.to_text() for rrset in resp.answer for r in rrset]


async def test_mesh_names_and_their_short_forms(mesh_dns: tuple[DnsProxy, Resolver, int]) -> None:
    proxy, up, port = mesh_dns
    for name in ("reviews.default.svc.cluster.local", "reviews.default", "reviews.default.svc", "reviews"):
        assert _a(await _ask(port, name)) == ["240.240.0.5"], name
    assert _a(await _ask(port, "ratings.other")) == ["240.240.0.6"]
    assert _a(await _ask(port, "ratings.other", "AAAA")) == ["fd00::6"]
    # Another namespace's service has no short name here: not a mesh name, so (as in Istio) it goes upstream.
    assert (await _ask(port, "ratings")).rcode() == dns.rcode.NXDOMAIN
    assert _a(await _ask(port, "api.example.com")) == ["240.240.0.9"]  # a ServiceEntry host beats upstream
    assert _a(await _ask(port, "reviews", tcp=True)) == ["240.240.0.5"]
    assert up.queries == ["ratings"]
    assert proxy.stats.mesh_answers == 8


async def test_names_under_a_wildcard_host_with_addresses(mesh_dns: tuple[DnsProxy, Resolver, int]) -> None:
    proxy, up, port = mesh_dns
    assert _a(await _ask(port, "git.corp.example.com")) == ["10.8.8.8"]
    assert _a(await _ask(port, "a.b.corp.example.com")) == ["10.8.8.8"]  # any depth under the wildcard
    assert _a(await _ask(port, "git.eu.corp.example.com")) == ["10.8.8.9"]  # the most specific wildcard wins
    assert up.queries == []
    # The wildcard's own domain is not under it, and other names still go upstream.
    await _ask(port, "corp.example.com")
    assert up.queries == ["corp.example.com"]
    assert proxy.stats.mesh_answers == 3


async def test_search_path_misses_stay_local(mesh_dns: tuple[DnsProxy, Resolver, int]) -> None:
    _, up, port = mesh_dns
    resp = await _ask(port, "www.google.default.svc.cluster.local")
    assert resp.rcode() == dns.rcode.NXDOMAIN and up.queries == []


async def test_forwarding_caching_and_upstream_down(mesh_dns: tuple[DnsProxy, Resolver, int]) -> None:
    proxy, up, port = mesh_dns
    assert _a(await _ask(port, "www.example.com")) == ["192.0.2.7"]
    assert _a(await _ask(port, "www.example.com")) == ["192.0.2.7"]
    assert up.queries == ["www.example.com"] and proxy.stats.cache_hits == 1
    assert (await _ask(port, "nothing.test")).rcode() == dns.rcode.NXDOMAIN
    # The upstream goes away: mesh names keep answering at once, a cached name is served stale, others fail.
    up.transport.close()
    for entry in proxy.cache.values():
        entry.expires = 0.0
    assert _a(await _ask(port, "reviews")) == ["240.240.0.5"]
    assert proxy.stats.upstream_failures == 0  # answered from the table: the upstream was not even asked
    assert _a(await _ask(port, "www.example.com")) == ["192.0.2.7"]
    assert proxy.stats.stale_answers == 1
    assert (await _ask(port, "other.example.org")).rcode() == dns.rcode.SERVFAIL


def test_a_table_without_kubernetes_parts_answers_its_host_only() -> None:
    t = nds.NameTable()
    t.table["db.internal"].ips.append("10.9.9.9")
    t.table["db.internal"].alt_hosts.append("db")
    assert expand_table(t, "default") == {"db.internal": ("10.9.9.9",), "db": ("10.9.9.9",)}
