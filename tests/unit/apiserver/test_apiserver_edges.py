"""Printer-column paths with list filters, and the protobuf OpenAPI v2 document's wire shape."""

from __future__ import annotations

from meshplane.api.kinds import default_registry
from meshplane.apiserver import kubeproto, openapi_v2
from meshplane.apiserver.tables import evaluate_path

CONNECTED = '.status.conditions[?(@.type=="Connected")].status'


def test_filter_with_dots_inside_brackets() -> None:
    obj = {"status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Connected", "status": "True"}]}}
    assert evaluate_path(obj, CONNECTED) == "True"
    assert evaluate_path({"status": {"conditions": []}}, CONNECTED) is None
    assert evaluate_path(obj, ".status.conditions[?(@.type=='Missing')].status") is None


def test_escaped_dots_name_one_key() -> None:
    obj = {"metadata": {"labels": {"app.kubernetes.io/name": "reviews"}}}
    assert evaluate_path(obj, r".metadata.labels.app\.kubernetes\.io/name") == "reviews"
    assert evaluate_path({"spec": {"a": {"b": 1}}}, ".spec.a.b") == 1


def test_protobuf_document_holds_every_path_and_definition() -> None:
    doc = openapi_v2.document(default_registry())
    wire = kubeproto._fields(openapi_v2.encode(doc))
    assert kubeproto._str(wire, 1) == "2.0"
    paths = kubeproto._fields(kubeproto._bytes(wire, 8)[0])
    names = [kubeproto._str(kubeproto._fields(p), 1) for p in kubeproto._bytes(paths, 2)]
    assert names == list(doc["paths"])
    defs = kubeproto._fields(kubeproto._bytes(wire, 9)[0])
    assert [kubeproto._str(kubeproto._fields(d), 1) for d in kubeproto._bytes(defs, 1)] == list(doc["definitions"])
    vs = "/apis/networking.istio.io/v1/namespaces/{namespace}/virtualservices/{name}"
    item = kubeproto._fields(kubeproto._bytes(kubeproto._fields(kubeproto._bytes(paths, 2)[names.index(vs)]), 2)[0])
    patch_op = kubeproto._fields(kubeproto._bytes(item, 8)[0])  # PathItem.patch
    assert b"fieldValidation" in b"".join(kubeproto._bytes(patch_op, 8))


def test_protobuf_is_chosen_by_accept() -> None:
    assert openapi_v2.wants_protobuf("application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
    assert openapi_v2.wants_protobuf("application/com.github.proto-openapi.spec.v2.v1.0+protobuf, */*")
    assert not openapi_v2.wants_protobuf("application/json")
