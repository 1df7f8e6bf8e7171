"""The ACK/NACK/respond rules of ``should_respond``, one rule per test, with plain values (no gRPC, no Envoy)."""

from __future__ import annotations

from meshplane.model import xdstypes
from meshplane.xds.protocol import SyncState, Verdict, WatchedType, XdsRequest, should_respond

EDS, CDS = xdstypes.ENDPOINT, xdstypes.CLUSTER


def _sent(wt: WatchedType, nonce: str, versions: dict[str, str]) -> None:
    wt.record_send(nonce, f"v-{nonce}", f"k-{nonce}", versions)


def test_first_request_is_answered_and_wildcard_inferred() -> None:
    wt, d = should_respond(None, XdsRequest(CDS))
    assert d.respond and d.verdict is Verdict.INITIAL and wt.wildcard
    wt, d = should_respond(None, XdsRequest(EDS, names=frozenset({"a"})))
    assert d.respond and not wt.wildcard and wt.names == {"a"}


def test_reconnect_with_old_nonce_is_answered() -> None:
    _, d = should_respond(None, XdsRequest(CDS, nonce="from-previous-stream", version_info="v7"))
    assert d.respond and d.verdict is Verdict.INITIAL


def test_ack_of_latest_nonce_is_not_answered_and_syncs() -> None:
    wt, _ = should_respond(None, XdsRequest(CDS))
    _sent(wt, "n1", {"c1": "1"})
    assert wt.state is SyncState.STALE
    wt, d = should_respond(wt, XdsRequest(CDS, nonce="n1", version_info="v-n1"))
    assert not d.respond and d.verdict is Verdict.ACK
    assert wt.state is SyncState.SYNCED and wt.version_acked == "v-n1" and wt.acks == 1


def test_stale_nonce_is_ignored() -> None:
    wt, _ = should_respond(None, XdsRequest(EDS, names=frozenset({"a"})))
    _sent(wt, "n1", {"a": "1"})
    _sent(wt, "n2", {"a": "2"})
    wt, d = should_respond(wt, XdsRequest(EDS, nonce="n1", names=frozenset({"a", "b"})))
    assert not d.respond and d.verdict is Verdict.STALE
    assert wt.names == {"a"}, "a stale request does not change the subscription"


def test_sotw_names_change_is_answered() -> None:
    wt, _ = should_respond(None, XdsRequest(EDS, names=frozenset({"a"})))
    _sent(wt, "n1", {"a": "1"})
    wt, d = should_respond(wt, XdsRequest(EDS, nonce="n1", names=frozenset({"a", "b"})))
    assert d.respond and d.verdict is Verdict.SUBSCRIBE and wt.names == {"a", "b"}


def test_sotw_warming_rerequest_after_cds_is_answered_once() -> None:
    wt, _ = should_respond(None, XdsRequest(EDS, names=frozenset({"a"})))
    _sent(wt, "n1", {"a": "1"})
    wt, _ = should_respond(wt, XdsRequest(EDS, nonce="n1", names=frozenset({"a"})))
    wt.always_respond = True  # the connection sets this after sending CDS
    wt, d = should_respond(wt, XdsRequest(EDS, nonce="n1", names=frozenset({"a"})))
    assert d.respond and d.verdict is Verdict.WARMING
    wt, d = should_respond(wt, XdsRequest(EDS, nonce="n1", names=frozenset({"a"})))
    assert not d.respond


def test_nack_is_recorded_rolled_back_and_not_answered() -> None:
    wt, _ = should_respond(None, XdsRequest(CDS))
    _sent(wt, "n1", {"c1": "1"})
    wt, _ = should_respond(wt, XdsRequest(CDS, nonce="n1"))
    _sent(wt, "n2", {"c1": "2", "c2": "1"})
    wt, d = should_respond(wt, XdsRequest(CDS, nonce="n2", error="bad cluster c2", version_info="v-n1"))
    assert not d.respond and d.verdict is Verdict.NACK
    assert wt.state is SyncState.NACKED and wt.nacks == 1
    assert wt.last_nack is not None and wt.last_nack.error == "bad cluster c2" and wt.last_nack.nonce == "n2"
    assert wt.sent == {"c1": "1"}, "the client kept its last good versions"
    assert "k-n2" in wt.nacked_content


def test_nack_with_unknown_nonce_is_ignored() -> None:
    wt, _ = should_respond(None, XdsRequest(CDS))
    _sent(wt, "n1", {"c1": "1"})
    wt, d = should_respond(wt, XdsRequest(CDS, nonce="zzz", error="?"))
    assert d.verdict is Verdict.STALE and wt.nacks == 0 and wt.state is SyncState.STALE


def test_delta_first_wildcard_request_answered_even_if_empty() -> None:
    wt, d = should_respond(None, XdsRequest(CDS, delta=True))
    assert d.respond and wt.delta and wt.wildcard


def test_delta_initial_versions_are_remembered() -> None:
    wt, d = should_respond(None, XdsRequest(EDS, delta=True, subscribe=frozenset({"a"}),
                                            initial_versions={"a": "3"}))
    assert d.respond and wt.sent == {"a": "3"}


def test_delta_subscribe_answers_only_new_names_and_unsubscribe_forgets() -> None:
    wt, _ = should_respond(None, XdsRequest(EDS, delta=True, subscribe=frozenset({"a"})))
    _sent(wt, "n1", {"a": "1"})
    wt, d = should_respond(wt, XdsRequest(EDS, delta=True, nonce="n1", subscribe=frozenset({"a", "b"})))
    assert d.respond and d.names == frozenset({"b"})
    assert wt.state is SyncState.SYNCED, "the nonce acknowledged n1 in the same request"
    wt, d = should_respond(wt, XdsRequest(EDS, delta=True, unsubscribe=frozenset({"a"})))
    assert not d.respond and "a" not in wt.names and "a" not in wt.sent


def test_delta_ack_of_newer_nonce_acks_older_ones() -> None:
    wt, _ = should_respond(None, XdsRequest(EDS, delta=True, subscribe=frozenset({"a"})))
    _sent(wt, "n1", {"a": "1"})
    _sent(wt, "n2", {"a": "2"})
    wt, d = should_respond(wt, XdsRequest(EDS, delta=True, nonce="n2"))
    assert d.verdict is Verdict.ACK and not wt.pending and wt.state is SyncState.SYNCED
