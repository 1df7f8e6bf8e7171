"""Every ACK / NACK / respond decision of the ADS server, in one place: :func:`should_respond`.

Why one function: the xDS protocol's correctness lives in a handful of subtle rules (stale nonces, NACKs, the
re-requests Envoy sends while clusters and listeners warm), and control planes that spread them over the stream
code get them subtly wrong (Istio's ``ShouldRespond`` and go-control-plane's ``process`` follow the same idea).
The function is pure bookkeeping over :class:`WatchedType` (no I/O, no gRPC), so the unit tests drive it with
plain values. References are to the xDS protocol spec (envoyproxy.io/docs/envoy/latest/api-docs/xds_protocol).

Per stream and per type URL a :class:`WatchedType` remembers what Envoy subscribed to, what was sent (version,
nonce, per-resource versions), what Envoy acknowledged, and the last NACK. Requests arrive as a protocol-neutral
:class:`XdsRequest` built from either a State-of-the-World ``DiscoveryRequest`` or a ``DeltaDiscoveryRequest``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

from meshplane.model import xdstypes

WILDCARD_TYPES = frozenset({xdstypes.LISTENER, xdstypes.CLUSTER, xdstypes.NAME_TABLE})


class SyncState(StrEnum):
    """Where one proxy stands for one type, as the management API shows it."""

    NOT_SENT = "NOT_SENT"  # subscribed, nothing sent yet
    SYNCED = "SYNCED"  # the latest response was ACKed
    STALE = "STALE"  # a response was sent and is not yet ACKed (or NACKed)
    NACKED = "NACKED"  # the latest resolved response was rejected; Envoy keeps its last good config


class Verdict(StrEnum):
    INITIAL = "initial"  # first request of this type on this stream (new proxy, or a reconnect)
    SUBSCRIBE = "subscribe"  # the subscribed names changed
    WARMING = "warming"  # Envoy re-requests after a CDS/LDS push; it must be answered
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # carries a nonce that is not the latest: ignored


@dataclass(frozen=True, slots=True)
class NackRecord:
    """A rejected response, kept as data: the management API shows it, nothing raises."""

    type_url: str
    nonce: str
    version: str
    error: str
    at: float  # wall clock (time.time())
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class XdsRequest:
    """One request, State-of-the-World or Delta, reduced to what the decision needs."""

    type_url: str
    delta: bool = False
    nonce: str = ""
    error: str | None = None  # error_detail.message when error_detail is set: a NACK
    version_info: str = ""  # SotW only: the version the client holds
    # SotW: the complete subscription. Requests naming the same resources may carry the very same frozenset
    # (``ads.sotw_request`` shares them by their encoding): an identical object is the cheap "unchanged" case.
    names: frozenset[str] = frozenset()
    subscribe: frozenset[str] = frozenset()  # Delta: names added
    unsubscribe: frozenset[str] = frozenset()  # Delta: names removed
    initial_versions: dict[str, str] = field(default_factory=dict)  # Delta: what the client already has


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    respond: bool
    # Delta only: answer with just these names (newly subscribed); None means "everything subscribed".
    names: frozenset[str] | None = None


@dataclass(slots=True)
class WatchedType:
    """What one stream subscribed to for one type, and where the exchange stands."""

    type_url: str
    delta: bool
    wildcard: bool = False
    # SotW: the request's frozenset itself (shared, never mutated); Delta: a set of this stream, mutated in place.
    names: set[str] | frozenset[str] = field(default_factory=set)
    nonce_sent: str = ""
    version_sent: str = ""  # SotW: version_info of the latest response
    full_version_sent: str = ""  # SotW wildcard types: content of the latest complete set sent
    nonce_acked: str = ""
    version_acked: str = ""
    # Resource versions the client holds as far as we know (optimistic: updated on send, rolled back on NACK).
    sent: dict[str, str] = field(default_factory=dict)
    # Responses in flight: nonce -> (content key, previous versions of the resources it carried; None = absent).
    pending: OrderedDict[str, tuple[str, dict[str, str | None]]] = field(default_factory=OrderedDict)
    # Content keys of responses the client rejected: never sent again as they are.
    nacked_content: set[str] = field(default_factory=set)
    last_nack: NackRecord | None = None
    state: SyncState = SyncState.NOT_SENT
    always_respond: bool = False  # SotW: answer the next matching request even if it looks like an ACK
    names_rev: int = 0  # bumped whenever ``names`` changes (lets callers cache indexes over the names)
    requests: int = 0
    acks: int = 0
    nacks: int = 0
    last_sent_at: float = 0.0
    last_acked_at: float = 0.0

    def record_send(self, nonce: str, version: str, content_key: str, versions: dict[str, str],
                    removed: frozenset[str] = frozenset()) -> None:
        """Bookkeeping for a response about to be written (called by the connection, not by Envoy input)."""
        sent = self.sent
        previous: dict[str, str | None]
        if sent:
            get = sent.get
            previous = {n: get(n) for n in versions}
        else:  # the first response of a stream: nothing to roll back to (built in C, no per-name Python)
            previous = dict.fromkeys(versions)
        for n in removed:
            previous[n] = self.sent.pop(n, None)
        self.sent.update(versions)
        self.pending[nonce] = (content_key, previous)
        self.nonce_sent = nonce
        self.version_sent = version
        self.state = SyncState.STALE
        self.last_sent_at = time.time()


def should_respond(wt: WatchedType | None, req: XdsRequest, *, now: float | None = None) -> tuple[WatchedType,
                                                                                                     Decision]:
    """Decide what one request means and whether it must be answered; update ``wt`` accordingly.

    ``wt`` is None on the first request of this type on the stream; the (new or updated) WatchedType is returned
    with the decision. The rules, in order:

    1. NACK: ``error_detail`` is set (spec: "ACK and NACK semantics"; a NACK carries the nonce of the rejected
       response and the version the client still runs). If the nonce belongs to a response in flight, record
       the NACK (type, nonce, error text, time), roll back the per-resource versions that response carried (the
       client kept its last good config) and remember the response's content so it is never resent as is.
       Never answer a NACK: answering with the same config would loop; the next config change answers it.
       A NACK with an unknown nonce is stale and ignored.
    2. First request of this type on this stream: always answer, even on reconnect (the client's version_info
       or initial_resource_versions describe the previous stream) and even when there is nothing to send
       (spec, Delta: the client waits for a first response to an LDS/CDS wildcard subscription before
       initialisation completes, ``initial_fetch_timeout``, 15 s by default).
    3. Delta: subscription changes apply whatever the nonce (spec "Incremental xDS": the nonce only pairs an
       ACK/NACK with a response); newly subscribed names are answered (with a "removed" entry when they do not
       exist, spec "Knowing When a Requested Resource Does Not Exist"). A nonce of a response in flight is an
       ACK of it and of every older one.
    4. SotW: a nonce that is not the latest sent is stale: ignore the request (spec "Resource updates": "the
       management server should not send a DiscoveryResponse for any DiscoveryRequest that has a stale nonce").
       The latest nonce without error is an ACK. If the names changed, answer (Envoy sends a new subscription
       with the latest nonce). If a CDS/LDS response was pushed since, the client re-requests EDS/RDS with the
       same names, version and nonce while the updated clusters/listeners warm (spec "Resource warming"); that
       request looks like an ACK but must be answered, or warming waits ``initial_fetch_timeout``:
       ``always_respond`` (set by the connection after a CDS/LDS send) answers it once.
    """
    now = time.time() if now is None else now
    delta = wt.delta if wt is not None else req.delta

    if req.error is not None:
        if wt is None or req.nonce not in wt.pending:
            if wt is None:
                wt = _new(req, delta)
            wt.requests += 1
            return wt, Decision(Verdict.STALE, False)
        wt.requests += 1
        wt.nacks += 1
        # Everything older than the rejected response was processed (ACKed or NACKed) before it.
        while wt.pending:
            nonce, (content_key, previous) = wt.pending.popitem(last=False)
            if nonce == req.nonce:
                break
        for name, version in previous.items():
            if version is None:
                wt.sent.pop(name, None)
            else:
                wt.sent[name] = version
        wt.nacked_content.add(content_key)
        wt.last_nack = NackRecord(req.type_url, req.nonce, req.version_info, req.error, now,
                                  tuple(sorted(previous)))
        if not wt.pending:
            wt.state = SyncState.NACKED
        return wt, Decision(Verdict.NACK, False)

    if wt is None:
        wt = _new(req, delta)
        wt.requests += 1
        if delta:
            wt.sent.update(req.initial_versions)
        return wt, Decision(Verdict.INITIAL, True)

    wt.requests += 1
    if wt.delta:
        acked = _ack_pending(wt, req.nonce, now)
        if not isinstance(wt.names, set):
            wt.names = set(wt.names)
        new_names: set[str] = set()
        if "*" in req.subscribe:
            wt.wildcard = True
        if "*" in req.unsubscribe:
            wt.wildcard = False
        for name in req.subscribe - {"*"}:
            if name not in wt.names:
                new_names.add(name)
                wt.names.add(name)
                wt.names_rev += 1
        for name in req.unsubscribe - {"*"}:
            if name in wt.names:
                wt.names.discard(name)
                wt.names_rev += 1
            wt.sent.pop(name, None)  # the client forgets it; resubscribing must send it again
        if new_names or ("*" in req.subscribe):
            return wt, Decision(Verdict.SUBSCRIBE, True, None if "*" in req.subscribe else frozenset(new_names))
        return wt, Decision(Verdict.ACK if acked else Verdict.STALE, False)

    if req.nonce != wt.nonce_sent:
        return wt, Decision(Verdict.STALE, False)
    _ack_pending(wt, req.nonce, now)
    wt.version_acked = req.version_info
    # The common case, an ACK naming what the previous request named, is usually the same frozenset (identity);
    # otherwise the members are compared (the same names in another order are no change).
    if not wt.wildcard and req.names is not wt.names and req.names != wt.names:
        wt.names = req.names
        wt.names_rev += 1
        wt.always_respond = False
        return wt, Decision(Verdict.SUBSCRIBE, True)
    if wt.always_respond:
        wt.always_respond = False
        return wt, Decision(Verdict.WARMING, True)
    return wt, Decision(Verdict.ACK, False)


def _new(req: XdsRequest, delta: bool) -> WatchedType:
    names: set[str] | frozenset[str]
    if delta:
        names = set(req.subscribe - {"*"})
        wildcard = "*" in req.subscribe or (not req.subscribe and req.type_url in WILDCARD_TYPES)
    else:
        names = req.names - {"*"} if "*" in req.names else req.names  # frozen: kept as is, never mutated
        wildcard = req.type_url in WILDCARD_TYPES and (not req.names or "*" in req.names)
    return WatchedType(type_url=req.type_url, delta=delta, wildcard=wildcard, names=names)


def _ack_pending(wt: WatchedType, nonce: str, now: float) -> bool:
    """Mark ``nonce`` and every older response as accepted. False when the nonce is not in flight."""
    if not nonce or nonce not in wt.pending:
        return False
    while wt.pending:
        sent_nonce, _ = wt.pending.popitem(last=False)
        if sent_nonce == nonce:
            break
    wt.acks += 1
    wt.nonce_acked = nonce
    wt.last_acked_at = now
    if not wt.pending:
        wt.state = SyncState.SYNCED
    return True
