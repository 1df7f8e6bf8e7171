"""Validation of an object a user sends, before it is stored: what kube-apiserver plus Istio's webhook would say.

One entry point, :func:`validate`, runs three passes over the decoded JSON:

1. structural, against the kind's schema (:mod:`meshplane.api.schemas`): types, enums, required fields, bounds;
   unknown fields are handled per ``fieldValidation`` (Strict: refused with 400; Warn: dropped with a warning;
   Ignore: dropped silently), and nulls of non-nullable fields are dropped, as kube-apiserver prunes CRDs;
2. metadata, as kube-apiserver checks every object (name, namespace, labels, annotations);
3. semantic, per kind, after Istio's own validation (``pkg/config/validation``) and the ASM documents;
4. the typed decode (:func:`meshplane.model.spec.decode_spec`) that everything past admission reads, so an
   object that is stored decodes, with the values validation saw (one duration parser, one enum table).

Semantic rules run only when the structure is right, as Istio's webhook only sees objects that passed the CRD
schema; every error of a pass is collected, none stops the others. Errors are raised together as
:class:`~meshplane.api.errors.InvalidObject` (422) with one cause per field; warnings are returned, ready for
``Warning:`` headers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable
from typing import Any

from meshplane.api import _asm, _networking, _security
from meshplane.api._meta import check_metadata
from meshplane.api._report import Report
from meshplane.api._structural import Node, StructuralCheck, compile_schema
from meshplane.api.errors import FieldCause, InvalidObject, StrictDecodingError
from meshplane.api.kinds import ASM, CORE, MESHPLANE, NETWORKING, SECURITY, TELEMETRY, KindInfo
from meshplane.api.schemas import openapi_schema, spec_schema
from meshplane.model.spec import KINDS, DecodeError, decode_spec

__all__ = ["FIELD_VALIDATION_MODES", "validate"]

FIELD_VALIDATION_MODES = ("Strict", "Warn", "Ignore")

Rule = Callable[[dict[str, Any], Report], None]

_RULES: dict[tuple[str, str], Rule] = {
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
    (MESHPLANE, "MemberCluster"): _asm.member_cluster,
    (CORE, "Secret"): lambda obj, r: _secret(obj, r),
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
        rule = _RULES.get((info.group, info.kind))
        if rule is not None:
            rule(obj, report)
        if info.group in _ISTIO_GROUPS and info.kind != "AuthorizationPolicy":
            annotations = (obj.get("metadata") or {}).get("annotations") or {}
            if _DRY_RUN in annotations:
                report.invalid(f"metadata.annotations[{_DRY_RUN}]", annotations[_DRY_RUN],
                               f"the {_DRY_RUN} annotation is only supported on AuthorizationPolicy")
    if not report.causes and (info.group, info.kind) in KINDS:
        # The last pass is the decode translation will do: what is stored always decodes, with the same values.
        try:
            decode_spec(info.group, info.kind, obj.get("spec"))
        except DecodeError as e:
            report.add(e.path, "FieldValueInvalid", e.message)
    if report.causes:
        causes = list(dict.fromkeys(report.causes))
        raise InvalidObject(info.kind, _object_name(obj), causes)
    warnings = [f'unknown field "{p}"' for p in structural.unknown] if field_validation == "Warn" else []
    return warnings + report.warnings
