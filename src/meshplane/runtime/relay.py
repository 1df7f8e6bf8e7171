"""The control plane and upstream DNS as seen from the instances' network namespaces.

Why a relay: the control plane listens on the host's loopback (``127.B.0.1``), which no namespace can reach, and
it must stay there (nothing of the mesh is exposed on a routable address). The supervisor therefore listens on the
bridge's host address (``10.B.0.1``, reachable only from the namespaces on that bridge) and splices each TCP
connection to the same port on ``127.B.0.1``: the Kubernetes-compatible API, ADS and the CA. Agents use these
addresses; Envoy's xDS stream is one long-lived spliced connection. DNS queries the agents forward upstream
arrive on ``10.B.0.1:53`` (UDP) and are sent to the upstream resolver from the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import cast

log = logging.getLogger("meshplane.runtime.relay")

_CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


class TcpRelay:
    """Listens on ``listen_host`` at each port and splices every connection to ``target_host`` at that port."""

    def __init__(self, listen_host: str, target_host: str, ports: Iterable[int]) -> None:
        self.listen_host = listen_host
        self.target_host = target_host
        self.ports = tuple(ports)
        self.servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for port in self.ports:
            self.servers.append(await asyncio.start_server(self._handler(port), self.listen_host, port))

    def _handler(self, port: int):  # type: ignore[no-untyped-def]
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                up_r, up_w = await asyncio.open_connection(self.target_host, port)
            except OSError:
                writer.close()
                return
            try:
                await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            finally:
                for w in (writer, up_w):
                    w.close()
                if task is not None:
                    self._tasks.discard(task)
        return handle

    async def stop(self) -> None:
        for s in self.servers:
            s.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in self.servers:
            with contextlib.suppress(Exception):
                await s.wait_closed()
        self.servers.clear()


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, reply: asyncio.Future[bytes]) -> None:
        self.reply = reply

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)


class _DnsListen(asyncio.DatagramProtocol):
    def __init__(self, relay: DnsRelay) -> None:
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        task = asyncio.ensure_future(self.relay.forward(data, addr, self))
        self.relay.tasks.add(task)
        task.add_done_callback(self.relay.tasks.discard)


class DnsRelay:
    """UDP on ``listen`` (HOST, PORT) forwarded to ``upstream`` (HOST, PORT); the answer goes back as it came."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], timeout_s: float = 3.0) -> None:
        self.listen = listen
        self.upstream = upstream
        self.timeout_s = timeout_s
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _DnsListen(self), local_addr=self.listen)
        self.transport = transport

    async def forward(self, data: bytes, addr: tuple[str | object, int], listener: _DnsListen) -> None:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[bytes] = loop.create_future()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Upstream(reply), remote_addr=self.upstream)
        except OSError:
            return
        try:
            transport.sendto(data)
            async with asyncio.timeout(self.timeout_s):
                answer = await reply
            if listener.transport is not None:
                listener.transport.sendto(answer, addr)
        except (TimeoutError, OSError):
            pass
        finally:
            transport.close()

    async def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def host_resolver(path: str = "/etc/resolv.conf") -> tuple[str, int] | None:
    """The first nameserver of the host's resolv.conf."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            return parts[1], 53
    return None
