"""Semantic rules run on the typed spec: what admission's decode reports, and what the rules see after it."""

from __future__ import annotations

from typing import Any

import pytest
from _api_helpers import assert_cause, causes, ok

from meshplane.model.spec import DecodeLog, HTTPRoute, VirtualService, decode, decode_spec, encode


def _vs(**http: Any) -> dict[str, Any]:
    return {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}], **http}]}


@pytest.mark.parametrize("retries", [{"perTryTimeout": "1s"}, {"retryOn": "5xx"},
                                     {"retryRemoteLocalities": True}, {"attempts": 0, "perTryTimeout": "1s"}])
def test_retry_policy_without_attempts_is_refused(retries: dict[str, Any]) -> None:
    """Istio's attempts is a plain int32 (absent is 0: retries off); its webhook refuses a policy for no retries.
    Translation turns retries off without attempts, so accepting it silently dropped ``perTryTimeout``."""
    found = causes("VirtualService", _vs(retries=retries))
    assert_cause(found, "spec.http[0].retries.attempts", "FieldValueInvalid",
                 "http retry policy configured when attempts are set to 0 (disabled)")


def test_retry_policy_with_attempts_passes() -> None:
    assert ok("VirtualService", _vs(retries={"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx"})) == []


def test_every_undecodable_duration_is_reported_once_and_not_as_missing() -> None:
    found = causes("VirtualService", _vs(timeout="5", fault={"delay": {"fixedDelay": "7"}}))
    fields = [(c.field, c.reason) for c in found]
    assert ("spec.http[0].timeout", "FieldValueInvalid") in fields
    assert ("spec.http[0].fault.delay.fixedDelay", "FieldValueInvalid") in fields
    assert ("spec.http[0].fault.delay.fixedDelay", "FieldValueRequired") not in fields
    assert len(fields) == len(set(fields))


def test_duration_messages_quote_the_text_as_written() -> None:
    found = causes("VirtualService", _vs(timeout="0.0005s"))
    assert_cause(found, "spec.http[0].timeout", "FieldValueInvalid",
                 'Invalid value: "0.0005s": must be a valid duration greater than 1ms')


@pytest.mark.parametrize("key", ["mirror_percent", "mirrorPercent"])
def test_deprecated_alias_is_named_as_spelled(key: str) -> None:
    found = causes("VirtualService", _vs(mirror={"host": "shadow"}, **{key: 150}))
    assert_cause(found, f"spec.http[0].{key}", "FieldValueInvalid", "0..100")


def test_whole_values_in_messages_are_the_typed_object_as_json() -> None:
    found = causes("VirtualService", _vs(fault={"abort": {"httpStatus": 500, "grpcStatus": "UNAVAILABLE"}}))
    assert_cause(found, "spec.http[0].fault.abort", "FieldValueInvalid",
                 'Invalid value: {"grpcStatus":"UNAVAILABLE","httpStatus":500}: only one of')


def test_collecting_decode_keeps_going_and_leaves_bad_fields_absent() -> None:
    log = DecodeLog()
    spec = decode_spec("networking.istio.io", "VirtualService",
                       {"hosts": ["a"], "http": [{"timeout": "x", "retries": {"perTryTimeout": "1s"},
                                                  "mirror_percent": 5}, {"timeout": "y"}]}, log=log)
    assert isinstance(spec, VirtualService)
    assert [e.path for e in log.errors] == ["spec.http[0].timeout", "spec.http[1].timeout"]
    assert spec.http[0].timeout is None and spec.http[0].retries is not None
    assert spec.http[0].retries.per_try_timeout == 10**9
    assert log.aliases == {"spec.http[0].mirror_percent"}
    assert log.durations["spec.http[0].retries.perTryTimeout"] == "1s"


def test_decode_without_a_log_still_stops_at_the_first_bad_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.timeout"):
        decode(HTTPRoute, {"timeout": "x"})


def test_lists_given_empty_keep_istio_presence_rules() -> None:
    """Istio's webhook tells ``rules: []`` / ``from: []`` from absent ones; the typed spec cannot, the decode log
    can: the rules still say what they said on the JSON."""
    assert_cause(causes("AuthorizationPolicy", {"action": "DENY"}), "spec.rules", "FieldValueRequired",
                 "DENY action without rules")
    ok("AuthorizationPolicy", {"action": "DENY", "rules": []})  # given, as it was on the JSON
    assert_cause(causes("AuthorizationPolicy", {"rules": [{"from": []}]}), "spec.rules[0].from",
                 "FieldValueRequired", "must not be empty")
    ok("AuthorizationPolicy", {"rules": [{}]})
    found = causes("Telemetry", {"selector": {"matchLabels": {}}, "targetRefs": [{"kind": "Service", "name": "a"}]})
    assert_cause(found, "spec.targetRefs", "FieldValueForbidden", "only one of selector, targetRef or targetRefs")
    ok("DestinationRule", {"host": "reviews", "trafficPolicy": {"portLevelSettings": []}})
    assert_cause(causes("DestinationRule", {"host": "reviews", "trafficPolicy": {}}), "spec.trafficPolicy",
                 "FieldValueRequired", "at least one field")


def test_encode_is_the_json_of_a_decoded_spec() -> None:
    raw = {"hosts": ["a"], "http": [{"timeout": "1.5s", "mirror_percent": 5, "fault": {"abort": {"percentage":
           {"value": 50}, "httpStatus": 503}}}]}
    spec = decode_spec("networking.istio.io", "VirtualService", raw)
    assert encode(spec) == {"hosts": ["a"], "http": [{"timeout": "1500ms", "mirrorPercent": 5, "fault": {"abort": {
        "percentage": {"value": 50}, "httpStatus": 503}}}]}
