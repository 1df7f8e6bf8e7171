"""An SDS server (State-of-the-World over gRPC) that hands one workload's certificate and trust bundle to its Envoy.

Why in ``meshplane.rpc`` and not ``meshplane.xds``: it speaks the xDS protocol, but for one Envoy's own secrets;
it has nothing of the control plane's push pipeline or translation. The agent hosts this server on a local Unix
socket (so the private key never crosses the network and the socket's file mode is the access control), and the
e2e tests host it in-process. Two secrets, with Istio's names: ``default`` (certificate chain + private key) and
``ROOTCA`` (the trust bundle as a validation context); on a gateway also the ``kubernetes://<credentialName>``
secrets its agent fetched from the control plane (:meth:`SdsServer.set_tls_secrets`). :meth:`SdsServer.update`
replaces ``default``/``ROOTCA`` and pushes the new version on every open stream: that is certificate renewal and
root rotation. :meth:`SdsServer.wait_acked` lets a caller sequence a rotation (push the new bundle everywhere, wait
for the ACKs, then the new certificates).

Protocol (xDS SotW): a request whose version and nonce match the last response is an ACK; one with
``error_detail`` is a NACK (logged, the secret is not re-sent until it changes); anything else (first request,
changed names) is answered with the requested secrets we have. Secrets we do not have yet are sent when they
appear (Envoy keeps the listener warming meanwhile). Key material is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from meshplane.rpc._serve import serve

log = logging.getLogger(__name__)

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"


class SdsServer:
    def __init__(self, workload_secret: str = "default", root_secret: str = "ROOTCA") -> None:
        self.workload_secret, self.root_secret = workload_secret, root_secret
        self._secrets: dict[str, secret_pb2.Secret] = {}
        self._versions: dict[str, int] = {}
        self._counter = itertools.count(1)
        self._nonces = itertools.count(1)
        self._streams: set[asyncio.Queue[discovery_pb2.DiscoveryRequest | None]] = set()
        self._acked: dict[str, int] = {}  # secret name -> lowest version ACKed by every stream that asked for it
        self._stream_acks: dict[int, dict[str, int]] = {}
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self._credential_names: set[str] = set()
        self.nacks = 0

    def __repr__(self) -> str:
        return f"SdsServer(secrets={sorted(self._secrets)})"

    # ---- secrets --------------------------------------------------------------------------------------------

    def update(self, *, cert_chain_pem: bytes | None = None, private_key_pem: bytes | None = None,
               trust_bundle_pem: bytes | None = None) -> dict[str, int]:
        """Replace the workload certificate (chain and key together) and/or the trust bundle; push them."""
        out: dict[str, int] = {}
        if cert_chain_pem is not None and private_key_pem is not None:
            s = secret_pb2.Secret(name=self.workload_secret)
            s.tls_certificate.certificate_chain.inline_bytes = cert_chain_pem
            s.tls_certificate.private_key.inline_bytes = private_key_pem
            out[self.workload_secret] = self._set(s)
        if trust_bundle_pem is not None:
            s = secret_pb2.Secret(name=self.root_secret)
            s.validation_context.trusted_ca.inline_bytes = trust_bundle_pem
            out[self.root_secret] = self._set(s)
        for q in list(self._streams):
            q.put_nowait(None)  # wake every stream: it re-sends what changed
        return out

    def set_tls_secrets(self, secrets: dict[str, tuple[bytes, bytes, bytes]]) -> list[str]:
        """A gateway's ``credentialName`` secrets: ``{sds name: (chain, key, ca)}`` (Istio's names:
        ``kubernetes://<name>`` holds chain + key, ``kubernetes://<name>-cacert`` the CA of MUTUAL servers).
        Replaces the previous set (what is gone is dropped); pushes only what changed. Returns the changed names."""
        wanted: dict[str, secret_pb2.Secret] = {}
        for name, (chain, key, ca) in secrets.items():
            if chain and key:
                s = secret_pb2.Secret(name=name)
                s.tls_certificate.certificate_chain.inline_bytes = chain
                s.tls_certificate.private_key.inline_bytes = key
                wanted[name] = s
            if ca:
                v = secret_pb2.Secret(name=f"{name}-cacert")
                v.validation_context.trusted_ca.inline_bytes = ca
                wanted[v.name] = v
        changed = [n for n, sec in wanted.items() if self._secrets.get(n) != sec]
        for n in changed:
            self._set(wanted[n])
        for n in [n for n in self._credential_names if n not in wanted]:
            self._secrets.pop(n, None)
            self._versions.pop(n, None)
        self._credential_names = set(wanted)
        if changed:
            for q in list(self._streams):
                q.put_nowait(None)
        return changed

    def _set(self, secret: secret_pb2.Secret) -> int:
        self._secrets[secret.name] = secret
        v = next(self._counter)
        self._versions[secret.name] = v
        return v

    def _version(self, names: list[str]) -> str:
        return ".".join(str(self._versions.get(n, 0)) for n in names)

    async def wait_acked(self, name: str, version: int, timeout: float = 20.0) -> None:
        """Until every stream subscribed to ``name`` has ACKed ``version`` (or newer); at least one stream."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self._all_acked(name, version))

    def _all_acked(self, name: str, version: int) -> bool:
        subs = [acks for acks in self._stream_acks.values() if name in acks]
        return bool(subs) and all(a[name] >= version for a in subs)

    # ---- gRPC ----------------------------------------------------------------------------------------------

    def generic_handler(self) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        return grpc.method_handlers_generic_handler(SERVICE, {
            "StreamSecrets": grpc.stream_stream_rpc_method_handler(
                self._stream, request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString),
        })

    async def start(self, address: str) -> int:
        """Serve on ``address`` (``unix:/path/sds.sock`` for a sidecar; ``127.0.0.1:0`` in tests)."""
        self._server, port = await serve(self.generic_handler(), address, "SDS server")
        return port

    async def stop(self, grace: float = 0.2) -> None:
        for q in list(self._streams):
            q.put_nowait(None)
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def _stream(self, requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
                      context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        q: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._streams.add(q)
        sid = id(q)
        acks: dict[str, int] = {}
        self._stream_acks[sid] = acks

        async def read() -> None:
            try:
                async for req in requests:
                    q.put_nowait(req)
            finally:
                q.put_nowait(None)
                self._streams.discard(q)

        reader = asyncio.create_task(read())
        names: list[str] = []
        sent: dict[str, int] = {}
        last_nonce = ""
        pending: dict[str, dict[str, int]] = {}  # nonce -> versions sent with it
        try:
            while not reader.done() or not q.empty():
                req = await q.get()
                if req is not None:
                    if req.HasField("error_detail"):
                        self.nacks += 1
                        log.warning("SDS NACK for %s: %s", list(req.resource_names), req.error_detail.message)
                        pending.pop(req.response_nonce, None)
                        continue
                    if req.response_nonce and req.response_nonce in pending:
                        for n, v in pending.pop(req.response_nonce).items():
                            acks[n] = max(acks.get(n, 0), v)
                        async with self._changed:
                            self._changed.notify_all()
                    if req.response_nonce and req.response_nonce != last_nonce:
                        continue  # stale: a newer response is on its way (xDS: ignore)
                    names = sorted(set(req.resource_names))
                    for n in names:
                        acks.setdefault(n, 0)
                elif reader.done() and q.empty():
                    break
                have = [n for n in names if n in self._secrets]
                if all(sent.get(n) == self._versions[n] for n in have) and (req is None or req.response_nonce):
                    continue  # an ACK of what we have, or a wake-up with nothing new for this stream
                if not have:
                    continue
                nonce = str(next(self._nonces))
                resp = discovery_pb2.DiscoveryResponse(version_info=self._version(have), type_url=SECRET_TYPE,
                                                       nonce=nonce)
                for n in have:
                    resp.resources.append(any_pb2.Any(type_url=SECRET_TYPE,
                                                      value=self._secrets[n].SerializeToString()))
                    sent[n] = self._versions[n]
                pending[nonce] = {n: self._versions[n] for n in have}
                last_nonce = nonce
                yield resp
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._streams.discard(q)
            self._stream_acks.pop(sid, None)
