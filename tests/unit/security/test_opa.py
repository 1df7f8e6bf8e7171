"""Rego evaluation of ASMOPAPolicies with regorus: v1 and v0 syntax, deny by default, every policy must allow."""

from __future__ import annotations

import pytest

from meshplane.security.opa import PolicySet, RegoError, opa_input, resolve_policies, selects

V1 = """package asm.authz
import rego.v1
default allow := false
allow if input.attributes.source.principal == "spiffe://cluster.local/ns/default/sa/good"
allow if startswith(input.attributes.request.http.path, "/public")
"""
V0_ASM_EXAMPLE = """package istio.authz
default allow = false
allow {
  input.attributes.request.http.method == "GET"
}
"""


def req(principal: str = "", path: str = "/", method: str = "GET") -> dict[str, object]:
    return opa_input(principal=principal, source_address="127.0.0.2:5000", method=method, path=path, host="h",
                     headers={"x": "y"})


def test_allow_by_identity_or_path_deny_the_rest() -> None:
    ps = PolicySet([("p", V1)])
    assert ps.decide(req("spiffe://cluster.local/ns/default/sa/good", "/private")).allowed
    assert ps.decide(req("spiffe://cluster.local/ns/default/sa/bad", "/public/x")).allowed
    d = ps.decide(req("spiffe://cluster.local/ns/default/sa/bad", "/private"))
    assert not d.allowed and d.policy == "p" and "data.asm.authz.allow" in d.reason


def test_v0_policies_compile_and_every_policy_must_allow() -> None:
    ps = PolicySet([("v0", V0_ASM_EXAMPLE), ("v1", V1)])
    assert ps.policies[0].query == "data.istio.authz.allow"
    assert not ps.decide(req("", "/public", "POST")).allowed  # v0 denies POST
    assert not ps.decide(req("", "/private", "GET")).allowed  # v1 denies
    assert ps.decide(req("", "/public", "GET")).allowed


def test_no_policy_allows_and_broken_rego_is_an_error() -> None:
    assert PolicySet().decide(req()).allowed
    with pytest.raises(RegoError, match="policy bad"):
        PolicySet([("bad", "package x\nallow if {{{")])


def test_input_shape_and_selection() -> None:
    doc = req("spiffe://td/ns/a/sa/b", "/a/b?x=1&x=2")
    assert doc["parsed_path"] == ["a", "b"] and doc["parsed_query"] == {"x": ["1", "2"]}
    pol = {"metadata": {"namespace": "default"}, "spec": {"workloadSelector": {"labels": {"app": "r"}}}}
    assert selects(pol, "default", {"app": "r", "v": "1"})
    assert not selects(pol, "default", {"app": "x"}) and not selects(pol, "other", {"app": "r"})
    assert selects({"metadata": {"namespace": "default"}, "spec": {}}, "default", {})


def _policy(name: str, ns: str = "default", **spec: object) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def test_shared_rego_resolves_namespace_first_then_root() -> None:
    publish_ns = _policy("pub", policyRegoID="shared", policy=V1)
    publish_root = _policy("pub-root", "istio-system", policyRegoID="shared", policy=V0_ASM_EXAMPLE)
    use = _policy("use", policyRegoID="shared", workloadSelector={"labels": {"app": "a"}})
    # The namespace's own publication wins.
    assert resolve_policies([use], [publish_ns, use], [publish_root]) == [("use", V1)]
    # Else the root namespace's.
    assert resolve_policies([use], [use], [publish_root]) == [("use", V0_ASM_EXAMPLE)]
    # A policy with Rego of its own keeps it; its policyRegoID only publishes.
    assert resolve_policies([publish_ns], [publish_ns], []) == [("pub", V1)]
    # The resolved Rego decides as if written in place.
    ps = PolicySet(resolve_policies([use], [use], [publish_root]))
    assert ps.decide(req("", "/", "GET")).allowed and not ps.decide(req("", "/", "POST")).allowed


def test_unresolved_or_ambiguous_shared_rego_fails_closed() -> None:
    use = _policy("use", policyRegoID="shared")
    with pytest.raises(RegoError, match="use: policyRegoID 'shared' is published by no ASMOPAPolicy"):
        resolve_policies([use], [use], [])
    a, b = _policy("a", policyRegoID="shared", policy=V1), _policy("b", policyRegoID="shared", policy=V0_ASM_EXAMPLE)
    with pytest.raises(RegoError, match="different Rego by default/a, default/b"):
        resolve_policies([use], [a, b, use], [])
    # The same Rego published twice is no conflict.
    assert resolve_policies([use], [a, _policy("c", policyRegoID="shared", policy=V1)], []) == [("use", V1)]
