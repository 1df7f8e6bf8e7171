"""Security audit reports are authenticated by the reporting workload's bootstrap token, against the real
``meshplane server`` process: no or a forged token is refused (401), a workload reporting for another one is
refused (403), both refusals are themselves audited (``audit.refused``), and accepted events carry the reporter's
SPIFFE id in ``details.reportedBy``. Plain HTTP (urllib) for the refusals the client would never send."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from meshplane.client import Refused, SyncClient
from tests.support.server import ServerProcess

WEB = "spiffe://cluster.local/ns/default/sa/web"
DB = "spiffe://cluster.local/ns/default/sa/db"


def _deny(target: str, **details: str) -> dict[str, Any]:
    return {"kind": "authz.deny", "subject": "spiffe://cluster.local/ns/default/sa/bad", "target": target,
            "reason": "denied by p", "details": {"policy": "p", **details}}


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    req = urllib.request.Request(f"{url}/management/v1/security/audit", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **headers}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_audit_reports_need_the_reporters_identity(server: ServerProcess) -> None:
    with SyncClient(server.url) as c:
        web = c.bootstrap_token("default", "web", 600)
        # No token, a malformed one, a forged one: 401, and the attempt is in the trail.
        assert _post(server.url, {"items": [_deny(WEB)]}, {}) == 401
        assert _post(server.url, _deny(WEB), {"X-Bootstrap-Token": "deadbeef"}) == 401
        with pytest.raises(Refused) as forged:
            c.report_security_events([_deny(WEB)], bootstrap_token=web[:-4] + "AAAA")
        assert forged.value.code == 401
        refused = c.security_audit(kind="audit.refused")
        assert len(refused) == 3 and all(r["target"] == "security-audit" for r in refused)
        assert all(r["reason"].startswith("unauthenticated report") for r in refused)

        # web's token, an event for db (or a batch with one): 403, nothing of the batch recorded.
        with pytest.raises(Refused) as other:
            c.report_security_events([_deny(WEB), _deny(DB)], bootstrap_token=web)
        assert other.value.code == 403 and DB in other.value.message
        with pytest.raises(Refused) as other_ns:
            c.report_security_events([_deny(WEB, workload="prod/web")], bootstrap_token=web)
        assert other_ns.value.code == 403
        claims = c.security_audit(kind="audit.refused")[3:]
        assert [(r["subject"], r["details"]["claimed"]) for r in claims] == [(WEB, DB), (WEB, WEB)]
        assert c.security_audit(kind="authz.") == []

        # web's own events: recorded, with the identity that reported them (whatever the body says).
        c.report_security_events([_deny(WEB, workload="default/web", reportedBy="spiffe://evil")],
                                 bootstrap_token=web)
        assert _post(server.url, _deny(WEB), {"X-Bootstrap-Token": web}) == 201
        events = c.security_audit(kind="authz.")
        assert [(e["target"], e["details"]["reportedBy"]) for e in events] == [(WEB, WEB), (WEB, WEB)]
