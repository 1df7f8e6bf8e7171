"""``describe pod|service`` over Istio-shaped objects (Bookinfo's reviews with Istio's task YAML): which objects
apply, and what they do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshplane.diag.describe import DescribeError, Mesh, describe_pod, describe_service, effective_mtls

BOOKINFO = Path(__file__).resolve().parents[2] / "data" / "bookinfo"


def load(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((BOOKINFO / name).read_text()) if d]
    for d in docs:
        d["metadata"].setdefault("namespace", "default")
    return docs


def se(name: str, port: int = 9080) -> dict[str, Any]:
    return {"kind": "ServiceEntry", "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": [f"{name}.default.svc.cluster.local"], "ports": [{"number": port, "name": "http",
                                                                                "protocol": "HTTP"}],
                     "resolution": "STATIC", "workloadSelector": {"labels": {"app": name}}}}


def we(name: str, app: str, version: str, ip: str) -> dict[str, Any]:
    return {"kind": "WorkloadEntry", "metadata": {"name": name, "namespace": "default"},
            "spec": {"address": ip, "labels": {"app": app, "version": version}, "serviceAccount": f"bookinfo-{app}",
                     "ports": {"http": 9080}}}


def pa(name: str, ns: str, mode: str, selector: dict[str, str] | None = None,
       ports: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"mtls": {"mode": mode}}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    if ports:
        spec["portLevelMtls"] = {p: {"mode": m} for p, m in ports.items()}
    return {"kind": "PeerAuthentication", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def mesh(**kw: Any) -> Mesh:
    base: dict[str, Any] = {
        "service_entries": [se("reviews"), se("productpage")],
        "workload_entries": [we("reviews-v1-0", "reviews", "v1", "127.0.0.4"),
                             we("reviews-v2-0", "reviews", "v2", "127.0.0.5"),
                             we("productpage-v1-0", "productpage", "v1", "127.0.0.2")],
        "virtual_services": load("virtual-service-reviews-jason-v2-v3.yaml") + load("bookinfo-gateway.yaml")[1:],
        "destination_rules": load("destination-rule-all.yaml"),
    }
    base.update(kw)
    return Mesh(**base)


def test_pod_shows_its_service_subset_and_routes() -> None:
    text = describe_pod(mesh(), "reviews-v2-0", "default")
    assert "Service: reviews (reviews.default.svc.cluster.local)" in text
    assert "DestinationRule: reviews.default for \"reviews\"" in text
    assert "Matching subsets: v2" in text and "(Non-matching subsets v1, v3)" in text
    assert "VirtualService: reviews.default" in text
    assert "[0] when header end-user exact jason: route to reviews.default.svc.cluster.local subset v2" in text
    assert "[1] when any request: route to reviews.default.svc.cluster.local subset v3" in text
    assert "bookinfo.default" not in text  # the gateway's VirtualService routes to productpage only
    assert "No AuthorizationPolicy applies" in text


def test_gateway_virtual_service_is_named_for_the_service_it_reaches() -> None:
    text = describe_service(mesh(), "productpage", "default")
    assert "Exposed through: VirtualService bookinfo.default on gateways bookinfo-gateway" in text
    assert "Endpoints: 1" in text and "productpage-v1-0   127.0.0.2" in text


def test_missing_subset_is_warned() -> None:
    text = describe_pod(mesh(destination_rules=[]), "reviews-v1-0", "default")
    assert "WARNING: subset v2 of reviews.default.svc.cluster.local is defined by no DestinationRule" in text


def test_peer_authentication_most_specific_first() -> None:
    pas = [pa("default", "istio-system", "STRICT"), pa("ns", "default", "PERMISSIVE"),
           pa("reviews", "default", "UNSET", {"app": "reviews"}, {"9080": "DISABLE"})]
    text = describe_pod(mesh(peer_authentications=pas), "reviews-v1-0", "default")
    assert "Workload mTLS mode: PERMISSIVE" in text  # the workload's UNSET inherits the namespace's
    assert "Port 9080: DISABLE" in text
    assert "reviews.default, ns.default, default.istio-system" in text
    only_mesh = describe_pod(mesh(peer_authentications=pas[:1]), "productpage-v1-0", "default")
    assert "Workload mTLS mode: STRICT" in only_mesh
    assert effective_mtls([]) == ("PERMISSIVE", {})


def test_authorization_policies_that_apply() -> None:
    aps = [{"kind": "AuthorizationPolicy", "metadata": {"name": "deny-all", "namespace": "default"}, "spec": {}},
           {"kind": "AuthorizationPolicy", "metadata": {"name": "ratings", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "ratings"}}, "rules": [{}]}},
           {"kind": "AuthorizationPolicy", "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "reviews"}}, "action": "ALLOW",
                     "rules": [{"from": [{"source": {"principals": ["x"]}}]}]}},
           {"kind": "AuthorizationPolicy", "metadata": {"name": "other", "namespace": "other"}, "spec": {}}]
    text = describe_pod(mesh(authorization_policies=aps), "reviews-v1-0", "default")
    assert "deny-all.default: ALLOW, no rules: denies every request" in text
    assert "reviews.default: ALLOW, 1 rule(s)" in text
    assert "ratings" not in text.split("Applied AuthorizationPolicies:")[1] and "other.other" not in text


def test_unknown_names_are_refused_with_what_exists() -> None:
    with pytest.raises(DescribeError, match="no pod \\(WorkloadEntry\\) default/nope; pods in default: "):
        describe_pod(mesh(), "nope", "default")
    with pytest.raises(DescribeError, match="services in default: productpage, reviews"):
        describe_service(mesh(), "nope", "default")
    assert "Service: reviews.default" in describe_service(mesh(), "reviews.default.svc.cluster.local", "default")
