"""Structural validation: unknown fields under Strict/Warn/Ignore, types, enums, required fields, bounds, nulls."""

from __future__ import annotations

from typing import Any

import pytest
from _api_helpers import KINDS, assert_cause, causes, make

from meshplane.api._report import Report
from meshplane.api._structural import StructuralCheck, compile_schema
from meshplane.api.errors import InvalidObject, StrictDecodingError
from meshplane.api.validation import validate

VS = KINDS["VirtualService"]


def _vs(**extra: Any) -> dict[str, Any]:
    spec = {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}], **extra}
    return make("VirtualService", spec)


def test_strict_refuses_unknown_fields_with_full_paths() -> None:
    obj = _vs(spex=1)
    obj["spec"]["http"][0]["rout"] = []
    obj["metadata"]["nmae"] = "x"
    with pytest.raises(StrictDecodingError) as exc:
        validate(VS, obj, field_validation="Strict")
    assert exc.value.unknown_fields == ["metadata.nmae", "spec.http[0].rout", "spec.spex"]
    assert 'unknown field "spec.spex"' in str(exc.value)
    assert 'unknown field "spec.http[0].rout"' in str(exc.value)
    assert "spex" in obj["spec"], "Strict leaves the object alone"


def test_warn_drops_unknown_fields_and_reports_them() -> None:
    obj = _vs(spex=1)
    obj["spec"]["http"][0]["rout"] = []
    warnings = validate(VS, obj, field_validation="Warn")
    assert warnings == ['unknown field "spec.http[0].rout"', 'unknown field "spec.spex"']
    assert "spex" not in obj["spec"] and "rout" not in obj["spec"]["http"][0]
    assert obj["spec"]["hosts"] == ["reviews"]


def test_warn_is_the_default() -> None:
    obj = _vs(spex=1)
    assert validate(VS, obj) == ['unknown field "spec.spex"']


def test_ignore_drops_unknown_fields_silently() -> None:
    obj = _vs(spex=1)
    assert validate(VS, obj, field_validation="Ignore") == []
    assert "spex" not in obj["spec"]


def test_unknown_top_level_field() -> None:
    obj = _vs()
    obj["extra"] = True
    with pytest.raises(StrictDecodingError) as exc:
        validate(VS, obj, field_validation="Strict")
    assert exc.value.unknown_fields == ["extra"]


def test_fields_under_preserve_unknown_are_kept() -> None:
    obj = _vs()
    obj["status"] = {"anything": {"goes": 1}}
    ef = make("EnvoyFilter", {"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {
        "operation": "INSERT_BEFORE", "value": {"name": "envoy.lua", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua", "inlineCode": "x"}}}}]})
    assert validate(VS, obj, field_validation="Strict") == []
    assert validate(KINDS["EnvoyFilter"], ef, field_validation="Strict") == []
    assert ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"] == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua", "inlineCode": "x"}


def test_bad_field_validation_mode() -> None:
    with pytest.raises(ValueError):
        validate(VS, _vs(), field_validation="strict")


def test_unknown_fields_with_errors_under_warn_still_fail() -> None:
    obj = _vs(spex=1)
    obj["spec"]["hosts"] = "reviews"
    with pytest.raises(InvalidObject) as exc:
        validate(VS, obj)
    assert_cause(exc.value.causes, "spec.hosts", "FieldValueTypeInvalid", "must be of type array")


@pytest.mark.parametrize(
    ("spec_patch", "field", "reason", "text"),
    [
        ({"hosts": "reviews"}, "spec.hosts", "FieldValueTypeInvalid",
         'Invalid value: "string": spec.hosts in body must be of type array: "string"'),
        ({"hosts": [1]}, "spec.hosts[0]", "FieldValueTypeInvalid", "must be of type string"),
        ({"http": [{"route": [{"destination": {"host": "r"}, "weight": "80"}]}]}, "spec.http[0].route[0].weight",
         "FieldValueTypeInvalid", "must be of type integer"),
        ({"http": [{"route": [{"destination": {"host": "r"}, "weight": True}]}]}, "spec.http[0].route[0].weight",
         "FieldValueTypeInvalid", '"boolean"'),
        ({"http": [{"route": [{"destination": {"host": "r"}}], "retries": {"retryRemoteLocalities": "yes"}}]},
         "spec.http[0].retries.retryRemoteLocalities", "FieldValueTypeInvalid", "must be of type boolean"),
        ({"http": [{"route": [{"destination": {}}]}]}, "spec.http[0].route[0].destination.host",
         "FieldValueRequired", "Required value"),
        ({"http": [{"route": [{"destination": {"host": "r"}}], "fault": {"abort": {"httpStatus": 500,
          "percentage": {"value": "all"}}}}]}, "spec.http[0].fault.abort.percentage.value",
         "FieldValueTypeInvalid", "must be of type number"),
        ({"http": [None]}, "spec.http[0]", "FieldValueTypeInvalid", "must be of type object"),
    ],
)
def test_structural_errors(spec_patch: dict[str, Any], field: str, reason: str, text: str) -> None:
    spec = {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}], **spec_patch}
    assert_cause(causes("VirtualService", spec), field, reason, text)


