"""Validation of an object a user sends, before it is stored: what kube-apiserver plus Istio's webhook would say.

One entry point, :func:`validate`, runs these passes:

1. structural, on the JSON against the kind's schema (:mod:`meshplane.api.schemas`): types, enums, required
   fields, bounds; unknown fields are handled per ``fieldValidation`` (Strict: refused with 400; Warn: dropped
   with a warning; Ignore: dropped silently), and nulls of non-nullable fields are dropped, as kube-apiserver
   prunes CRDs;
2. metadata, as kube-apiserver checks every object (name, namespace, labels, annotations);
3. the typed decode (:func:`meshplane.model.spec.decode_spec`) that everything past admission reads: a value the
   schema admits but that does not read as its field's type (``timeout: 5``, not a duration) is an error naming
   the field, and the field is left absent for the next pass;
4. semantic, per kind, on the typed spec (not the JSON), after Istio's own validation (``pkg/config/validation``,
   which also judges the typed protos) and the ASM documents: the rules see exactly the values translation will
   read (one duration parser, one enum table). Only Secret, a core kind without a typed spec, is judged on JSON.

Decoding and semantic rules run only when the structure is right, as Istio's webhook only sees objects that
passed the CRD schema; every error of a pass is collected, none stops the others. Errors are raised together as
:class:`~meshplane.api.errors.InvalidObject` (422) with one cause per field; warnings are returned, ready for
``Warning:`` headers.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any

from meshplane.api import _asm, _extensions, _networking, _security
from meshplane.api._meta import check_metadata
from meshplane.api._report import Report
from meshplane.api._structural import Node, StructuralCheck, compile_schema
from meshplane.api.errors import FieldCause, InvalidObject, StrictDecodingError
from meshplane.api.kinds import ASM, CORE, EXTENSIONS, MESHPLANE, NETWORKING, SECURITY, TELEMETRY, KindInfo
from meshplane.api.schemas import openapi_schema, spec_schema
from meshplane.model.meshconfig import MESH_CONFIGMAP, MESH_KEY, MeshConfigError, parse_mesh_yaml
from meshplane.model.spec import KINDS, DecodeError, DecodeLog, ObjectMeta, decode_spec, object_meta

__all__ = ["FIELD_VALIDATION_MODES", "validate"]

FIELD_VALIDATION_MODES = ("Strict", "Warn", "Ignore")

TypedRule = Callable[[ObjectMeta, Any, Report], None]
JsonRule = Callable[[dict[str, Any], Report], None]

# Rules on the typed spec: (metadata, the kind's decoded spec class, report).
_TYPED_RULES: dict[tuple[str, str], TypedRule] = {
    (NETWORKING, "VirtualService"): _networking.virtual_service,
    (NETWORKING, "DestinationRule"): _networking.destination_rule,
    (NETWORKING, "Gateway"): _networking.gateway,
    (NETWORKING, "ServiceEntry"): _networking.service_entry,
    (NETWORKING, "WorkloadEntry"): _networking.workload_entry,
    (NETWORKING, "WorkloadGroup"): _networking.workload_group,
    (NETWORKING, "Sidecar"): _networking.sidecar,
    (NETWORKING, "EnvoyFilter"): _networking.envoy_filter,
    (SECURITY, "AuthorizationPolicy"): _security.authorization_policy,
    (SECURITY, "PeerAuthentication"): _security.peer_authentication,
    (SECURITY, "RequestAuthentication"): _security.request_authentication,
    (TELEMETRY, "Telemetry"): _security.telemetry,
    (ASM, "TrafficLabel"): _asm.traffic_label,
    (ASM, "ASMSwimLaneGroup"): _asm.swim_lane_group,
    (ASM, "ASMSwimLane"): _asm.swim_lane,
    (ASM, "ASMHeaderPropagation"): _asm.header_propagation,
    (ASM, "ASMOPAPolicy"): _asm.opa_policy,
    (ASM, "ASMLocalRateLimiter"): _extensions.local_rate_limiter,
    (EXTENSIONS, "WasmPlugin"): _extensions.wasm_plugin,
    (ASM, "EnvoyFilterTemplate"): _extensions.envoy_filter_template,
    (ASM, "EnvoyFilterTemplateBinding"): _extensions.envoy_filter_template_binding,
    (MESHPLANE, "MemberCluster"): _asm.member_cluster,
}

# Core kinds have no typed spec: their rules read the JSON.
_CORE_RULES: dict[tuple[str, str], JsonRule] = {
    (CORE, "Secret"): lambda obj, r: _secret(obj, r),
    (CORE, "ConfigMap"): lambda obj, r: _configmap(obj, r),
}

_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
TLS_SECRET = "kubernetes.io/tls"


def _secret(obj: dict[str, Any], r: Report) -> None:
    """Kubernetes' Secret rules: keys are [-._a-zA-Z0-9]+, ``data`` values base64, kubernetes.io/tls needs
    ``tls.crt`` and ``tls.key``. Messages never quote a value (they are credentials)."""
    keys: set[str] = set()
    for field in ("data", "stringData"):
        values = obj.get(field) or {}
        for key, value in values.items():
            keys.add(key)
            if not _SECRET_KEY.fullmatch(key) or len(key) > 253:
                r.add(f"{field}[{key}]", "FieldValueInvalid",
                      "a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
            if field == "data":
                try:
                    base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError):
                    r.add(f"data[{key}]", "FieldValueInvalid", "illegal base64 data")
    if obj.get("type") == TLS_SECRET:
        for key in ("tls.crt", "tls.key"):
            if key not in keys:
                r.required(f"data[{key}]")

def _configmap(obj: dict[str, Any], r: Report) -> None:
    """Kubernetes' ConfigMap key rules; and the mesh configuration (``istio-system/istio``, key ``mesh``) must be a
    MeshConfig the server can load: refused naming its field, its warnings returned as the API's warnings."""
    for field in ("data", "binaryData"):
        for key, value in (obj.get(field) or {}).items():
            if not _SECRET_KEY.fullmatch(key) or len(key) > 253:
                r.add(f"{field}[{key}]", "FieldValueInvalid",
                      "a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
            if field == "binaryData":
                try:
                    base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError):
                    r.add(f"binaryData[{key}]", "FieldValueInvalid", "illegal base64 data")
    meta = obj.get("metadata") or {}
    if (meta.get("namespace"), meta.get("name")) != MESH_CONFIGMAP:
        return
    mesh = (obj.get("data") or {}).get(MESH_KEY)
    if mesh is None:
        return
    try:
        cfg = parse_mesh_yaml(str(mesh))
    except MeshConfigError as e:
        r.add(f"data[{MESH_KEY}]", "FieldValueInvalid", f"MeshConfig {e}")
        return
    r.warnings.extend(f"data[{MESH_KEY}]: {w}" for w in cfg.warnings)


