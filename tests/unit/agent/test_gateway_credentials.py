"""The gateway's credentialName secrets on the agent's SDS server: Istio's names, replaced as a set, pushed only
when changed."""

from __future__ import annotations

from meshplane.rpc.sds import SdsServer


def test_set_replaces_and_reports_changes() -> None:
    sds = SdsServer()
    changed = sds.set_tls_secrets({"kubernetes://a": (b"CHAIN", b"KEY", b"CA"), "kubernetes://b": (b"C", b"K", b"")})
    assert sorted(changed) == ["kubernetes://a", "kubernetes://a-cacert", "kubernetes://b"]
    assert sds.set_tls_secrets({"kubernetes://a": (b"CHAIN", b"KEY", b"CA"),
                                "kubernetes://b": (b"C", b"K", b"")}) == []
    assert sds.set_tls_secrets({"kubernetes://a": (b"CHAIN2", b"KEY2", b"CA")}) == ["kubernetes://a"]
    assert "kubernetes://b" not in repr(sds) and "kubernetes://a-cacert" in repr(sds)
    assert "KEY2" not in repr(sds)
