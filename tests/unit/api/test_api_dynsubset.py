"""Admission of ASM's dynamic subsets (DestinationRule ``loadBalancer.dynamicSubset``, VirtualService
``headerToDynamicSubsetKey``), label-variable subsets (``$userdefinelabel1``) and TrafficLabel v1beta1: ASM's
full-link canary sample is accepted as written under Strict validation, and mistakes name their field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshplane.api.errors import InvalidObject
from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate

ASM_DATA = Path(__file__).resolve().parents[2] / "data" / "asm"
REG = default_registry()


def _check(obj: dict[str, Any]) -> list[str]:
    group, _, _ = str(obj["apiVersion"]).rpartition("/")
    info = REG.by_kind(group, obj["kind"])
    assert info is not None, obj["kind"]
    return validate(info, obj, field_validation="Strict")


def _fields(obj: dict[str, Any]) -> set[str]:
    with pytest.raises(InvalidObject) as e:
        _check(obj)
    return {c.field for c in e.value.causes}


def test_full_link_canary_sample_is_accepted_as_written() -> None:
    for obj in yaml.safe_load_all((ASM_DATA / "full-link-canary.yaml").read_text()):
        before = yaml.safe_dump(obj)
        assert _check(obj) == [], obj["metadata"]["name"]
        assert yaml.safe_dump(obj) == before, "nothing pruned"


def _dr(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "b", "namespace": "default"}, "spec": {"host": "mockb", **spec}}


def _lb(dynamic: dict[str, Any]) -> dict[str, Any]:
    return {"trafficPolicy": {"loadBalancer": {"dynamicSubset": dynamic}}}


def test_dynamic_subset_rules() -> None:
    assert _check(_dr(_lb({"subsetSelectors": [{"keys": ["stage", "version"]}]}))) == []
    assert _fields(_dr(_lb({}))) == {"spec.trafficPolicy.loadBalancer.dynamicSubset.subsetSelectors"}
    assert _fields(_dr(_lb({"subsetSelectors": [{"keys": ["version"]}], "fallbackPolicy": "SOMEWHERE"}))) == {
        "spec.trafficPolicy.loadBalancer.dynamicSubset.fallbackPolicy"}
    assert _fields(_dr(_lb({"subsetSelectors": [{"keys": ["version"]}], "fallbackPolicy": "DEFAULT_SUBSET"}))) == {
        "spec.trafficPolicy.loadBalancer.dynamicSubset.defaultSubset"}
    assert _fields(_dr(_lb({"subsetSelectors": [{"keys": ["bad key!"]}]}))) == {
        "spec.trafficPolicy.loadBalancer.dynamicSubset.subsetSelectors[0].keys[0]"}
    # Only at the rule's top level: a subset's or a port's policy cannot regroup the endpoints.
    sub = _dr({"subsets": [{"name": "v1", "labels": {"version": "v1"},
                            **_lb({"subsetSelectors": [{"keys": ["version"]}]})}]})
    assert _fields(sub) == {"spec.subsets[0].trafficPolicy.loadBalancer.dynamicSubset"}


def test_label_variable_subset_rules() -> None:
    ok = {"name": "$userdefinelabel1", "labels": {"version": "$userdefinelabel1"}}
    assert _check(_dr({"subsets": [ok]})) == []
    assert _fields(_dr({"subsets": [{"name": "$userdefinelabel1", "labels": {"version": "$other"}}]})) == {
        "spec.subsets[0].labels[version]"}
    assert _fields(_dr({"subsets": [ok], **_lb({"subsetSelectors": [{"keys": ["version"]}]})})) == {
        "spec.subsets[0].name"}
    assert _fields(_dr({"subsets": [{**ok, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]})) == {
        "spec.subsets[0].trafficPolicy"}


def _vs(http: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "b", "namespace": "default"}, "spec": {"hosts": ["mockb"], "http": [http]}}


def test_header_to_dynamic_subset_key_rules() -> None:
    route = [{"destination": {"host": "mockb"}}]
    keys = [{"header": "x-version", "key": "version"}, {"header": "x-stage", "key": "stage", "defaultValue": "prod"}]
    assert _check(_vs({"headerToDynamicSubsetKey": keys, "route": route})) == []
    assert _fields(_vs({"headerToDynamicSubsetKey": [{"header": "bad header", "key": "version"}],
                        "route": route})) == {"spec.http[0].headerToDynamicSubsetKey[0].header"}
    assert _fields(_vs({"headerToDynamicSubsetKey": [keys[0], {"header": "X-Version", "key": "v"}],
                        "route": route})) == {"spec.http[0].headerToDynamicSubsetKey[1].header"}
    assert "spec.http[0].headerToDynamicSubsetKey" in _fields(_vs({"headerToDynamicSubsetKey": keys,
                                                                    "redirect": {"uri": "/x"}}))


def test_traffic_label_v1beta1_sources() -> None:
    tl = {"apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "TrafficLabel",
          "metadata": {"name": "t", "namespace": "default"},
          "spec": {"rules": [{"labels": [{"name": "l1", "valueFrom": ["$getContext(x-request-id)", "$localLabel"]}]}]}}
    assert _check(tl) == []
    # ASM's full-link canary articles spell it $(localLabel)
    tl["spec"]["rules"][0]["labels"][0]["valueFrom"] = ["$getContext(x-request-id)", "$(localLabel)"]
    assert _check(tl) == []
    tl["spec"]["rules"][0]["labels"][0]["valueFrom"] = ["$(otherLabel)"]
    assert _fields(tl) == {"spec.rules[0].labels[0].valueFrom[0]"}
    tl["spec"]["rules"][0]["labels"][0]["valueFrom"] = ["$getContext(x-request-id)", "$localLabel"]
    tl["spec"]["rules"][0]["protocols"] = "tcp"
    tl["spec"]["rules"][0]["attachTo"] = ["opentracing", "skywalking"]
    assert [w.split(":")[0] for w in _check(tl)] == ["spec.rules[0].attachTo[1]", "spec.rules[0].protocols"]
    tl["spec"]["rules"][0]["labels"][0]["valueFrom"] = ["$getContext(x-request-id, extra)"]
    assert _fields(tl) == {"spec.rules[0].labels[0].valueFrom[0]"}


@pytest.mark.parametrize("field_validation", ["Strict", "Warn", "Ignore"])
@pytest.mark.parametrize(("key", "value"), [("hosts", ["productpage"]), ("http", [{"name": "x"}]),
                                            ("overwrite", True)])
def test_traffic_label_fields_without_semantics_are_refused_by_name(key: str, value: Any,
                                                                    field_validation: str) -> None:
    """hosts / http / overwrite: refused naming the field whatever the field validation, never pruned silently."""
    tl = {"apiVersion": "istio.alibabacloud.com/v1beta1", "kind": "TrafficLabel",
          "metadata": {"name": "t", "namespace": "default"},
          "spec": {key: value, "rules": [{"labels": [{"name": "l1", "valueFrom": ["$localLabel"]}]}]}}
    info = REG.by_kind("istio.alibabacloud.com", "TrafficLabel")
    assert info is not None
    with pytest.raises(InvalidObject) as e:
        validate(info, tl, field_validation=field_validation)
    assert {c.field for c in e.value.causes} == {f"spec.{key}"}


def test_label_variable_subsets_only_in_http_route_destinations() -> None:
    dest = {"host": "mockb", "subset": "$userdefinelabel1"}
    assert _check(_vs({"route": [{"destination": dest}]})) == []
    assert _fields(_vs({"route": [{"destination": {"host": "mockb"}}], "mirror": dest})) == {
        "spec.http[0].mirror.subset"}
    assert _fields(_vs({"route": [{"destination": dest, "fallback": {"target": {"host": "mockb", "subset": "v1"}}}]
                        })) == {"spec.http[0].route[0].fallback"}
    assert _fields(_vs({"route": [{"destination": {"host": "mockb", "subset": "v2"},
                                   "fallback": {"target": dest}}]})) == {"spec.http[0].route[0].fallback.target.subset"}
    tcp = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "b", "namespace": "default"},
           "spec": {"hosts": ["mockb"], "tcp": [{"route": [{"destination": dest}]}]}}
    assert _fields(tcp) == {"spec.tcp[0].route[0].destination.subset"}
