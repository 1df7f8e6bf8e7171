"""Kubernetes workload kinds meshplane does not store (Service, Pod, Deployment, ...), answered with why not.

A newcomer's first ``kubectl apply`` is often a Deployment or a Service. Against a server that does not know the
kind at all, kubectl says only "no matches for kind ... ensure CRDs are installed first", which suggests installing
something. meshplane's workloads are instead declared in ``meshplane up`` manifests (the local runtime) or come from
member clusters (``meshplane cluster add``), so these kinds are advertised in discovery and every write is refused
with 405 MethodNotAllowed saying so. Reads answer what is true of this API: no such objects are stored here (an
empty list with a ``Warning`` header carrying the same hint, 404 for a name), which is also what
``kubectl cluster-info`` needs (it lists ``services`` in ``kube-system``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshplane.apiserver.request import ResourcePath
from meshplane.apiserver.status import ApiError, not_found

HINT = (
    'meshplane stores no {plural}: workloads are declared in "meshplane up" manifests or come from member '
    'clusters ("meshplane cluster add")'
)
VERBS = ["create", "delete", "get", "list", "patch", "update"]


@dataclass(frozen=True, slots=True)
class WorkloadKind:
    group: str
    version: str
    kind: str
    plural: str
    short_names: tuple[str, ...]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


KINDS = (
    WorkloadKind("", "v1", "Service", "services", ("svc",)),
    WorkloadKind("", "v1", "Pod", "pods", ("po",)),
    WorkloadKind("apps", "v1", "Deployment", "deployments", ("deploy",)),
    WorkloadKind("apps", "v1", "StatefulSet", "statefulsets", ("sts",)),
    WorkloadKind("apps", "v1", "DaemonSet", "daemonsets", ("ds",)),
)


def find(group: str, version: str, plural: str) -> WorkloadKind | None:
    for k in KINDS:
        if (k.group, k.version, k.plural) == (group, version, plural):
            return k
    return None


def groups() -> dict[str, list[str]]:
    """The named groups these kinds add to discovery (the core ones join ``/api/v1``)."""
    out: dict[str, list[str]] = {}
    for k in KINDS:
        if k.group and k.version not in out.setdefault(k.group, []):
            out[k.group].append(k.version)
    return out


def in_group(group: str, version: str) -> list[WorkloadKind]:
    return [k for k in KINDS if k.group == group and k.version == version]


def hint(kind: WorkloadKind) -> str:
    return HINT.format(plural=kind.plural)


def answer(
    kind: WorkloadKind, path: ResourcePath, method: str, resource_version: str, *, watch: bool = False
) -> dict[str, Any]:
    """The body of a successful list; raises the ApiError of everything else (404 for a name, 405 otherwise)."""
    if method == "GET" and path.name is None and not watch:
        if path.subresource is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": resource_version},
            "items": [],
        }
    if method == "GET" and path.name is not None:
        raise not_found(kind.plural, kind.group, path.name)
    target = f'{kind.kind} "{path.name}"' if path.name else kind.kind
    raise ApiError(
        405,
        "MethodNotAllowed",
        f"{target} is not accepted: {hint(kind)}",
        {"name": path.name or "", "group": kind.group, "kind": kind.plural},
    )
