"""The pod network model's pure parts: istio-init's rules from annotations, names and addresses."""

from __future__ import annotations

from typing import Any

import pytest

from meshplane.runtime import netns
from meshplane.runtime.manifest import ManifestError, parse_manifest


def _rules(**annotations: str) -> list[str]:
    a = {f"traffic.sidecar.istio.io/{k}": v for k, v in annotations.items()}
    return netns.iptables_rules(netns.capture_from_annotations(a)).splitlines()


def test_default_rules_capture_everything_but_the_proxy_and_loopback() -> None:
    r = _rules()
    assert r[0] == "*nat" and r[-1] == "COMMIT"
    assert "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in r
    assert "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in r
    assert "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT" in r
    assert "-A MESH_OUTPUT -j MESH_REDIRECT" in r
    # the proxy's own traffic and ports are never captured, and come before the catch-alls
    gid = r.index("-A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN")
    assert gid < r.index("-A MESH_OUTPUT -j MESH_REDIRECT")
    for port in (15000, 15020, 15021, 15090):
        assert r.index(f"-A MESH_INBOUND -p tcp --dport {port} -j RETURN") < r.index(
            "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT")
    assert "-A OUTPUT -p udp --dport 53 -m owner ! --gid-owner 1337 -j REDIRECT --to-ports 15053" in r


def test_annotations_narrow_the_capture() -> None:
    r = _rules(includeOutboundIPRanges="240.240.0.0/16,10.1.0.0/16", excludeOutboundPorts="6379",
               includeInboundPorts="9080", excludeInboundPorts="9090", excludeOutboundIPRanges="10.1.2.0/24")
    assert "-A MESH_OUTPUT -d 240.240.0.0/16 -j MESH_REDIRECT" in r
    assert "-A MESH_OUTPUT -j MESH_REDIRECT" not in r and r[-2] == "-A MESH_OUTPUT -j RETURN"
    assert r.index("-A MESH_OUTPUT -p tcp --dport 6379 -j RETURN") < r.index(
        "-A MESH_OUTPUT -d 240.240.0.0/16 -j MESH_REDIRECT")
    assert r.index("-A MESH_OUTPUT -d 10.1.2.0/24 -j RETURN") < r.index(
        "-A MESH_OUTPUT -d 10.1.0.0/16 -j MESH_REDIRECT")
    assert "-A MESH_INBOUND -p tcp --dport 9080 -j MESH_IN_REDIRECT" in r
    assert "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT" not in r
    assert "-A MESH_INBOUND -p tcp --dport 9090 -j RETURN" in r


@pytest.mark.parametrize(("key", "value", "message"), [
    ("includeOutboundIPRanges", "10.0.0.0/33", "includeOutboundIPRanges: '10.0.0.0/33' is not an IP range"),
    ("excludeOutboundPorts", "http", "excludeOutboundPorts: 'http' is not a port number"),
    ("excludeInterfaces", "eth1", "excludeInterfaces: not supported"),
])
def test_bad_annotations_are_refused_by_the_manifest_with_their_name(key: str, value: str, message: str) -> None:
    doc = {"workloads": [{"name": "web", "command": ["x"], "ports": [80],
                          "annotations": {f"traffic.sidecar.istio.io/{key}": value}}]}
    with pytest.raises(ManifestError, match="workload web.annotations: annotation traffic.sidecar.istio.io/"
                                            + message.replace("(", r"\(").replace(")", r"\)")):
        parse_manifest(doc)


def test_interception_fields_of_the_manifest() -> None:
    m = parse_manifest({"mesh": {"interception": "transparent", "dnsUpstream": "127.0.0.1:5353"},
                        "workloads": [{"name": "web", "command": ["x"], "ports": [80], "interception": "explicit"}]})
    assert m.mesh.interception == "transparent" and m.mesh.dns_upstream == "127.0.0.1:5353"
    assert m.workloads[0].interception == "explicit"
    assert parse_manifest({}).mesh.interception == "auto"
    with pytest.raises(ManifestError, match=r"mesh\.interception: expected auto or transparent or explicit"):
        parse_manifest({"mesh": {"interception": "iptables"}})
    with pytest.raises(ManifestError, match=r"workload web\.interception: transparent needs mesh\.interception"):
        parse_manifest({"mesh": {"interception": "explicit"},
                        "workloads": [{"name": "web", "command": ["x"], "ports": [80],
                                       "interception": "transparent"}]})
    with pytest.raises(ManifestError, match=r"mesh\.dnsUpstream: expected IPv4:PORT"):
        parse_manifest({"mesh": {"dnsUpstream": "dns.example.com:53"}})


def test_names_fit_the_kernel_limits() -> None:
    assert len(netns.veth_name(249, 250, 254)) <= 15
    assert len(netns.bridge_for(249).name) <= 15
    assert netns.pod_address(114, 2, 5) == "10.114.2.5"
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in netns.resolv_conf("default")


def _supervisor(tmp_path: Any, doc: dict[str, Any], **kw: Any) -> Any:
    from meshplane.runtime.home import Home
    from meshplane.runtime.supervisor import Supervisor

    return Supervisor(Home(tmp_path), parse_manifest(doc), **kw)


_WEB = {"name": "web", "command": ["x"], "ports": [80]}


@pytest.mark.parametrize(("flag", "manifest", "env", "wanted"), [
    ("", "auto", "", "auto"),
    ("", "auto", "explicit", "explicit"),  # what auto means here (the test suite's setting)
    ("", "transparent", "explicit", "transparent"),  # the manifest's own choice beats the environment
    ("explicit", "transparent", "", "explicit"),  # the flag beats both
])
def test_which_interception_is_asked_for(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, flag: str, manifest: str,
                                         env: str, wanted: str) -> None:
    monkeypatch.setenv("MESHPLANE_INTERCEPTION", env)
    sup = _supervisor(tmp_path, {"mesh": {"interception": manifest}, "workloads": [_WEB]}, interception=flag)
    assert sup.interception_wanted == wanted


async def test_auto_falls_back_to_explicit_saying_why(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "capture_unavailable", lambda: "not running as root (network namespaces ...)")
    sup = _supervisor(tmp_path, {"workloads": [{**_WEB, "annotations": {
        "traffic.sidecar.istio.io/excludeInboundPorts": "81"}}]}, interception="auto")
    await sup.resolve_interception()
    assert not sup.transparent and sup.interception_reason.startswith("explicit (transparent is not possible: not")
    assert sup.warnings == ["workload web.annotations: traffic.sidecar.istio.io annotations take effect only with "
                            "transparent interception; ignored"]
    sup = _supervisor(tmp_path, {"workloads": [_WEB]}, interception="transparent")
    with pytest.raises(RuntimeError, match="transparent is not possible here: not running as root"):
        await sup.resolve_interception()


async def test_replicas_keep_a_mesh_explicit(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "capture_unavailable", lambda: "")
    sup = _supervisor(tmp_path, {"workloads": [_WEB]}, interception="auto")
    await sup.resolve_interception()
    assert sup.transparent
    sup = _supervisor(tmp_path, {"workloads": [_WEB]}, interception="auto", replicas=2)
    await sup.resolve_interception()
    assert not sup.transparent and "--replicas > 1" in sup.interception_reason
    sup = _supervisor(tmp_path, {"workloads": [_WEB]}, interception="transparent", replicas=3)
    with pytest.raises(RuntimeError, match="--replicas > 1"):
        await sup.resolve_interception()
