"""PeerAuthentication composition (Istio's ComposePeerAuthentication), and the two sides that follow it: the
inbound chains of the server and the auto-mTLS metadata clients get for each endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from _translate_helpers import BOOKINFO_IPS, bookinfo_registry, clusters, context, fqdn, sidecar
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshplane.model.proxy import InboundPort
from meshplane.model.resources import PEER_AUTHENTICATIONS
from meshplane.model.spec import ConfigObject, MutualTLSMode, PeerAuthentication, decode_resource
from meshplane.translate import MeshSettings
from meshplane.translate.endpoints import build_load_assignment
from meshplane.translate.listeners import inbound_listeners
from meshplane.translate.peerauthn import compose_peer_policy, inbound_mtls_mode

S, P, D = MutualTLSMode.STRICT, MutualTLSMode.PERMISSIVE, MutualTLSMode.DISABLE
ROOT = "istio-system"
APP = {"app": "httpbin", "version": "v1"}


def pa(name: str, ns: str, mode: str | None = None, *, selector: dict[str, str] | None = None,
       ports: dict[str, str | None] | None = None, created: str = "2026-01-01T00:00:00Z") -> ConfigObject[Any]:
    spec: dict[str, Any] = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports is not None:
        spec["portLevelMtls"] = {p: ({"mode": m} if m else {}) for p, m in ports.items()}
    raw = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
           "metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "spec": spec}
    obj = decode_resource(PEER_AUTHENTICATIONS, raw)
    assert isinstance(obj.spec, PeerAuthentication)
    return obj


def compose(*policies: ConfigObject[Any], ns: str = "foo", labels: dict[str, str] | None = None,
            default: MutualTLSMode = P) -> tuple[MutualTLSMode, dict[int, MutualTLSMode]]:
    got = compose_peer_policy(ROOT, policies, ns, APP if labels is None else labels, default=default)
    return got.mode, dict(got.per_port)


@pytest.mark.parametrize(("policies", "want"), [
    ((), P),
    ((pa("m", ROOT, "STRICT"),), S),
    ((pa("m", ROOT, "STRICT"), pa("n", "foo", "PERMISSIVE")), P),  # namespace over mesh
    ((pa("m", ROOT, "DISABLE"), pa("n", "foo", "STRICT")), S),
    ((pa("n", "foo", "STRICT"), pa("w", "foo", "DISABLE", selector={"app": "httpbin"})), D),  # workload over ns
    ((pa("m", ROOT, "STRICT"), pa("n", "foo", "UNSET")), S),  # UNSET inherits the mesh
    ((pa("m", ROOT, "STRICT"), pa("n", "foo")), S),  # no mtls at all: the same
    ((pa("m", ROOT, "DISABLE"), pa("n", "foo", "UNSET"), pa("w", "foo", "UNSET", selector={"app": "httpbin"})),
     D),  # two levels of UNSET
    ((pa("m", ROOT, "UNSET"),), P),  # nothing set anywhere: the default
    ((pa("n", "bar", "STRICT"),), P),  # another namespace's policy
    ((pa("w", "foo", "STRICT", selector={"app": "other"}),), P),  # a workload policy for someone else
    ((pa("w", "foo", "STRICT", selector={"app": "httpbin", "version": "v2"}),), P),  # all labels must match
])
def test_precedence(policies: tuple[ConfigObject[Any], ...], want: MutualTLSMode) -> None:
    assert compose(*policies) == (want, {})


def test_oldest_wins_at_each_level_then_name() -> None:
    old, new = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
    assert compose(pa("b", ROOT, "STRICT", created=new), pa("a", ROOT, "DISABLE", created=old))[0] is D
    assert compose(pa("a", "foo", "STRICT", created=new), pa("b", "foo", "DISABLE", created=old))[0] is D
    sel = {"app": "httpbin"}
    assert compose(pa("a", "foo", "STRICT", selector=sel, created=new),
                   pa("b", "foo", "DISABLE", selector=sel, created=old))[0] is D
    assert compose(pa("b", "foo", "STRICT", created=old), pa("a", "foo", "DISABLE", created=old))[0] is D
    # The oldest workload policy wins even when it says UNSET: its portLevelMtls is the one used.
    got = compose(pa("n", "foo", "STRICT"), pa("new", "foo", "DISABLE", selector=sel, ports={"80": "PERMISSIVE"},
                                                  created=new),
                  pa("old", "foo", "UNSET", selector=sel, ports={"8080": "DISABLE"}, created=old))
    assert got == (S, {8080: D})


def test_root_namespace_policy_with_selector_applies_to_nothing() -> None:
    """Istio: "PeerAuthentication policies with workload selectors are ignored when deployed in the root
    namespace" (neither mesh-wide nor for workloads of the root namespace)."""
    sel = {"app": "httpbin"}
    assert compose(pa("w", ROOT, "STRICT", selector=sel)) == (P, {})
    assert compose(pa("w", ROOT, "STRICT", selector=sel), ns=ROOT) == (P, {})
    assert compose(pa("m", ROOT, "DISABLE"), pa("w", ROOT, "STRICT", selector=sel), ns=ROOT) == (D, {})


