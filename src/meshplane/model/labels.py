"""Label selection, written once: Istio's ``workloadSelector``/``selector`` semantics (every pair must match).

An empty selector selects everything; whether a *missing* selector selects everything or nothing is the caller's
decision (it differs by kind), so callers pass only selectors that exist.
"""

from __future__ import annotations

from collections.abc import Mapping


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` carry every key of ``selector`` with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())
