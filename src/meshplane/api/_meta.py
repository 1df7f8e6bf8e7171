"""Checks of ``metadata`` that kube-apiserver applies to every object: name, namespace, labels, annotations."""

from __future__ import annotations

from typing import Any

from meshplane.api import _formats as fmt
from meshplane.api._report import Report

ANNOTATIONS_MAX_BYTES = 256 * 1024


def check_labels(labels: Any, path: str, r: Report) -> None:
    """A label map: qualified-name keys, label values (errors at ``path`` itself, as kube reports them)."""
    if not isinstance(labels, dict):
        return
    for key, value in labels.items():
        err = fmt.qualified_name(key)
        if err:
            r.invalid(path, key, err)
        if isinstance(value, str):
            err = fmt.label_value(value)
            if err:
                r.invalid(path, value, err)


def check_metadata(meta: Any, *, namespaced: bool, r: Report) -> None:
    if not isinstance(meta, dict):
        r.required("metadata")
        return
    name = meta.get("name")
    generate = meta.get("generateName")
    if not name:
        if not generate:
            r.required("metadata.name", "name or generateName is required")
        elif isinstance(generate, str):
            # The server appends a random suffix: a trailing '-' is fine in the prefix.
            err = fmt.dns1123_subdomain(generate + "x")
            if err:
                r.invalid("metadata.generateName", generate, err)
    elif isinstance(name, str):
        err = fmt.dns1123_subdomain(name)
        if err:
            r.invalid("metadata.name", name, err)
    namespace = meta.get("namespace")
    if namespace:
        if not namespaced:
            r.forbidden("metadata.namespace", "not allowed on this type")
        elif isinstance(namespace, str):
            err = fmt.dns1123_label(namespace)
            if err:
                r.invalid("metadata.namespace", namespace, err)
    check_labels(meta.get("labels"), "metadata.labels", r)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        total = 0
        for key, value in annotations.items():
            err = fmt.qualified_name(key.lower())
            if err:
                r.invalid("metadata.annotations", key, err)
            total += len(key.encode()) + (len(value.encode()) if isinstance(value, str) else 0)
        if total > ANNOTATIONS_MAX_BYTES:
            r.too_long("metadata.annotations", ANNOTATIONS_MAX_BYTES)