_ISTIO_GROUPS = (NETWORKING, SECURITY, TELEMETRY)
_DRY_RUN = "istio.io/dry-run"


@functools.cache
def _compiled(info: KindInfo) -> Node:
    return compile_schema(openapi_schema(info))


def _object_name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        name = meta.get("name") or meta.get("generateName") or ""
        return name if isinstance(name, str) else ""
    return ""


def _decode(info: KindInfo, obj: dict[str, Any], report: Report) -> Any:
    """The spec as translation will decode it, every field that does not decode reported (and left absent)."""
    log = DecodeLog()
    try:
        spec = decode_spec(info.group, info.kind, obj.get("spec"), log=log)
    except DecodeError as e:  # the spec itself is not an object: structural validation refuses that first
        log.errors.append(e)
        spec = decode_spec(info.group, info.kind, None)
    for err in log.errors:
        report.undecoded.add(err.path)
        if err.detail:
            report.invalid(err.path, err.value, err.detail)
        else:
            report.add(err.path, "FieldValueInvalid", err.message)
    report.aliases = log.aliases
    report.durations = log.durations
    report.empty = log.empty
    return spec


def _rule_meta(obj: dict[str, Any]) -> ObjectMeta:
    """The metadata rules read; the namespace stays empty when the object names none (the request's namespace is
    filled in later), so ``exportTo: ["."]`` is judged against what the user sent."""
    meta = obj.get("metadata")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    return dataclasses.replace(object_meta(meta if isinstance(meta, dict) else None),
                               namespace=namespace if isinstance(namespace, str) else "")


def validate(info: KindInfo, obj: dict[str, Any], *, field_validation: str = "Warn") -> list[str]:
    """Validate ``obj`` (decoded JSON) as an object of ``info``; return warnings, raise on errors.

    Under Warn and Ignore, unknown fields and nulls are removed from ``obj`` in place.

    :raises StrictDecodingError: unknown fields under ``field_validation="Strict"`` (kube answers 400).
    :raises InvalidObject: every other error, one cause per bad field (kube answers 422).
    :raises ValueError: ``field_validation`` is not one of Strict, Warn, Ignore.
    """
    if field_validation not in FIELD_VALIDATION_MODES:
        modes = ", ".join(FIELD_VALIDATION_MODES)
        raise ValueError(f"fieldValidation must be one of {modes}, not {field_validation!r}")
    if not isinstance(obj, dict):
        raise InvalidObject(info.kind, "", [FieldCause("", "FieldValueTypeInvalid", "the object must be a map")])
    report = Report()
    structural = StructuralCheck(report, prune_unknown=field_validation != "Strict")
    structural.check(_compiled(info), obj, "")
    if structural.unknown and field_validation == "Strict":
        raise StrictDecodingError(structural.unknown)
    if obj.get("spec") is None and spec_schema(info).get("required"):
        report.required("spec", "fields " + ", ".join(spec_schema(info)["required"]) + " are required")
    structure_ok = not report.causes
    check_metadata(obj.get("metadata"), namespaced=info.namespaced, r=report)
    if structure_ok:
        key = (info.group, info.kind)
        if key in KINDS:
            spec = _decode(info, obj, report)
            typed_rule = _TYPED_RULES.get(key)
            if typed_rule is not None:
                typed_rule(_rule_meta(obj), spec, report)
        rule = _CORE_RULES.get(key)
        if rule is not None:
            rule(obj, report)
        if info.group in _ISTIO_GROUPS and info.kind != "AuthorizationPolicy":
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            if _DRY_RUN in annotations:
                report.invalid(f"metadata.annotations[{_DRY_RUN}]", annotations[_DRY_RUN],
                               f"the {_DRY_RUN} annotation is only supported on AuthorizationPolicy")
    if report.causes:
        causes = list(dict.fromkeys(report.causes))
        raise InvalidObject(info.kind, _object_name(obj), causes)
    warnings = [f'unknown field "{p}"' for p in structural.unknown] if field_validation == "Warn" else []
    return warnings + report.warnings
