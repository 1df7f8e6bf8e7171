"""OPA policies (ASM's ASMOPAPolicy) evaluated with a real Rego engine next to the workload.

Why regorus (PyPI ``gordon-to-regorus``, a packaged build of Microsoft's Rust Rego interpreter): it is maintained,
installs as a wheel on Python 3.11, evaluates Rego v1 (and v0 with ``set_rego_v0``, the syntax of ASM's examples)
in-process in microseconds, so the agent answers Envoy's ext_authz check without another process. OPA's own Go
engine is not installable here (``opa-golib-python-bindings`` needs Python 3.14; no OPA binary in the reachable
registries); a central OPA can still be used through AuthorizationPolicy CUSTOM.

Semantics: each policy is compiled in its own engine and decides through ``data.<its package>.allow`` (a boolean,
or an object with ``allowed`` as OPA-Envoy accepts); a request passes only when every policy that selects the
workload allows it, so ``default allow = false`` denies what no rule allows. The input is OPA-Envoy's shape:
``{"attributes": {"source": {"principal", "address"}, "destination": {...}, "request": {"http": {"method",
"path", "host", "headers"}}}, "parsed_path": [...], "parsed_query": {...}}``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshplane.security.errors import SecurityError


class RegoError(SecurityError):
    """A Rego policy that does not compile, or no Rego engine installed; the message names the policy."""


def _engine_class() -> Any:
    try:
        import regorus  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as e:
        raise RegoError("no Rego engine: install gordon-to-regorus") from e
    return regorus.Engine


def _short(e: Exception) -> str:
    return str(e).split("Stack backtrace:")[0].strip()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str = ""  # the policy that denied ("" when allowed)
    reason: str = ""


class CompiledPolicy:
    """One policy in its own engine (Rego v1, else v0), queried at ``data.<package>.allow``."""

    def __init__(self, name: str, rego: str) -> None:
        self.name = name
        engine_cls = _engine_class()
        errors: list[str] = []
        for v0 in (False, True):
            engine = engine_cls()
            if v0:
                engine.set_rego_v0(True)
            try:
                engine.add_policy(f"{name}.rego", rego)
                break
            except RuntimeError as e:
                errors.append(_short(e))
        else:
            raise RegoError(f"policy {name}: {errors[0]}")
        packages = [str(p) for p in engine.get_packages()]
        if not packages:
            raise RegoError(f"policy {name}: no package")
        pkg = packages[0]
        self.query = f"{pkg if pkg.startswith('data.') else 'data.' + pkg}.allow"
        self._engine = engine
        self._lock = threading.Lock()  # an engine holds its input: one evaluation at a time

    def allows(self, input_json: str) -> bool:
        with self._lock:
            self._engine.set_input_json(input_json)
            try:
                result = self._engine.eval_rule(self.query)
            except RuntimeError:
                return False  # undefined or failing: not allowed
        if isinstance(result, Mapping):
            return result.get("allowed") is True
        return result is True


class PolicySet:
    """The policies selecting one workload; an empty set allows everything (no ASMOPAPolicy applies)."""

    def __init__(self, policies: Sequence[tuple[str, str]] = ()) -> None:
        self.policies = [CompiledPolicy(n, r) for n, r in policies]

    def __len__(self) -> int:
        return len(self.policies)

    def decide(self, request: Mapping[str, Any]) -> Decision:
        if not self.policies:
            return Decision(True)
        data = json.dumps(request, separators=(",", ":"))
        for p in self.policies:
            if not p.allows(data):
                return Decision(False, p.name, f"{p.query} is not true")
        return Decision(True)


def selects(policy: Mapping[str, Any], namespace: str, labels: Mapping[str, str]) -> bool:
    """Whether an ASMOPAPolicy object applies to a workload (its namespace; ``workloadSelector.labels`` subset)."""
    md = policy.get("metadata") or {}
    if str(md.get("namespace") or "default") != namespace:
        return False
    sel = (policy.get("spec") or {}).get("workloadSelector") or {}
    want = sel.get("labels") or {} if isinstance(sel, Mapping) else {}
    return all(labels.get(str(k)) == str(v) for k, v in want.items())


def opa_input(*, principal: str, source_address: str, method: str, path: str, host: str,
              headers: Mapping[str, str], destination_principal: str = "") -> dict[str, Any]:
    """OPA-Envoy's input document for one HTTP request."""
    bare, _, query = path.partition("?")
    parsed_query: dict[str, list[str]] = {}
    for part in query.split("&") if query else ():
        k, _, v = part.partition("=")
        parsed_query.setdefault(k, []).append(v)
    return {
        "attributes": {
            "source": {"principal": principal, "address": source_address},
            "destination": {"principal": destination_principal},
            "request": {"http": {"method": method, "path": path, "host": host, "headers": dict(headers)}},
        },
        "parsed_path": [p for p in bare.split("/") if p],
        "parsed_query": parsed_query,
    }


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _ident(obj: Mapping[str, Any]) -> str:
    md = obj.get("metadata") or {}
    return f"{md.get('namespace') or 'default'}/{md.get('name')}"


def shared_regos(objects: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """policyRegoID -> [(defining object, Rego)] of the objects that publish one (``policy`` and ``policyRegoID``)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for o in objects:
        spec = _spec(o)
        rego_id, rego = str(spec.get("policyRegoID") or ""), str(spec.get("policy") or "")
        if rego_id and rego.strip():
            out.setdefault(rego_id, []).append((_ident(o), rego))
    return out


def resolve_policies(mine: Sequence[Mapping[str, Any]], namespace_objects: Sequence[Mapping[str, Any]],
                     root_objects: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(name, Rego) of each policy in ``mine`` (the ones selecting a workload). A policy without ``policy`` uses the
    Rego published under its ``policyRegoID`` in its own namespace (``namespace_objects``), else in the root
    namespace (``root_objects``). Raises :class:`RegoError` naming the policy when the ID is published nowhere, or
    with different Rego by more than one policy of the namespace that decides, so the workload fails closed."""
    local, root = shared_regos(namespace_objects), shared_regos(root_objects)
    out: list[tuple[str, str]] = []
    for o in mine:
        spec = _spec(o)
        name = str((o.get("metadata") or {}).get("name"))
        rego = str(spec.get("policy") or "")
        rego_id = str(spec.get("policyRegoID") or "")
        if not rego.strip() and rego_id:
            found = local.get(rego_id) or root.get(rego_id) or []
            if not found:
                raise RegoError(f"policy {name}: policyRegoID {rego_id!r} is published by no ASMOPAPolicy of its "
                                "namespace or of the root namespace")
            if len({r for _, r in found}) > 1:
                raise RegoError(f"policy {name}: policyRegoID {rego_id!r} is published with different Rego by "
                                f"{', '.join(sorted(d for d, _ in found))}")
            rego = found[0][1]
        out.append((name, rego))
    return out
