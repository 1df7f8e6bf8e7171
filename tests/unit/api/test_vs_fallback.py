"""ASM's VirtualService ``fallback`` extension is part of the served schema, so ``kubectl apply`` keeps it."""

from __future__ import annotations

from typing import Any

import pytest

from meshplane.api.errors import InvalidObject, StrictDecodingError
from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate

VS = default_registry().by_kind("networking.istio.io", "VirtualService")


def _vs(fallback: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "mockb", "namespace": "default"},
        "spec": {
            "hosts": ["mockb"],
            "http": [{"route": [{"destination": {"host": "mockb", "subset": "v2"}, "fallback": fallback}]}],
        },
    }


def test_fallback_is_kept_under_strict_validation() -> None:
    assert VS is not None
    obj = _vs({"target": {"host": "mockb", "subset": "v1", "port": {"number": 8000}}})
    assert validate(VS, obj, field_validation="Strict") == []
    assert obj["spec"]["http"][0]["route"][0]["fallback"]["target"]["subset"] == "v1"


def test_fallback_fields_are_checked() -> None:
    assert VS is not None
    with pytest.raises(StrictDecodingError) as e:
        validate(VS, _vs({"target": {"host": "mockb"}, "targte": {}}), field_validation="Strict")
    assert "spec.http[0].route[0].fallback.targte" in str(e.value)
    with pytest.raises(InvalidObject) as inv:
        validate(VS, _vs({"target": {"subset": "v1"}}), field_validation="Strict")
    assert any(c.field == "spec.http[0].route[0].fallback.target.host" for c in inv.value.causes)
