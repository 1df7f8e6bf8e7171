"""The data-plane benchmark's compiled load generator and responder (bench/loadgen/loadgen.cc), and its baseline.

What the numbers of bench/dataplane_overhead.py rest on: the generator counts every scheduled request exactly once
(answered, failed, or dropped at the in-flight bound), reads Content-Length and chunked responses, counts a non-200
as an error, speaks to an explicit proxy with absolute-form request lines, and the bare-Envoy baseline pair
forwards through two real Envoys. Rates and counts are small; no timing is asserted beyond ordering.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import dataplane_overhead as D


@pytest.fixture(scope="module")
def loadgen() -> str:
    if shutil.which("g++") is None:
        pytest.skip("needs g++ (.ci/run installs it)")
    binary, why = D.build_cached(D.LOADGEN_SOURCE, "loadgen")
    assert binary is not None, why
    return binary


@pytest.fixture()
def responder(loadgen: str) -> Iterator[int]:
    port = D.free_port()
    proc = subprocess.Popen([loadgen, "serve", f"127.0.0.1:{port}"])
    try:
        assert D.wait_listening(port, 10, [proc]), f"the responder does not listen on {port}"
        yield port
    finally:
        proc.kill()
        proc.wait()


def _run(loadgen: str, port: int, *extra: str, url: str = "", rate: float = 500, duration: float = 0.2,
         connections: int = 2) -> dict[str, float]:
    out = subprocess.run([loadgen, "run", "--connect", f"127.0.0.1:{port}", "--url", url or f"http://127.0.0.1:{port}/",
                          "--rate", str(rate), "--duration", str(duration), "--connections", str(connections),
                          *extra], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result: dict[str, float] = json.loads(out.stdout)
    assert result["ok"] + result["errors"] + result["dropped"] == result["sent"] == int(rate * duration)
    assert result["unexpected_responses"] == 0
    return result


def test_every_request_answered_by_the_responder(loadgen: str, responder: int) -> None:
    r = _run(loadgen, responder, rate=1000, duration=0.3, connections=4)
    assert (r["ok"], r["errors"], r["dropped"]) == (300, 0, 0)
    assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]


class _ScriptedServer:
    """An HTTP/1.1 keep-alive server answering every request with ``response``, after ``delay`` seconds. With
    ``every`` > 0, each connection's ``every``-th answer ends it: ``end="close"`` sends that answer with
    ``Connection: close`` and closes; ``end="reset"`` sends it as usual, then resets the connection (RST) before the
    next request, without warning, as a server timing out idle connections may."""

    def __init__(self, response: bytes, delay: float = 0.0, every: int = 0, end: str = "close") -> None:
        self.response, self.delay, self.every, self.end, self.port = response, delay, every, end, D.free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                if self.delay:
                    await asyncio.sleep(self.delay)
                answered += 1
                last = self.every and answered % self.every == 0
                if last and self.end == "close":
                    head, _, body = self.response.partition(b"\r\n\r\n")
                    writer.write(head + b"\r\nConnection: close\r\n\r\n" + body)
                    await writer.drain()
                    break
                writer.write(self.response)
                if last:
                    await writer.drain()
                    await asyncio.sleep(0.002)
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()  # RST
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def __enter__(self) -> int:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop).result(10)
        return self.port

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self.server is not None
            self.server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_connection_close_is_honoured(loadgen: str) -> None:
    """``Connection: close`` on an answer: the generator opens a new connection instead of sending on that one,
    so no request fails (Envoy says it while draining a listener)."""
    with _ScriptedServer(OK_EMPTY, every=5, end="close") as port:
        r = _run(loadgen, port, rate=1000, duration=0.5, connections=4)
    assert (r["ok"], r["errors"], r["dropped"]) == (500, 0, 0)


def test_a_reset_connection_costs_its_request_not_the_run(loadgen: str) -> None:
    """A server that resets connections without warning: the run goes on, each request that met a reset counts
    as an error, the others are answered, and every request is accounted for (checked in ``_run``)."""
    with _ScriptedServer(OK_EMPTY, every=3, end="reset") as port:
        r = _run(loadgen, port, rate=500, duration=0.6, connections=2)
    assert r["ok"] >= 150, r  # two of every three requests on a connection get their answer
    assert r["dropped"] == 0


def test_chunked_responses_are_read_to_their_end(loadgen: str) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    with _ScriptedServer(chunked) as port:
        r = _run(loadgen, port)
    assert (r["ok"], r["errors"]) == (100, 0)


def test_a_non_200_answer_is_an_error(loadgen: str) -> None:
    unavailable = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nno\n"
    with _ScriptedServer(unavailable) as port:
        r = _run(loadgen, port)
    assert (r["ok"], r["errors"]) == (0, 100)


def test_requests_past_the_in_flight_bound_are_dropped(loadgen: str) -> None:
    slow = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    with _ScriptedServer(slow, delay=0.05) as port:
        r = _run(loadgen, port, "--max-inflight", "1", rate=200, duration=0.5, connections=1)
    # One connection, 50 ms per answer, 5 ms between due times: at most one in ten can be taken.
    assert r["dropped"] >= 80
    assert 1 <= r["ok"] <= 20


@pytest.mark.envoy
def test_through_the_bare_envoy_pair_as_an_explicit_proxy(loadgen: str, responder: int, tmp_path: Path) -> None:
    from meshplane.agent.envoy import find_envoy

    with D.bare_envoys(tmp_path, ("127.0.0.1", responder), find_envoy()) as (pids, entry):
        assert len(pids) == 2
        port = int(entry.rpartition(":")[2])
        r = _run(loadgen, port, "--proxy", url="http://bench-server:9080/", rate=500, duration=0.4)
        assert (r["ok"], r["errors"], r["dropped"]) == (200, 0, 0)
        for pid in pids:
            assert D.cpu_seconds(pid) > 0


def test_the_responder_serves_others_while_one_peer_does_not_read(responder: int) -> None:
    """A peer that pipelines many requests and reads nothing fills its socket: the responder keeps those answers
    for later and goes on answering other connections (it does not spin on the full one)."""
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    stuck.connect(("127.0.0.1", responder))
    stuck.settimeout(0.5)
    try:
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # as much as the responder takes in 2 s
            try:
                stuck.sendall(request)
            except TimeoutError:
                break
        with socket.create_connection(("127.0.0.1", responder), timeout=5) as other:
            other.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert other.recv(4096).startswith(b"HTTP/1.1 200 OK")
    finally:
        stuck.close()
