"""SotW requests' resource names: decoded once per distinct encoding and shared (``ads.sotw_request``), and the
cheap "same names as before" case of ``should_respond`` (identity), which must not hide a real change."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from meshplane.model import xdstypes
from meshplane.xds.ads import LastNames, quick_sotw_ack, sotw_request
from meshplane.xds.protocol import Verdict, WatchedType, XdsRequest, should_respond

EDS = xdstypes.ENDPOINT
NAMES = [f"outbound|80||svc-{i}.ns.svc.cluster.local" for i in range(50)]


def _raw(names: list[str], nonce: str = "", version: str = "", error: str | None = None
         ) -> discovery_pb2.DiscoveryRequest:
    raw = discovery_pb2.DiscoveryRequest(type_url=EDS, resource_names=names, response_nonce=nonce,
                                         version_info=version)
    if error is not None:
        raw.error_detail.message = error
    # What gRPC hands the handler: a message decoded from the wire.
    return discovery_pb2.DiscoveryRequest.FromString(raw.SerializeToString())


def _sent(wt: WatchedType, nonce: str) -> None:
    wt.record_send(nonce, f"v-{nonce}", f"k-{nonce}", {n: "1" for n in wt.names})


def test_request_fields_survive_and_equal_names_share_one_set() -> None:
    last: LastNames = {}
    first = sotw_request(_raw(NAMES, nonce="n1", version="v1"), last)
    assert (first.type_url, first.nonce, first.version_info, first.error) == (EDS, "n1", "v1", None)
    assert first.names == frozenset(NAMES)
    again = sotw_request(_raw(NAMES, nonce="n2", version="v2"), last)
    assert again.names is first.names and again.nonce == "n2"
    other_stream = sotw_request(_raw(NAMES), {})
    assert other_stream.names is first.names, "streams naming the same resources share the set"
    nack = sotw_request(_raw(NAMES, nonce="n3", error="bad cluster"), last)
    assert nack.error == "bad cluster" and nack.names is first.names
    assert sotw_request(_raw([], nonce="n4"), last).names == frozenset()


def test_other_order_subset_superset_are_decoded() -> None:
    last: LastNames = {}
    base = sotw_request(_raw(NAMES), last).names
    reordered = sotw_request(_raw(list(reversed(NAMES))), last).names
    assert reordered == base
    subset = sotw_request(_raw(NAMES[:10]), last).names
    assert subset == frozenset(NAMES[:10])
    superset = sotw_request(_raw([*NAMES, "outbound|80||extra"]), last).names
    assert superset == frozenset([*NAMES, "outbound|80||extra"])


def _stream() -> tuple[WatchedType, LastNames]:
    last: LastNames = {}
    wt, d = should_respond(None, sotw_request(_raw(NAMES), last))
    assert d.verdict is Verdict.INITIAL and wt.names == frozenset(NAMES)
    _sent(wt, "n1")
    return wt, last


def test_ack_with_the_same_names_is_an_ack_without_a_new_set() -> None:
    wt, last = _stream()
    names = wt.names
    wt, d = should_respond(wt, sotw_request(_raw(NAMES, nonce="n1", version="v-n1"), last))
    assert d.verdict is Verdict.ACK and not d.respond
    assert wt.names is names and wt.names_rev == 0


def test_ack_with_the_same_names_in_another_order_is_an_ack() -> None:
    wt, last = _stream()
    wt, d = should_respond(wt, sotw_request(_raw(list(reversed(NAMES)), nonce="n1"), last))
    assert d.verdict is Verdict.ACK and not d.respond and wt.names == frozenset(NAMES)
    assert wt.names_rev == 0


def test_subset_and_superset_are_subscriptions() -> None:
    wt, last = _stream()
    wt, d = should_respond(wt, sotw_request(_raw(NAMES[:10], nonce="n1"), last))
    assert d.verdict is Verdict.SUBSCRIBE and d.respond and wt.names == frozenset(NAMES[:10])
    _sent(wt, "n2")
    bigger = [*NAMES, "outbound|80||extra"]
    wt, d = should_respond(wt, sotw_request(_raw(bigger, nonce="n2"), last))
    assert d.verdict is Verdict.SUBSCRIBE and d.respond and wt.names == frozenset(bigger)
    assert wt.names_rev == 2
    _sent(wt, "n3")
    wt, d = should_respond(wt, sotw_request(_raw(bigger, nonce="n3"), last))
    assert d.verdict is Verdict.ACK and not d.respond


def test_same_names_with_a_stale_nonce_or_while_warming_keep_their_rules() -> None:
    wt, last = _stream()
    _sent(wt, "n2")
    wt, d = should_respond(wt, sotw_request(_raw(NAMES[:3], nonce="n1"), last))
    assert d.verdict is Verdict.STALE and wt.names == frozenset(NAMES)
    wt, d = should_respond(wt, sotw_request(_raw(NAMES, nonce="n2"), last))
    assert d.verdict is Verdict.ACK
    wt.always_respond = True  # the connection sets this after sending CDS
    wt, d = should_respond(wt, sotw_request(_raw(NAMES, nonce="n2"), last))
    assert d.verdict is Verdict.WARMING and d.respond


def test_plain_frozensets_still_work() -> None:
    wt, _ = should_respond(None, XdsRequest(EDS, names=frozenset({"a", "b"})))
    _sent(wt, "n1")
    wt, d = should_respond(wt, XdsRequest(EDS, nonce="n1", names=frozenset({"b", "a"})))
    assert d.verdict is Verdict.ACK


def _wire(names: list[str], nonce: str = "", version: str = "", error: str | None = None,
          node: str | None = None) -> bytes:
    raw = discovery_pb2.DiscoveryRequest(type_url=EDS, resource_names=names, response_nonce=nonce,
                                         version_info=version)
    if error is not None:
        raw.error_detail.message = error
    if node is not None:
        raw.node.id = node
    data: bytes = raw.SerializeToString()
    return data


def test_quick_ack_recognizes_exactly_the_unchanged_ack_of_the_latest_response() -> None:
    wt, last = _stream()
    watched = {EDS: wt}
    quick = quick_sotw_ack(_wire(NAMES, nonce="n1", version="v-n1"), watched, last)
    assert quick is not None
    slow = sotw_request(discovery_pb2.DiscoveryRequest.FromString(_wire(NAMES, nonce="n1", version="v-n1")), {})
    assert quick == slow and quick.names is wt.names
    again_with_node = quick_sotw_ack(_wire(NAMES, nonce="n1", version="v-n1", node="sidecar~1"), watched, last)
    assert again_with_node == slow
    wt, d = should_respond(wt, quick)
    assert d.verdict is Verdict.ACK


def test_quick_ack_leaves_everything_else_to_the_decoder() -> None:
    wt, last = _stream()
    watched = {EDS: wt}
    others = [
        _wire(NAMES, nonce="n0", version="v"),  # not the latest nonce
        _wire(NAMES, nonce="n1", version="v", error="rejected"),  # a NACK
        _wire(list(reversed(NAMES)), nonce="n1", version="v"),  # same names, other order
        _wire(NAMES[:-1], nonce="n1", version="v"),  # a subset
        _wire([*NAMES, "outbound|80||extra"], nonce="n1", version="v"),  # a superset
        _wire(NAMES, nonce="n1", version="v")[:-1],  # truncated
        b"\x0a\xff",  # garbage
    ]
    for data in others:
        assert quick_sotw_ack(data, watched, last) is None
    assert quick_sotw_ack(_wire(NAMES, nonce="n1"), {}, last) is None, "a type this stream does not watch"
