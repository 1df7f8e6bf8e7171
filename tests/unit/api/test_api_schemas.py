"""The OpenAPI schemas: structural for every kind, faithful to Istio's fields, loaded without cloudcoil."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _api_helpers import KINDS, REGISTRY

from meshplane.api.schemas import object_meta_schema, openapi_schema

ROOT = Path(__file__).resolve().parents[3]
ALL = sorted(KINDS)


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for k, v in node.get("properties", {}).items():
        out += _walk(v, f"{path}.{k}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("kind", ALL)
def test_schema_is_structural(kind: str) -> None:
    schema = openapi_schema(KINDS[kind])
    text = json.dumps(schema)
    assert "$ref" not in text and "anyOf" not in text and "oneOf" not in text and '"title"' not in text
    assert schema["type"] == "object"
    core = {"Secret": {"type", "data", "stringData", "immutable"}, "ConfigMap": {"data", "binaryData", "immutable"}}
    top = core.get(kind, {"spec", "status"})  # core v1 kinds have no spec
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", *top}
    for path, node in _walk(schema):
        typed = "type" in node or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields")
        assert typed, f"{kind}{path} has no type"
        if node.get("type") != "object":
            assert "properties" not in node, f"{kind}{path}: properties on a non-object"


@pytest.mark.parametrize("kind", [k for k in ALL if k not in ("Secret", "ConfigMap")])  # core v1: no spec
def test_spec_is_described_and_not_empty(kind: str) -> None:
    spec = openapi_schema(KINDS[kind])["properties"]["spec"]
    single = {"EnvoyFilterTemplate"}  # ASM's spec has one field, templates
    assert spec["type"] == "object" and len(spec["properties"]) >= (1 if kind in single else 2)
    assert spec.get("description")
    described = [n for _, n in _walk(spec) if n.get("description")]
    assert len(described) >= 3


def test_istio_status_is_free_form_and_membercluster_status_is_typed() -> None:
    assert openapi_schema(KINDS["VirtualService"])["properties"]["status"]["x-kubernetes-preserve-unknown-fields"]
    conditions = openapi_schema(KINDS["MemberCluster"])["properties"]["status"]["properties"]["conditions"]
    assert set(conditions["items"]["properties"]) == {"type", "status", "reason", "message", "lastTransitionTime"}


def test_every_served_version_is_named() -> None:
    gvks = openapi_schema(KINDS["VirtualService"])["x-kubernetes-group-version-kind"]
    assert [g["version"] for g in gvks] == ["v1", "v1beta1", "v1alpha3"]


def test_object_meta_has_the_standard_fields() -> None:
    props = object_meta_schema()["properties"]
    for name in ("name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation",
                 "creationTimestamp", "deletionTimestamp", "finalizers", "ownerReferences", "managedFields",
                 "generateName"):
        assert name in props
    assert props["labels"]["additionalProperties"] == {"type": "string"}
    assert props["generation"]["type"] == "integer"


def _at(kind: str, dotted: str) -> dict[str, Any]:
    node = openapi_schema(KINDS[kind])
    for part in dotted.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def test_oneof_variants_are_merged_into_one_object() -> None:
    abort = _at("VirtualService", "spec.http.[].fault.abort")
    assert {"httpStatus", "grpcStatus", "http2Error", "percentage"} <= set(abort["properties"])
    assert "required" not in abort  # which one is set is semantic validation's job
    lb = _at("DestinationRule", "spec.trafficPolicy.loadBalancer")
    assert {"simple", "consistentHash", "localityLbSetting", "warmup"} <= set(lb["properties"])
    assert "ROUND_ROBIN" in lb["properties"]["simple"]["enum"]
    body = _at("VirtualService", "spec.http.[].directResponse.body")
    assert body["properties"]["bytes"]["type"] == "string"  # not the "null" of a forbidden variant


def test_types_maps_and_bounds_come_out_right() -> None:
    assert _at("VirtualService", "spec.http.[].timeout")["type"] == "string"  # a duration
    assert _at("VirtualService", "spec.http.[].route.[].weight")["type"] == "integer"
    assert _at("VirtualService", "spec.http.[].fault.abort.percentage.value")["type"] == "number"
    headers = _at("VirtualService", "spec.http.[].match.[].headers")
    assert headers["type"] == "object" and set(headers["additionalProperties"]["properties"]) == {
        "exact", "prefix", "regex"}
    labels = _at("DestinationRule", "spec.subsets.[].labels")
    assert labels["additionalProperties"] == {"type": "string"}
    assert _at("ServiceEntry", "spec.hosts")["maxItems"] == 256
    assert _at("Telemetry", "spec.tracing.[].randomSamplingPercentage")["maximum"] == 100
    assert _at("EnvoyFilter", "spec.configPatches.[].patch.value")["x-kubernetes-preserve-unknown-fields"]
    assert _at("AuthorizationPolicy", "spec.action")["enum"] == ["ALLOW", "DENY", "AUDIT", "CUSTOM"]


def test_deprecated_fields_istio_accepts_are_in_the_schema() -> None:
    assert _at("VirtualService", "spec.http.[].fault.abort.percent")["type"] == "integer"
    assert _at("VirtualService", "spec.http.[].fault.delay.percent")["type"] == "integer"
    assert "mirror_percent" in _at("VirtualService", "spec.http.[]")["properties"]
    assert "mirrorPercent" in _at("VirtualService", "spec.http.[]")["properties"]


def test_every_registered_kind_has_a_schema_of_its_own() -> None:
    for info in REGISTRY:
        if info.kind in ("Secret", "ConfigMap"):  # core v1: data, no spec
            continue
        spec = openapi_schema(info)["properties"]["spec"]
        assert not spec.get("x-kubernetes-preserve-unknown-fields"), info.kind


def test_runtime_does_not_import_cloudcoil() -> None:
    code = ("import sys; from meshplane.api.kinds import builtin_kinds; from meshplane.api.schemas import "
            "openapi_schema; from meshplane.api.validation import validate; "
            "[openapi_schema(k) for k in builtin_kinds()]; "
            "print(any(m.startswith(('cloudcoil', 'pydantic')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_istio_schemas", ROOT / "tools" / "gen_istio_schemas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_turns_pydantic_output_into_structural_schema() -> None:
    gen = _generator()
    raw = {
        "$defs": {
            "A": {"type": "object", "properties": {"x": {"type": "integer", "title": "X"},
                                                    "y": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                  "required": ["x"], "title": "A"},
            "A1": {"type": "object", "properties": {"y": {"type": "string"}, "x": {"type": "null"}},
                   "required": ["y"], "title": "A1"},
        },
        "type": "object",
        "properties": {
            "oneof": {"anyOf": [{"$ref": "#/$defs/A"}, {"$ref": "#/$defs/A1"}, {"type": "null"}],
                      "description": "d", "default": None},
            "ios": {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
            "free": {"type": "object", "additionalProperties": True},
            "labels": {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "null"}]},
            "kind": {"const": "K", "type": "string"},
        },
    }
    out = gen._clean(gen._resolve(raw, raw["$defs"]), "t")
    gen._check_structural(out, "t")
    props = out["properties"]
    assert props["oneof"] == {"type": "object", "description": "d",
                              "properties": {"x": {"type": "integer"}, "y": {"type": "string"}}}
    assert props["ios"] == {"x-kubernetes-int-or-string": True}
    assert props["free"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert props["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert props["kind"] == {"type": "string", "enum": ["K"]}


def test_generator_refuses_variants_that_disagree() -> None:
    gen = _generator()
    with pytest.raises(gen.GenError):
        gen._merge_objects([{"type": "object", "properties": {"a": {"type": "string"}}},
                            {"type": "object", "properties": {"a": {"type": "integer"}}}], "t")


@pytest.mark.skipif(not os.environ.get("MESHPLANE_CHECK_GENERATED"),
                    reason="regenerating from cloudcoil takes ~10 s; set MESHPLANE_CHECK_GENERATED=1")
def test_committed_istio_schemas_match_the_generator() -> None:
    pytest.importorskip("cloudcoil.models.istio")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_istio_schemas.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
