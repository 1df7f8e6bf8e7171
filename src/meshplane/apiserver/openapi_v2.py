"""The OpenAPI v2 (Swagger 2.0) document at ``/openapi/v2``, in JSON and in the gnostic protobuf kubectl asks for.

Why it exists: with its default ``--validate=strict``, kubectl asks ``/openapi/v3`` whether the server validates
fields of a kind (the ``fieldValidation`` parameter of its PATCH operation). For a kind the server does not know at
all (a typo, a ``Deployment``, an ``HTTPRoute``) v3 has no answer, so kubectl falls back to the v2 document, decoded
as protobuf (``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``). Without one it stops with "failed to
download openapi" instead of reaching the error a real cluster gives ("no matches for kind ... ensure CRDs are
installed first"). With one, a kind missing from it is not validated client-side and kubectl goes on to its mapping.

The document lists the operations of every served kind (with the same query parameters as v3, so older kubectl
releases that read only v2 also see that the server validates) and one definition per kind carrying
``x-kubernetes-group-version-kind``. Definitions carry no properties: the server validates (Strict, Warn), and a
property-less schema is "arbitrary" to kubectl's v2 validator, so nothing is checked twice against a weaker copy.

The protobuf encoder covers exactly the subset of gnostic's ``openapi.v2.Document`` this module emits (field numbers
from gnostic's OpenAPIv2.proto); vendor extensions go as YAML strings, as gnostic writes them.
"""

from __future__ import annotations

import json
from typing import Any

from meshplane.api.kinds import KindRegistry
from meshplane.apiserver.openapi import schema_name

PROTO_ACCEPT = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
PROTO_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

_QUERY_NAMES = ("dryRun", "fieldManager", "fieldValidation")


def wants_protobuf(accept: str) -> bool:
    """kube-openapi answers protobuf for either spelling of the protobuf media type, JSON otherwise."""
    a = accept.replace(" ", "")
    return any(t in a for t in ("com.github.proto-openapi.spec.v2@v1.0+protobuf",
                                "com.github.proto-openapi.spec.v2.v1.0+protobuf"))


def _query(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "type": "string", "uniqueItems": True} for n in names]


def _op(action: str, gvk: dict[str, str], ok: dict[str, Any], params: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk}
    if params:
        out["parameters"] = params
    out["responses"] = ok
    return out


def document(registry: KindRegistry) -> dict[str, Any]:
    """The Swagger 2.0 document of every kind in ``registry``, in every version it is served in."""
    paths: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    for info in registry:
        for version in info.versions:
            name = schema_name(info, version)
            gvk = {"group": info.group, "version": version, "kind": info.kind}
            definitions[name] = {
                "description": f"{info.kind} ({info.api_version(version)}); validated by the server",
                "x-kubernetes-group-version-kind": [gvk],
            }
            ref = {"$ref": f"#/definitions/{name}"}
            ok = {"200": {"description": "OK", "schema": ref}}
            body = {"name": "body", "in": "body", "required": True, "schema": ref}
            base = f"/apis/{info.group}/{version}" if info.group else f"/api/{version}"
            coll = f"{base}/namespaces/{{namespace}}/{info.plural}" if info.namespaced else f"{base}/{info.plural}"

            writes = [body, *_query(_QUERY_NAMES)]
            paths[coll] = {"get": _op("list", gvk, ok, []), "post": _op("post", gvk, ok, writes)}
            item = {
                "get": _op("get", gvk, ok, []),
                "put": _op("put", gvk, ok, writes),
                "patch": {
                    **_op("patch", gvk, ok, [body, *_query((*_QUERY_NAMES, "force"))]),
                    "consumes": ["application/json-patch+json", "application/merge-patch+json",
                                 "application/apply-patch+yaml"],
                },
                "delete": _op("delete", gvk, ok, []),
            }
            paths[f"{coll}/{{name}}"] = item
    return {
        "swagger": "2.0",
        "info": {"title": "meshplane", "version": "v2"},
        "paths": paths,
        "definitions": definitions,
    }


# ---- protobuf (gnostic openapi.v2) --------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _str(field: int, s: str) -> bytes:
    return _bytes(field, s.encode()) if s else b""


def _bool(field: int, v: bool) -> bytes:
    return _varint(field << 3) + b"\x01" if v else b""


def _named_any(name: str, value: Any) -> bytes:
    # Any{yaml = 2}: JSON is YAML, and it is what gnostic itself writes for a scalar or a map.
    return _str(1, name) + _bytes(2, _str(2, json.dumps(value, sort_keys=True)))


def _extensions(field: int, obj: dict[str, Any]) -> bytes:
    return b"".join(_bytes(field, _named_any(k, v)) for k, v in obj.items() if k.startswith("x-"))


def _schema(s: dict[str, Any]) -> bytes:
    out = _str(1, s.get("$ref", "")) + _str(4, s.get("description", ""))
    if "type" in s:
        out += _bytes(22, _str(1, s["type"]))
    return out + _extensions(31, s)


def _parameter(p: dict[str, Any]) -> bytes:
    if p["in"] == "body":
        body = _str(2, p["name"]) + _str(3, "body") + _bool(4, p.get("required", False))
        param = _bytes(1, body + _bytes(5, _schema(p["schema"])))
    else:  # QueryParameterSubSchema inside NonBodyParameter
        q = _str(2, "query") + _str(4, p["name"]) + _str(6, p["type"]) + _bool(20, p.get("uniqueItems", False))
        param = _bytes(2, _bytes(3, q))
    return _bytes(1, param)  # ParametersItem{parameter = 1}


def _operation(o: dict[str, Any]) -> bytes:
    out = b"".join(_str(7, c) for c in o.get("consumes", []))
    out += b"".join(_bytes(8, _parameter(p)) for p in o.get("parameters", []))
    codes = b""
    for code, r in o.get("responses", {}).items():
        response = _str(1, r["description"]) + (_bytes(2, _bytes(1, _schema(r["schema"]))) if "schema" in r else b"")
        codes += _bytes(1, _str(1, code) + _bytes(2, _bytes(1, response)))
    out += _bytes(9, codes)
    return out + _extensions(13, o)


_PATH_FIELDS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}


def encode(doc: dict[str, Any]) -> bytes:
    """``doc`` (as built by ``document``) as a serialized ``openapi.v2.Document``."""
    info = doc["info"]
    out = _str(1, doc["swagger"]) + _bytes(2, _str(1, info["title"]) + _str(2, info["version"]))
    paths = b""
    for path, item in doc["paths"].items():
        body = b"".join(_bytes(_PATH_FIELDS[m], _operation(o)) for m, o in item.items())
        paths += _bytes(2, _str(1, path) + _bytes(2, body))
    out += _bytes(8, paths)
    defs = b"".join(_bytes(1, _str(1, n) + _bytes(2, _schema(s))) for n, s in doc["definitions"].items())
    return out + _bytes(9, defs)

