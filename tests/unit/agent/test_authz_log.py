"""The agent's reading of Envoy's authorization-decision log and the translation that writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshplane.agent.authzlog import AuthzLog, decisions
from meshplane.agent.config import AgentConfig
from meshplane.client import Client
from meshplane.model.proxy import Locality, proxy_from_node
from meshplane.translate.accesslog import authz_access_logs

ME = "spiffe://cluster.local/ns/default/sa/ratings"
BAD = "spiffe://cluster.local/ns/default/sa/bad"


def test_enforced_deny_and_shadow_deny() -> None:
    entry = {"code": "403", "details": "rbac_access_denied_matched_policy[ns[default]-policy[deny-bad]-rule[0]]",
             "principal": BAD, "method": "GET", "path": "/x", "denyShadowResult": "denied",
             "denyShadowPolicy": "ns[default]-policy[dry]-rule[0]"}
    out = decisions(entry, ME, "default/ratings")
    assert [e["kind"] for e in out] == ["authz.deny", "authz.shadow_deny"]
    assert out[0]["subject"] == BAD and out[0]["target"] == ME
    assert out[0]["details"]["policy"] == "ns[default]-policy[deny-bad]-rule[0]"
    assert out[1]["details"]["dryRun"] == "true" and out[1]["details"]["policy"].startswith("ns[default]-policy[dry]")


def test_other_403s_are_not_rbac_decisions() -> None:
    assert decisions({"code": "403", "details": "ext_authz_denied", "principal": BAD}, ME, "w") == []
    assert decisions({"code": "403", "details": "via_upstream"}, ME, "w") == []
    assert decisions({"code": "200", "allowShadowResult": "allowed"}, ME, "w") == []


@pytest.mark.asyncio
async def test_tail_keeps_partial_lines(tmp_path: Path) -> None:
    cfg = AgentConfig.from_json({"name": "ratings", "namespace": "default", "workload": "ratings",
                                 "address": "127.0.0.1", "xds": "127.0.0.1:1", "api": "http://127.0.0.1:1"})
    async with Client(cfg.api) as api:
        log = AuthzLog(cfg, api, tmp_path / "authz.log", ME)
        log.prepare()
        line = json.dumps({"code": "403", "details": "rbac_access_denied_matched_policy[p]", "principal": BAD})
        with open(log.path, "a") as f:
            f.write(line[:10])
        assert log.read_new() == []
        with open(log.path, "a") as f:
            f.write(line[10:] + "\n")
        assert [e["details"]["policy"] for e in log.read_new()] == ["p"]


def test_translation_only_with_the_agents_file() -> None:
    plain = proxy_from_node("sidecar~127.0.0.2~a.default~default.svc.cluster.local", {}, Locality())
    assert authz_access_logs(plain) == []
    proxy = proxy_from_node("sidecar~127.0.0.2~a.default~default.svc.cluster.local",
                            {"AUTHZ_LOG": "/tmp/x/authz.log"}, Locality())
    (log,) = authz_access_logs(proxy)
    assert log.name == "envoy.access_loggers.file"
    assert len(log.filter.or_filter.filters) == 3
