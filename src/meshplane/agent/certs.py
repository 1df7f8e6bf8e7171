"""The workload's certificate: key generated here, certificate from the mesh CA, both handed to Envoy over SDS.

Why in the agent: the private key must never leave the instance, so it is generated in this process's memory, sent
to nobody (only a CSR goes to the CA) and reaches Envoy over a Unix socket in the instance's directory (mode 0700
directory: the file system is the access control). Nothing here writes the key to disk or to a log; the status
shows the identity, serial and expiry only.

Lifecycle: :meth:`CertificateManager.obtain` is called before Envoy starts (so its listeners never wait for a
secret); :meth:`CertificateManager.run` then renews at half life (computed from when the certificate arrived, so
the CA's backdating never makes a short-lived certificate look overdue) with a new key each time, and reads the
trust bundle from the API every ``bundle_poll_s``: a changed bundle (root rotation) is pushed to Envoy first,
acknowledged, and after ``rotation_delay_s`` (time for every other workload to pick up the same bundle) the
certificate is re-issued from the new root. A failed request to the CA is retried with backoff while the current
certificate stays in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from meshplane.agent.waits import pause
from meshplane.rpc.ca_service import CaClient
from meshplane.rpc.sds import SdsServer
from meshplane.security import SpiffeId, WorkloadKey

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; leave room
BundleSource = Callable[[], Awaitable[bytes | None]]


def socket_path(preferred: Path) -> tuple[Path, Path | None]:
    """``preferred`` when it fits a Unix socket address, else the same name in a fresh private (0700) temporary
    directory; the second value is that directory (to remove on exit) or None."""
    if len(str(preferred)) <= MAX_SOCKET_PATH:
        preferred.unlink(missing_ok=True)
        return preferred, None
    d = Path(tempfile.mkdtemp(prefix="mp-"))
    return d / preferred.name, d


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateManager:
    def __init__(self, identity: SpiffeId, ca: CaClient, token: str, sds: SdsServer, *, ttl_s: int = 0,
                 bundle: BundleSource | None = None, bundle_poll_s: float = 2.0, rotation_delay_s: float = 5.0
                 ) -> None:
        self.identity = identity
        self._ca = ca
        self._token = token
        self.sds = sds
        self.ttl_s = ttl_s
        self._bundle_source = bundle
        self.bundle_poll_s = bundle_poll_s
        self.rotation_delay_s = rotation_delay_s
        self.serial = ""
        self.not_after: datetime.datetime | None = None
        self.renew_at: datetime.datetime | None = None
        self.bundle = b""
        self.issued = 0
        self.failures = 0
        self.last_error = ""

    def __repr__(self) -> str:
        return f"CertificateManager({self.identity.uri!r}, serial={self.serial!r})"

    def status(self) -> dict[str, Any]:
        """What the agent reports (never key material)."""
        return {"identity": self.identity.uri, "serial": self.serial,
                "notAfter": self.not_after.isoformat(timespec="seconds") if self.not_after else None,
                "issued": self.issued, "caFailures": self.failures, "caError": self.last_error}

    async def issue(self) -> None:
        """A new key, a CSR for our identity, the signed chain: pushed to Envoy with the bundle that came with it."""
        key = WorkloadKey(self.identity)
        chain, bundle = await self._ca.create_certificate(key.csr_pem(), self._token, self.ttl_s)
        if not key.public_key_matches(chain):
            raise RuntimeError("the CA returned a certificate for another key")
        leaf = x509.load_pem_x509_certificate(chain)
        received = _now()
        self.not_after = leaf.not_valid_after_utc
        self.renew_at = received + (self.not_after - received) / 2
        self.serial = f"{leaf.serial_number:x}"
        self.bundle = bundle  # the CA's roots at signing time: the same set the API's trust bundle shows
        self.sds.update(cert_chain_pem=chain, private_key_pem=key.private_key_pem(), trust_bundle_pem=bundle)
        self.issued += 1
        self.last_error = ""
        log.info("certificate for %s serial %s until %s (renew at %s)", self.identity, self.serial,
                 self.not_after.isoformat(timespec="seconds"), self.renew_at.isoformat(timespec="seconds"))

    async def obtain(self, stop: asyncio.Event) -> bool:
        """Issue the first certificate, retrying with backoff until it works or ``stop`` is set."""
        backoff = 0.2
        while not stop.is_set():
            if await self._try_issue():
                return True
            await pause(stop, backoff)
            backoff = min(backoff * 2, 5.0)
        return False

    async def _try_issue(self) -> bool:
        try:
            await self.issue()
            return True
        except Exception as e:  # the CA refused (gRPC status) or is unreachable: keep the current certificate
            self.failures += 1
            details = getattr(e, "details", None)
            self.last_error = f"{type(e).__name__}: {details() if callable(details) else e}"
            log.warning("certificate request for %s failed: %s", self.identity, self.last_error)
            return False

    async def run(self, stop: asyncio.Event) -> None:
        """Renew at half life; follow trust bundle changes (root rotation). Returns when ``stop`` is set."""
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        rotate_at: float | None = None
        retry = 1.0
        while not stop.is_set():
            now = loop.time()
            if self._bundle_source is not None and now >= next_poll:
                next_poll = now + self.bundle_poll_s
                if await self._follow_bundle():
                    rotate_at = loop.time() + self.rotation_delay_s
            due = self.renew_at is not None and _now() >= self.renew_at
            if due or (rotate_at is not None and loop.time() >= rotate_at):
                if await self._try_issue():
                    rotate_at, retry = None, 1.0
                else:
                    self.renew_at = _now() + datetime.timedelta(seconds=retry)
                    retry = min(retry * 2, 30.0)
            waits = [next_poll - loop.time()] if self._bundle_source is not None else []
            if self.renew_at is not None:
                waits.append((self.renew_at - _now()).total_seconds())
            if rotate_at is not None:
                waits.append(rotate_at - loop.time())
            await pause(stop, max(0.05, min(waits, default=1.0)))

    async def _follow_bundle(self) -> bool:
        """Push a changed trust bundle to Envoy and wait for its ACK; True when it changed."""
        assert self._bundle_source is not None
        try:
            bundle = await self._bundle_source()
        except Exception as e:  # the API is away for a moment: keep what we have
            log.debug("trust bundle: %s", e)
            return False
        if not bundle or bundle == self.bundle:
            return False
        log.info("trust bundle changed (%d roots): pushing it, then re-issuing the certificate",
                 bundle.count(b"BEGIN CERTIFICATE"))
        self.bundle = bundle
        versions = self.sds.update(trust_bundle_pem=bundle)
        with contextlib.suppress(TimeoutError):
            await self.sds.wait_acked(self.sds.root_secret, versions[self.sds.root_secret], timeout=10.0)
        return True


async def start_sds(preferred: Path) -> tuple[SdsServer, Path, Path | None]:
    """An SDS server on a Unix socket (``preferred`` or a short private path): (server, socket, temp dir)."""
    path, tmpdir = socket_path(preferred)
    sds = SdsServer()
    await sds.start(f"unix:{path}")
    os.chmod(path, 0o600)
    return sds, path, tmpdir


def remove_dir(d: Path | None) -> None:
    if d is not None:
        shutil.rmtree(d, ignore_errors=True)
