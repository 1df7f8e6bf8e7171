"""Istio's Bookinfo task files validate cleanly, in every networking API version, as Istio accepts them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from _api_helpers import DATA, REGISTRY, load_yaml

from meshplane.api.validation import validate

FILES = sorted((DATA / "bookinfo").glob("*.yaml"))


def test_the_task_files_are_all_there() -> None:
    names = {f.name for f in FILES}
    assert "virtual-service-reviews-v2-timeout.yaml" in names
    assert "destination-rule-httpbin-circuit-breaking.yaml" in names
    assert len(FILES) == 12


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_bookinfo_file_validates(path: Path, version: str) -> None:
    docs = load_yaml(path)
    assert docs
    for doc in docs:
        obj = copy.deepcopy(doc)
        obj["apiVersion"] = f"networking.istio.io/{version}"
        info = REGISTRY.by_api_version(obj["apiVersion"], obj["kind"])
        assert info is not None
        warnings = validate(info, obj, field_validation="Strict")
        assert obj == {**doc, "apiVersion": obj["apiVersion"]}, "a valid object is left as it was"
        deprecated = [w for w in warnings if "deprecated" in w]
        assert len(deprecated) == len(warnings), warnings
        if "test-abort" in path.name or "test-delay" in path.name:
            assert deprecated and 'using deprecated field "percent"; use "percentage"' in deprecated[0]


def test_timeout_and_circuit_breaking_values_are_checked() -> None:
    """The task files pass because their values are right, not because nothing is looked at."""
    vs = load_yaml(DATA / "bookinfo" / "virtual-service-reviews-v2-timeout.yaml")[1]
    vs["spec"]["http"][0]["timeout"] = "half a second"
    info = REGISTRY.by_api_version(vs["apiVersion"], vs["kind"])
    assert info is not None
    with pytest.raises(Exception, match=r"spec\.http\[0\]\.timeout"):
        validate(info, vs)
    dr = load_yaml(DATA / "bookinfo" / "destination-rule-httpbin-circuit-breaking.yaml")[0]
    dr["spec"]["trafficPolicy"]["outlierDetection"]["maxEjectionPercent"] = 101
    info = REGISTRY.by_api_version(dr["apiVersion"], dr["kind"])
    assert info is not None
    with pytest.raises(Exception, match=r"maxEjectionPercent"):
        validate(info, dr)
