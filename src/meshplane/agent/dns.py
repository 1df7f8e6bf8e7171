"""The agent's DNS proxy (Istio's DNS capture, ``ISTIO_META_DNS_CAPTURE``): the instance's resolver.

Why in the agent: in multi-cluster meshes a name may have no DNS record anywhere the application could ask
(a service of another cluster, a ServiceEntry host, an auto-allocated VIP); the control plane knows them all and
pushes them to each proxy as a name table over xDS (NDS, :mod:`meshplane.rpc.nds`). The application's queries
(captured by iptables to 15053, whatever server they name) are answered from that table without leaving the
instance, so mesh names keep resolving when the upstream resolver is slow or down, which is ASM's point of "DNS
proxying for reliable resolution in multi-cluster meshes".

What it answers:

* a host of the table: its addresses (A; AAAA for IPv6 ones; an empty NOERROR answer for the other type);
  Kubernetes-style hosts ``NAME.NAMESPACE.svc.<domain>`` also as ``NAME.NAMESPACE``, ``NAME.NAMESPACE.svc`` and,
  from the same namespace, ``NAME``;
* another name under the mesh domain (``*.cluster.local``, what the search path produces): NXDOMAIN, locally, so
  the resolver moves on to the next search suffix at once (SERVFAIL until the first table arrived);
* everything else: forwarded to the upstream resolver, the answer cached for its TTL (5 s to 300 s; negative
  answers 30 s); when the upstream does not answer, a cached answer is served even after it expired, else
  SERVFAIL.

What it counts (``DnsStats``: the agent's status file, and Istio's ``istio_agent_dns_*`` metrics on the agent's
port 15020, :mod:`meshplane.agent.metrics`): every query, the answers from the table, the local NXDOMAINs, the
cache hits, the queries sent upstream with how long each took, the upstream failures and the stale answers.

A second listener (``proxy`` mode, no table) serves Envoy itself, which runs in the proxy group the capture
exempts: like a pod's Envoy asking kube-dns, it gets upstream answers only, never a mesh VIP it could not reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger(__name__)

MESH_TTL = 30
MIN_CACHE_S = 5.0
MAX_CACHE_S = 300.0
NEGATIVE_CACHE_S = 30.0
UPSTREAM_TIMEOUT_S = 1.5


def expand_table(table: Any, namespace: str, domain: str = "cluster.local") -> dict[str, tuple[str, ...]]:
    """name -> addresses for every name the table answers (model.nds.NameTable), as seen from ``namespace``."""
    out: dict[str, tuple[str, ...]] = {}
    for host, info in table.table.items():
        ips = tuple(info.ips)
        names = [host, *info.alt_hosts]
        if info.registry == "Kubernetes" and info.shortname and info.namespace:
            names += [f"{info.shortname}.{info.namespace}", f"{info.shortname}.{info.namespace}.svc"]
            if info.namespace == namespace:
                names.append(info.shortname)
        for n in names:
            out.setdefault(n.lower().rstrip("."), ips)
    return out


@dataclass
class DnsStats:
    requests: int = 0  # every query answered (Istio's istio_agent_dns_requests_total)
    mesh_answers: int = 0  # answered from the name table
    local_nxdomain: int = 0  # mesh-domain names not in the table
    forwarded: int = 0  # sent upstream
    upstream_failures: int = 0  # the upstream did not answer (timeout, error, SERVFAIL) or there is none
    cache_hits: int = 0
    stale_answers: int = 0  # served from an expired cache entry because the upstream failed

    def view(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Cached:
    expires: float
    answer: dns.message.Message


@dataclass
class DnsProxy:
    """Answers DNS messages; ``serve`` puts it on UDP and TCP sockets."""

    namespace: str
    upstream: tuple[str, int] | None
    domain: str = "cluster.local"
    mesh_names: bool = True  # False: the proxy's own resolver (forward only)
    names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    has_table: bool = False
    stats: DnsStats = field(default_factory=DnsStats)
    cache: dict[tuple[str, int], _Cached] = field(default_factory=dict)
    # Called with the seconds each upstream exchange took, answered or not (the metrics' histogram).
    on_upstream: Callable[[float], None] | None = None
    _servers: list[Any] = field(default_factory=list)

    def set_table(self, table: Any) -> None:
        self.names = expand_table(table, self.namespace, self.domain)
        self.has_table = True

    # --- answering -----------------------------------------------------------------------------------------

    async def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        self.stats.requests += 1
        if not query.question:
            return _reply(query, dns.rcode.FORMERR).to_wire()
        q = query.question[0]
        name = q.name.to_text(omit_final_dot=True).lower()
        if self.mesh_names:
            local = self._local(query, name, q.rdtype)
            if local is not None:
                return local.to_wire()
        return await self._forward(query, wire, name, q.rdtype)

    def _lookup(self, name: str) -> tuple[str, ...] | None:
        """The table's addresses for ``name``: its own entry, else the most specific wildcard entry above it
        (``*.b.example.com`` before ``*.example.com``); a wildcard covers names of any depth under it."""
        ips = self.names.get(name)
        if ips is not None:
            return ips
        labels = name.split(".")
        for i in range(1, len(labels)):
            ips = self.names.get("*." + ".".join(labels[i:]))
            if ips is not None:
                return ips
        return None

    def _local(self, query: dns.message.Message, name: str, rdtype: int) -> dns.message.Message | None:
        ips = self._lookup(name)
        if ips is not None:
            self.stats.mesh_answers += 1
            resp = _reply(query, dns.rcode.NOERROR, authoritative=True)
            want = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(dns.rdatatype.RdataType(rdtype))
            if rdtype == dns.rdatatype.ANY:
                want = 0
            for ip in ips:
                version = ipaddress.ip_address(ip).version
                if want in (0, version):
                    rtype = dns.rdatatype.A if version == 4 else dns.rdatatype.AAAA
                    resp.answer.append(dns.rrset.from_text(query.question[0].name, MESH_TTL, dns.rdataclass.IN,
                                                           rtype, ip))
            return resp
        if name == self.domain or name.endswith("." + self.domain):
            if not self.has_table:
                return _reply(query, dns.rcode.SERVFAIL)
            self.stats.local_nxdomain += 1
            return _reply(query, dns.rcode.NXDOMAIN, authoritative=True)
        return None

    async def _forward(self, query: dns.message.Message, wire: bytes, name: str, rdtype: int) -> bytes:
        key = (name, int(rdtype))
        now = time.monotonic()
        hit = self.cache.get(key)
        if hit is not None and hit.expires > now:
            self.stats.cache_hits += 1
            return _with_id(hit.answer, query.id)
        answer = None
        if self.upstream is not None:
            started = time.monotonic()
            answer = await self._ask_upstream(wire)
            if self.on_upstream is not None:
                self.on_upstream(time.monotonic() - started)
        if answer is None:
            self.stats.upstream_failures += 1
            if hit is not None:
                self.stats.stale_answers += 1
                return _with_id(hit.answer, query.id)
            return _reply(query, dns.rcode.SERVFAIL).to_wire()
        self.cache[key] = _Cached(now + _cache_seconds(answer), answer)
        return _with_id(answer, query.id)

    async def _ask_upstream(self, wire: bytes) -> dns.message.Message | None:
        assert self.upstream is not None
        self.stats.forwarded += 1
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes] = loop.create_future()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Reply(reply), remote_addr=self.upstream)
        except OSError:
            return None
        try:
            for _ in range(2):
                transport.sendto(wire)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(UPSTREAM_TIMEOUT_S / 2):
                        data = await asyncio.shield(reply)
                        try:
                            answer = dns.message.from_wire(data)
                        except dns.exception.DNSException:
                            return None
                        if answer.rcode() == dns.rcode.SERVFAIL:
                            return None
                        return answer
            return None
        except OSError:
            return None
        finally:
            transport.close()

    # --- sockets -------------------------------------------------------------------------------------------

    async def serve(self, addresses: Iterable[str]) -> list[str]:
        """Listen on UDP and TCP at each ``HOST:PORT``; port 0 picks one free for both. Returns the addresses
        listened on."""
        loop = asyncio.get_running_loop()
        bound = []
        for address in addresses:
            host, _, raw_port = address.rpartition(":")
            want = int(raw_port)
            for attempt in range(20 if want == 0 else 1):
                transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, want))
                port = int(transport.get_extra_info("sockname")[1])
                try:
                    server = await asyncio.start_server(self._tcp, host, port)
                except OSError:
                    transport.close()
                    if want != 0 or attempt == 19:
                        raise
                    continue  # the UDP port chosen by the kernel is taken for TCP: another one
                self._servers += [transport, server]
                bound.append(f"{host}:{port}")
                break
        return bound

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                out = await self.answer(await reader.readexactly(size))
                if out is None:
                    break
                writer.write(len(out).to_bytes(2, "big") + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for s in self._servers:
            s.close()
        self._servers.clear()


def _reply(query: dns.message.Message, rcode: int, *, authoritative: bool = False) -> dns.message.Message:
    resp = dns.message.make_response(query)
    resp.set_rcode(dns.rcode.Rcode(rcode))
    resp.flags |= dns.flags.RA
    if authoritative:
        resp.flags |= dns.flags.AA
    return resp


def _with_id(msg: dns.message.Message, qid: int) -> bytes:
    wire = bytearray(msg.to_wire())
    wire[0:2] = qid.to_bytes(2, "big")
    return bytes(wire)


def _cache_seconds(msg: dns.message.Message) -> float:
    if msg.rcode() == dns.rcode.NXDOMAIN or not msg.answer:
        return NEGATIVE_CACHE_S
    ttl = min(rr.ttl for rr in msg.answer)
    return max(MIN_CACHE_S, min(MAX_CACHE_S, float(ttl)))


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, fut: asyncio.Future[bytes]) -> None:
        self.fut = fut

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.fut.done():
            self.fut.set_result(data)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, proxy: DnsProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        task = asyncio.create_task(self._handle(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, data: bytes, addr: Any) -> None:
        out = await self.proxy.answer(data)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)
