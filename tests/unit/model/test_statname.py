"""model.statname: labels packed into Envoy stat names and peer values, and back."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshplane.model.peer import PEER_ENV, identity_of, peer_environment
from meshplane.model.statname import (
    PEER_FIELDS,
    UNKNOWN,
    decode_name,
    encode_name,
    escape,
    joined,
    peer_value,
    split,
    unescape,
)

ODD = ["", "reviews-v2", "a_b", "__", "_5f", "x.y/z", 'q"uo\\te', "semi;colon", "ünï", "%ENVIRONMENT(X)%", " ", "$self"]


@pytest.mark.parametrize("value", ODD)
def test_escape_keeps_only_what_prometheus_names_allow_and_round_trips(value: str) -> None:
    e = escape(value)
    assert re.fullmatch(r"[A-Za-z0-9_]*", e)
    assert "__" not in e and "%" not in e and ";" not in e
    assert unescape(e) == value


@given(st.text())
def test_escape_round_trips_any_text(value: str) -> None:
    assert unescape(escape(value)) == value


@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=6),
       st.sampled_from(["requests_total", "request_duration_milliseconds", "tcp_sent_bytes_total"]))
def test_names_round_trip(labels: dict[str, str], metric: str) -> None:
    name = encode_name(metric, labels)
    assert re.fullmatch(r"[A-Za-z0-9_]+", name)
    assert decode_name(name) == (metric, labels)


@pytest.mark.parametrize("labels", [{}, {"a": ""}, {"": ""}, {"x": "", "y": "_"}, {v or "k": v for v in ODD}])
def test_empty_and_odd_values_round_trip(labels: dict[str, str]) -> None:
    assert decode_name(encode_name("requests_total", labels)) == ("requests_total", labels)


def test_names_that_are_not_encoded_are_not_decoded() -> None:
    assert decode_name("requests_total") is None  # a stat from before the encoding
    assert decode_name("mfoo") is None
    assert decode_name("ma__requests_total") is None  # an odd number of parts
    with pytest.raises(ValueError, match="metric"):
        encode_name("bad__metric", {})


def test_invalid_escapes_in_a_forged_value_are_kept_as_sent() -> None:
    assert unescape("admin-tool_zz_4") == "admin-tool_zz_4"
    assert split("admin-tool;kube-system", 5) == ["admin-tool", "kube-system", UNKNOWN, UNKNOWN, UNKNOWN]


def test_peer_values_split_into_their_fields() -> None:
    identity = {"workload": "reviews-v2", "namespace": "a;b", "app": "", "version": "v_2", "cluster": "c1"}
    value = peer_value(identity)
    assert value.count(";") == 4
    # an empty field is unknown, as Istio reports a label it cannot know
    assert split(value, 5) == ["reviews-v2", "a;b", UNKNOWN, "v_2", "c1"]
    assert split("-", 5) == [UNKNOWN] * 5 and split("", 3) == [UNKNOWN] * 3
    assert split(joined(["h.svc", "h", "ns"]), 3) == ["h.svc", "h", "ns"]


def test_the_agent_environment_carries_the_identity_as_one_peer_value() -> None:
    md = {"WORKLOAD_NAME": "reviews-v1", "NAMESPACE": "default", "LABELS": {"app": "reviews", "version": "v1"},
          "CLUSTER_ID": "c1"}
    env = peer_environment(md)
    assert split(env[PEER_ENV], len(PEER_FIELDS)) == [identity_of(md)[f] for f in PEER_FIELDS] == [
        "reviews-v1", "default", "reviews", "v1", "c1"]