def test_enum_and_bounds() -> None:
    found = causes("AuthorizationPolicy", {"action": "PERMIT"})
    assert_cause(found, "spec.action", "FieldValueNotSupported",
                 'Unsupported value: "PERMIT": supported values: "ALLOW", "DENY", "AUDIT", "CUSTOM"')
    found = causes("Telemetry", {"tracing": [{"randomSamplingPercentage": 101}]})
    assert_cause(found, "spec.tracing[0].randomSamplingPercentage", "FieldValueInvalid",
                 "should be less than or equal to 100")
    found = causes("ServiceEntry", {"hosts": [f"h{i}.example.com" for i in range(257)]})
    assert_cause(found, "spec.hosts", "FieldValueTooMany", "must have at most 256 items")
    found = causes("ServiceEntry", {"hosts": []})
    assert_cause(found, "spec.hosts", "FieldValueInvalid", "should have at least 1 items")
    found = causes("ServiceEntry", {"hosts": ["a.example.com"], "addresses": ["1" * 65]})
    assert_cause(found, "spec.addresses[0]", "FieldValueTooLong")


def test_integral_floats_are_integers() -> None:
    spec = {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r", "port": {"number": 9080.0}}}]}]}
    assert validate(VS, make("VirtualService", spec)) == []


def test_nulls_are_pruned_like_kube_apiserver_does() -> None:
    obj = _vs(gateways=None)
    obj["metadata"]["creationTimestamp"] = None
    assert validate(VS, obj, field_validation="Strict") == []
    assert "gateways" not in obj["spec"] and "creationTimestamp" not in obj["metadata"]


def test_null_for_a_required_field_is_missing() -> None:
    spec = {"hosts": ["r"], "http": [{"route": [{"destination": {"host": None}}]}]}
    assert_cause(causes("VirtualService", spec), "spec.http[0].route[0].destination.host", "FieldValueRequired")


def test_all_errors_are_collected() -> None:
    spec = {"hosts": [1, 2], "http": [{"route": [{"destination": {}, "weight": "x"}]}]}
    found = causes("VirtualService", spec)
    assert {c.field for c in found} >= {"spec.hosts[0]", "spec.hosts[1]", "spec.http[0].route[0].weight",
                                        "spec.http[0].route[0].destination.host"}


def test_semantic_rules_wait_for_a_sound_structure() -> None:
    """Like Istio's webhook behind the CRD schema: a type error is reported alone, not with its consequences."""
    spec = {"hosts": "reviews", "http": [{"route": [{"destination": {"host": "r"}, "weight": 30}]}]}
    found = causes("VirtualService", spec)
    assert [c.field for c in found] == ["spec.hosts"]


def test_int_or_string_and_preserve_nodes() -> None:
    node = compile_schema({"type": "object", "properties": {
        "port": {"x-kubernetes-int-or-string": True},
        "blob": {"x-kubernetes-preserve-unknown-fields": True},
        "maybe": {"type": "string", "nullable": True},
    }})
    report = Report()
    check = StructuralCheck(report, prune_unknown=True)
    value = {"port": 8080, "blob": [1, {"a": None}], "maybe": None}
    check.check(node, value, "spec")
    check.check(node, {"port": "http"}, "spec")
    assert report.causes == [] and value["maybe"] is None
    check.check(node, {"port": 1.5}, "spec")
    check.check(node, {"port": True}, "spec")
    assert [c.field for c in report.causes] == ["spec.port", "spec.port"]
    assert all(c.reason == "FieldValueTypeInvalid" for c in report.causes)


def test_spec_is_required_where_the_kind_has_required_fields() -> None:
    obj = make("DestinationRule", {})
    del obj["spec"]
    with pytest.raises(InvalidObject) as exc:
        validate(KINDS["DestinationRule"], obj)
    assert_cause(exc.value.causes, "spec", "FieldValueRequired", "host")
    allow_nothing = make("AuthorizationPolicy", {})
    del allow_nothing["spec"]
    assert validate(KINDS["AuthorizationPolicy"], allow_nothing) == []
