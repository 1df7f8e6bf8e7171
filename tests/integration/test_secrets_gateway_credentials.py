"""``GET /management/v1/gateway-credentials``: the one read of Secret values, for a gateway's agent. Only with a
valid bootstrap token, only Secrets of the token's namespace, only those a Gateway names (the real server)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

from tests.support.server import ServerProcess


def call(url: str, method: str = "GET", body: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def secret(ns: str, name: str, **data: bytes) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "type": "kubernetes.io/tls" if "tls.key" in data else "Opaque",
            "data": {k.replace("_", "."): base64.b64encode(v).decode() for k, v in data.items()}}


def test_only_named_secrets_of_the_tokens_namespace(server: ServerProcess) -> None:
    api = server.url
    for obj in (secret("istio-system", "named", tls_crt=b"CERT", tls_key=b"KEY"),
                secret("istio-system", "named-cacert", ca_crt=b"CA"),
                secret("istio-system", "unnamed", tls_crt=b"C2", tls_key=b"K2"),
                secret("other", "named", tls_crt=b"C3", tls_key=b"K3")):
        code, _ = call(f"{api}/api/v1/namespaces/{obj['metadata']['namespace']}/secrets", "POST", obj)
        assert code == 201
    gw = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": "x"},
          "spec": {"selector": {"istio": "ingressgateway"},
                   "servers": [{"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
                                "tls": {"mode": "MUTUAL", "credentialName": "named"}}]}}
    assert call(f"{api}/apis/networking.istio.io/v1/namespaces/x/gateways", "POST", gw)[0] == 201

    url = f"{api}/management/v1/gateway-credentials"
    assert call(url)[0] == 401
    assert call(url, headers={"X-Bootstrap-Token": "mpt.forged.token"})[0] == 401
    code, tok = call(f"{api}/management/v1/tokens", "POST", {"namespace": "istio-system", "serviceAccount": "gw"})
    assert code == 201
    code, out = call(url, headers={"X-Bootstrap-Token": tok["token"]})
    assert code == 200 and out["namespace"] == "istio-system"
    assert out["items"] == [{"name": "named", "certificateChain": "CERT", "privateKey": "KEY", "caCertificate": "CA"}]
    # The refusals are audited, without any token in them.
    code, events = call(f"{api}/management/v1/security/audit?kind=credential.")
    assert code == 200 and len(events["items"]) == 2
    assert "forged" not in json.dumps(events)
