"""A real DNS resolver on loopback for tests that need an upstream: UDP, one A record per name it knows.

It answers ``A`` for the names its ``answer`` function maps to an address (TTL 60) and NXDOMAIN for the rest, and
records every question it was asked, so a test can tell what reached the upstream and what was answered before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import dns.message
import dns.rcode
import dns.rrset


class Resolver(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[str], str | None]) -> None:
        self.answer = answer
        self.queries: list[str] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        q = dns.message.from_wire(data)
        name = q.question[0].name.to_text(omit_final_dot=True)
        self.queries.append(name)
        r = dns.message.make_response(q)
        ip = self.answer(name)
        if ip is not None:
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", ip))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(r.to_wire(), addr)


@contextlib.asynccontextmanager
async def resolver(answer: Callable[[str], str | None]) -> AsyncIterator[tuple[Resolver, int]]:
    """A :class:`Resolver` on 127.0.0.1 (a port the kernel picks) and its port; closed on exit."""
    r = Resolver(answer)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: r,
                                                                             local_addr=("127.0.0.1", 0))
    try:
        yield r, int(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()
