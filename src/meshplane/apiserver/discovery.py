"""API discovery documents: aggregated (apidiscovery.k8s.io/v2, what kubectl 1.26+ asks for) and legacy
(APIGroupList / APIResourceList, what older clients ask for), plus the core group: namespaces, secrets, configmaps.

Both forms are derived from the one kind registry, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any

from meshplane.api.kinds import KindInfo, KindRegistry
from meshplane.apiserver import workloads

AGGREGATED_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_TYPE_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
NAMESPACE_VERBS = ["create", "delete", "get", "list", "watch"]


def wants_aggregated(accept: str) -> str | None:
    """The aggregated discovery content type to answer with, or None for the legacy form."""
    for part in accept.split(","):
        p = part.replace(" ", "")
        if "as=APIGroupDiscoveryList" in p and "g=apidiscovery.k8s.io" in p:
            return AGGREGATED_TYPE if "v=v2;" in p + ";" or p.endswith("v=v2") else AGGREGATED_TYPE_V2BETA1
    return None


def _aggregated_resource(info: KindInfo, version: str) -> dict[str, Any]:
    return {
        "resource": info.plural,
        "singularResource": info.singular,
        "scope": "Namespaced" if info.namespaced else "Cluster",
        "shortNames": list(info.short_names),
        "categories": list(info.categories),
        "verbs": VERBS,
        "responseKind": {"group": info.group, "version": version, "kind": info.kind},
        "subresources": [
            {
                "subresource": "status",
                "responseKind": {"group": info.group, "version": version, "kind": info.kind},
                "verbs": ["get", "patch", "update"],
            }
        ],
    }


def aggregated_apis(registry: KindRegistry, content_type: str) -> dict[str, Any]:
    items = []
    for group, versions in registry.groups().items():
        if not group:
            continue
        vlist = []
        for v in versions:
            resources = [_aggregated_resource(k, v) for k in registry if k.group == group and v in k.versions]
            vlist.append({"version": v, "resources": resources, "freshness": "Current"})
        items.append({"metadata": {"name": group}, "versions": vlist})
    for group, versions in workloads.groups().items():
        vlist = [
            {"version": v, "resources": [_aggregated_workload(k) for k in workloads.in_group(group, v)],
             "freshness": "Current"}
            for v in versions
        ]
        items.append({"metadata": {"name": group}, "versions": vlist})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": _api_version(content_type), "metadata": {}, "items": items}


def _aggregated_workload(k: workloads.WorkloadKind) -> dict[str, Any]:
    return {
        "resource": k.plural,
        "singularResource": k.singular,
        "scope": "Namespaced",
        "shortNames": list(k.short_names),
        "verbs": workloads.VERBS,
        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
    }


def _legacy_workload(k: workloads.WorkloadKind) -> dict[str, Any]:
    return {"name": k.plural, "singularName": k.singular, "namespaced": True, "kind": k.kind,
            "verbs": workloads.VERBS, "shortNames": list(k.short_names)}


def aggregated_core(content_type: str) -> dict[str, Any]:
    ns = {
        "resource": "namespaces",
        "singularResource": "namespace",
        "scope": "Cluster",
        "shortNames": ["ns"],
        "verbs": NAMESPACE_VERBS,
        "responseKind": {"group": "", "version": "v1", "kind": "Namespace"},
    }
    secrets = {
        "resource": "secrets",
        "singularResource": "secret",
        "scope": "Namespaced",
        "verbs": VERBS,
        "responseKind": {"group": "", "version": "v1", "kind": "Secret"},
    }
    configmaps = {
        "resource": "configmaps",
        "singularResource": "configmap",
        "scope": "Namespaced",
        "shortNames": ["cm"],
        "verbs": VERBS,
        "responseKind": {"group": "", "version": "v1", "kind": "ConfigMap"},
    }
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": _api_version(content_type),
        "metadata": {},
        "items": [
            {"metadata": {}, "versions": [{"version": "v1", "resources": [ns, secrets, configmaps, *(
                _aggregated_workload(k) for k in workloads.in_group("", "v1"))],
                                          "freshness": "Current"}]}
        ],
    }


def _api_version(content_type: str) -> str:
    return "apidiscovery.k8s.io/v2" if content_type == AGGREGATED_TYPE else "apidiscovery.k8s.io/v2beta1"


def legacy_api_versions() -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}


def legacy_core_resources() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": False,
                "kind": "Namespace",
                "verbs": NAMESPACE_VERBS,
                "shortNames": ["ns"],
            },
            {"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret", "verbs": VERBS},
            {"name": "configmaps", "singularName": "configmap", "namespaced": True, "kind": "ConfigMap",
             "verbs": VERBS, "shortNames": ["cm"]},
            *(_legacy_workload(k) for k in workloads.in_group("", "v1")),
        ],
    }


def _group(group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
    }


def legacy_group_list(registry: KindRegistry) -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in registry.groups().items() if g]
    groups += [_group(g, vs) for g, vs in workloads.groups().items()]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def legacy_group(registry: KindRegistry, group: str) -> dict[str, Any] | None:
    versions = registry.groups().get(group) or workloads.groups().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def legacy_resource_list(registry: KindRegistry, group: str, version: str) -> dict[str, Any] | None:
    kinds = [k for k in registry if k.group == group and version in k.versions]
    if not kinds:
        unstored = workloads.in_group(group, version)
        if not unstored:
            return None
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
                "resources": [_legacy_workload(k) for k in unstored]}
    resources: list[dict[str, Any]] = []
    for k in kinds:
        resources.append(
            {
                "name": k.plural,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": VERBS,
                "shortNames": list(k.short_names),
                "categories": list(k.categories),
            }
        )
        resources.append(
            {
                "name": f"{k.plural}/status",
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            }
        )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}", "resources": resources}
