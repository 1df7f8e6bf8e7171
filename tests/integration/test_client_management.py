"""The client's management calls against the real ``meshplane server`` process (with its CA): proxy status,
bootstrap tokens, the trust bundle, a gateway's credentials, security reports and both audit trails; through the
blocking facade, as the CLI uses them, and the asynchronous client, as the agent does."""

from __future__ import annotations

import base64

import pytest

from meshplane.client import Client, NotFound, Refused, SyncClient
from tests.support.server import ServerProcess


def _tls_secret(ns: str, name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(b"CERT").decode(), "tls.key": base64.b64encode(b"KEY").decode()}}


GATEWAY = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": "x"},
           "spec": {"selector": {"istio": "ingressgateway"},
                    "servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
                                 "tls": {"mode": "SIMPLE", "credentialName": "named"}}]}}


def test_management_calls_through_the_blocking_facade(server: ServerProcess) -> None:
    with SyncClient(server.url) as c:
        assert c.serving()
        assert c.proxies() == []  # no proxy connected
        assert "BEGIN CERTIFICATE" in c.trust_bundle()

        c.create(_tls_secret("istio-system", "named"))
        c.create(GATEWAY)
        token = c.bootstrap_token("istio-system", "gw", 600)
        assert c.gateway_credentials(token) == [{"name": "named", "certificateChain": "CERT", "privateKey": "KEY",
                                                 "caCertificate": ""}]
        with pytest.raises(Refused) as e:
            c.gateway_credentials("mpt.forged.token")
        assert e.value.code == 401 and str(e.value) == ("GET /management/v1/gateway-credentials: HTTP 401: "
                                                        "a valid bootstrap token is required")
        with pytest.raises(Refused) as bad:
            c.bootstrap_token("", "gw", 600)
        assert str(bad.value) == "bootstrap token for /gw: HTTP 400: namespace and serviceAccount are required strings"

        web = c.bootstrap_token("default", "web", 600)
        me = "spiffe://cluster.local/ns/default/sa/web"
        c.report_security_events([{"kind": "opa.deny", "subject": "s", "target": me, "reason": "r"},
                                  {"kind": "authz.deny", "subject": "s2", "target": me, "reason": "r"}],
                                 bootstrap_token=web)
        assert [e["subject"] for e in c.security_audit(kind="opa.")] == ["s"]
        with pytest.raises(Refused) as refused:  # only authorization decisions may be reported
            c.report_security_events([{"kind": "certificate.issued", "target": me}], bootstrap_token=web)
        assert refused.value.code == 400 and "kind must start with" in refused.value.message

        # The control plane's own controllers (the status writer's Reconciled condition on the Gateway) write into
        # the trail too, whenever they get to it; this client (no token: "system:anonymous@PEER") wrote these.
        def mine(records: list[dict[str, object]]) -> list[dict[str, object]]:
            return [r for r in records if str(r["user"]).startswith("system:anonymous@")]

        changes = mine(c.audit())
        assert [(r["verb"], r["resource"], r["name"]) for r in changes] == [("create", "secrets", "named"),
                                                                            ("create", "gateways", "gw")]
        assert [r["name"] for r in mine(c.audit(since=int(str(changes[0]["resourceVersion"]))))] == ["gw"]


async def test_the_async_client_against_the_real_server(server: ServerProcess) -> None:
    async with Client(server.url) as c:
        token = await c.bootstrap_token("default", "web", 60)
        assert token.startswith("mpt1.")
        assert await c.proxies() == []
        with pytest.raises(NotFound) as e:
            await c.get("networking.istio.io/v1", "WorkloadEntry", "nope", "default")
        assert str(e.value) == ('get WorkloadEntry default/nope: HTTP 404: '
                                'workloadentries.networking.istio.io "nope" not found')
