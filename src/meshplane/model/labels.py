"""Label selection, written once: Istio's ``workloadSelector``/``selector`` semantics (every pair must match).

An empty selector selects everything; whether a *missing* selector selects everything or nothing is the caller's
decision (it differs by kind), so callers pass only selectors that exist.
"""

from __future__ import annotations

from collections.abc import Mapping

# ASM's TrafficLabel source for the workload's own ``ASM_TRAFFIC_TAG`` label, as its documents spell it: v1beta1's
# ``$localLabel``, and ``$(localLabel)`` in ASM's full-link canary articles. Admission and translation both read it.
LOCAL_LABEL_FORMS = ("$localLabel", "$localLabel()", "$(localLabel)")


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` carry every key of ``selector`` with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())