def test_port_level() -> None:
    sel = {"app": "httpbin"}
    got = compose(pa("w", "foo", "STRICT", selector=sel, ports={"8080": "DISABLE", "9000": "UNSET", "9001": None}))
    assert got == (S, {8080: D, 9000: S, 9001: S})  # UNSET ports inherit the workload's composed mode
    # The workload's own mode UNSET: ports inherit what the namespace says.
    got = compose(pa("n", "foo", "DISABLE"), pa("w", "foo", "UNSET", selector=sel, ports={"80": "STRICT",
                                                                                           "81": "UNSET"}))
    assert got == (D, {80: S, 81: D})


def test_default_follows_mesh_settings() -> None:
    assert compose(default=D) == (D, {})
    assert compose(pa("n", "foo", "UNSET"), default=D) == (D, {})


def _registry_with_policies(*objs: dict[str, Any]) -> list[dict[str, Any]]:
    return [*bookinfo_registry(), *objs]


def _pa_json(name: str, spec: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def _tls_modes(cla: endpoint_pb2.ClusterLoadAssignment) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for lle in cla.endpoints:
        for lb in lle.lb_endpoints:
            md = lb.metadata.filter_metadata.get("envoy.transport_socket_match")
            out[lb.endpoint.address.socket_address.address] = md["tlsMode"] if md is not None else None
    return out


def test_inbound_mode_is_keyed_by_the_workload_port() -> None:
    ctx = context(_registry_with_policies(_pa_json("w", {
        "selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "STRICT"},
        "portLevelMtls": {"9080": {"mode": "DISABLE"}}})), MeshSettings(inbound_mtls=True))
    rev = sidecar("reviews")
    assert inbound_mtls_mode(rev, InboundPort(9080, 19080), ctx) is D
    assert inbound_mtls_mode(rev, InboundPort(19080, 9080), ctx) is S  # the app port is not the workload port


def test_clients_send_plaintext_to_a_disable_endpoint_only() -> None:
    """Auto mTLS follows the server: the tlsMode match is dropped for endpoints whose port is DISABLE."""
    objs = _registry_with_policies(
        _pa_json("default", {"mtls": {"mode": "STRICT"}}),
        _pa_json("v2", {"selector": {"matchLabels": {"app": "reviews", "version": "v2"}}, "mtls": {"mode": "DISABLE"}}),
    )
    with_tls = [{**o, "spec": {**o["spec"], "labels": {**o["spec"].get("labels", {}),
                                                       "security.istio.io/tlsMode": "istio"}}}
                if o["kind"] == "WorkloadEntry" else o for o in objs]
    ctx = context(with_tls, MeshSettings(inbound_mtls=True))
    cla = build_load_assignment(f"outbound|9080||{fqdn('reviews')}", sidecar("productpage"), ctx)
    assert cla is not None
    modes = _tls_modes(cla)
    assert len(modes) == 3
    assert [a for a, m in modes.items() if m is None] == [BOOKINFO_IPS[("reviews", "v2")]]  # v1, v3: mTLS
    # Without any policy and without inbound mTLS, servers are plaintext: so are the clients.
    plain = context([o for o in with_tls if o["kind"] != "PeerAuthentication"])
    cla = build_load_assignment(f"outbound|9080||{fqdn('reviews')}", sidecar("productpage"), plain)
    assert cla is not None and set(_tls_modes(cla).values()) == {None}


def test_destination_rule_tls_wins_over_auto_mtls() -> None:
    """An explicit DestinationRule ``tls`` is the cluster's one transport socket, whatever the endpoints' modes
    (as in Istio: ISTIO_MUTUAL to a DISABLE server then fails, DISABLE to a STRICT one too)."""
    name = f"outbound|9080||{fqdn('reviews')}"
    for mode, pa_mode in (("ISTIO_MUTUAL", "DISABLE"), ("DISABLE", "STRICT")):
        objs = _registry_with_policies(
            _pa_json("default", {"mtls": {"mode": pa_mode}}),
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": "reviews", "namespace": "default"},
             "spec": {"host": fqdn("reviews"), "trafficPolicy": {"tls": {"mode": mode}}}})
        c = clusters(sidecar("productpage"), context(objs, MeshSettings(inbound_mtls=True)))[name]
        assert not c.transport_socket_matches
        assert (c.transport_socket.name == "envoy.transport_sockets.tls") is (mode == "ISTIO_MUTUAL")


def _inbound_hcms(ctx: Any) -> list[hcm_pb2.HttpConnectionManager]:
    out = []
    for lst in inbound_listeners(sidecar("reviews"), ctx):
        assert isinstance(lst, listener_pb2.Listener)
        for chain in lst.filter_chains:
            hcm = hcm_pb2.HttpConnectionManager()
            assert chain.filters[0].typed_config.Unpack(hcm)
            out.append(hcm)
    return out


def test_sidecar_inbound_appends_client_cert_details() -> None:
    ctx = context(bookinfo_registry(), MeshSettings(inbound_mtls=True))
    hcms = _inbound_hcms(ctx)
    assert len(hcms) == 2  # PERMISSIVE: the mTLS chain and the plaintext chain
    for hcm in hcms:
        assert hcm.forward_client_cert_details == hcm_pb2.HttpConnectionManager.APPEND_FORWARD
        d = hcm.set_current_client_cert_details
        assert d.subject.value and d.uri and d.dns and not d.cert and not d.chain
