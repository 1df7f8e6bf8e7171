"""Istio's Bookinfo task configurations apply unchanged through real kubectl, in all three API versions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.conftest import DATA, Kubectl

BOOKINFO = DATA / "bookinfo"
FILES = sorted(p.name for p in BOOKINFO.glob("*.yaml"))
VERSIONS = ["v1", "v1beta1", "v1alpha3"]


def _as_version(text: str, version: str) -> str:
    return re.sub(r"apiVersion: networking\.istio\.io/v\w+", f"apiVersion: networking.istio.io/{version}", text)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_task_file_applies_and_reads_back(kubectl: Kubectl, tmp_path: Path, version: str) -> None:
    assert len(FILES) >= 10
    for name in FILES:
        f = tmp_path / name
        f.write_text(_as_version((BOOKINFO / name).read_text(), version))
        res = kubectl.run("apply", "-f", str(f))
        assert re.search(r"(created|configured|unchanged)", res.stdout), res.stdout
        # deprecated fields Istio still accepts come with a warning, never a failure
        assert "Error" not in res.stderr
    listed = json.loads(kubectl.run("get", f"virtualservices.{version}.networking.istio.io", "-o", "json").stdout)
    names = {i["metadata"]["name"] for i in listed["items"]}
    assert {"reviews", "ratings", "details", "productpage", "bookinfo"} <= names
    assert all(i["apiVersion"] == f"networking.istio.io/{version}" for i in listed["items"])
    # the same objects read through the preferred version
    dr = json.loads(kubectl.run("get", "dr", "reviews", "-o", "json").stdout)
    assert dr["apiVersion"] == "networking.istio.io/v1"
    assert {s["name"] for s in dr["spec"]["subsets"]} >= {"v1", "v2", "v3"}


def test_request_routing_task_sequence(kubectl: Kubectl, tmp_path: Path) -> None:
    """The request-routing, fault-injection and traffic-shifting tasks, in the order Istio's docs run them."""
    def apply(name: str) -> None:
        kubectl.run("apply", "-f", str(BOOKINFO / name))

    apply("destination-rule-all.yaml")
    apply("virtual-service-all-v1.yaml")
    apply("virtual-service-reviews-test-v2.yaml")
    reviews = json.loads(kubectl.run("get", "vs", "reviews", "-o", "json").stdout)
    assert reviews["spec"]["http"][0]["match"][0]["headers"]["end-user"] == {"exact": "jason"}
    apply("virtual-service-ratings-test-delay.yaml")
    ratings = json.loads(kubectl.run("get", "vs", "ratings", "-o", "json").stdout)
    assert ratings["spec"]["http"][0]["fault"]["delay"]["fixedDelay"] == "7s"
    apply("virtual-service-ratings-test-abort.yaml")
    ratings = json.loads(kubectl.run("get", "vs", "ratings", "-o", "json").stdout)
    assert ratings["spec"]["http"][0]["fault"]["abort"]["httpStatus"] == 500
    assert "delay" not in ratings["spec"]["http"][0]["fault"]
    apply("virtual-service-all-v1.yaml")
    apply("virtual-service-reviews-80-20.yaml")
    reviews = json.loads(kubectl.run("get", "vs", "reviews", "-o", "json").stdout)
    assert [r["weight"] for r in reviews["spec"]["http"][0]["route"]] == [80, 20]
    kubectl.run("delete", "-f", str(BOOKINFO / "virtual-service-all-v1.yaml"))
    assert json.loads(kubectl.run("get", "vs", "-o", "json").stdout)["items"] == []
