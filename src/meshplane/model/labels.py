"""Label selection, written once: Istio's ``workloadSelector``/``selector`` semantics (every pair must match),
and a policy's ``targetRefs`` to a Gateway API ``Gateway`` (the proxies labelled with its name).

An empty selector selects everything; whether a *missing* selector selects everything or nothing is the caller's
decision (it differs by kind), so callers pass only selectors that exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

# ASM's TrafficLabel source for the workload's own ``ASM_TRAFFIC_TAG`` label, as its documents spell it: v1beta1's
# ``$localLabel``, and ``$(localLabel)`` in ASM's full-link canary articles. Admission and translation both read it.
LOCAL_LABEL_FORMS = ("$localLabel", "$localLabel()", "$(localLabel)")


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` carry every key of ``selector`` with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())


# The label Istio puts on the proxies of a Gateway API ``Gateway`` (its deployment's pods).
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
GATEWAY_API_GROUPS = (None, "", "gateway.networking.k8s.io")


class TargetRef(Protocol):
    """What a policy's ``targetRef`` names (PolicyTargetReference, WasmPlugin's TargetRef)."""

    @property
    def group(self) -> str | None: ...
    @property
    def kind(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def namespace(self) -> str | None: ...


def target_refs(target_ref: TargetRef | None, refs: Sequence[TargetRef]) -> tuple[TargetRef, ...]:
    """A policy's ``targetRefs`` and its older single ``targetRef``, as one list."""
    return (*refs, *((target_ref,) if target_ref is not None else ()))


def is_gateway_ref(ref: TargetRef) -> bool:
    """Whether ``ref`` names a Gateway API ``Gateway``."""
    return ref.kind == "Gateway" and ref.group in GATEWAY_API_GROUPS


def targets_gateway_proxy(ref: TargetRef, policy_namespace: str, proxy_namespace: str,
                          proxy_labels: Mapping[str, str]) -> bool:
    """Whether ``ref`` (of a policy in ``policy_namespace``) names the Gateway whose proxy this is: the same
    namespace, and the proxy labelled with the Gateway's name."""
    return (is_gateway_ref(ref) and bool(ref.name) and (ref.namespace or policy_namespace) == proxy_namespace
            and proxy_labels.get(GATEWAY_NAME_LABEL) == ref.name)
