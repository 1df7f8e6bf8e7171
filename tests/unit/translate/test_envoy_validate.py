"""Generated config is accepted by the real Envoy: every Bookinfo task configuration and a feature corpus, for a
sidecar (both interception modes) and a gateway, put into a static bootstrap and run through
``envoy --mode validate`` (~0.05 s each)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _feature_corpus import feature_objects, sidecar_cr
from _translate_helpers import (
    bookinfo_file,
    bookinfo_registry,
    bookinfo_task_files,
    context,
    envoy_validate,
    gateway,
    sidecar,
)

from meshplane.translate import MeshSettings

pytestmark = pytest.mark.envoy


@pytest.mark.parametrize("task", [f for f in bookinfo_task_files() if not f.startswith("destination-rule")])
def test_bookinfo_task_validates(task: str, tmp_path: Path) -> None:
    for dr in ("destination-rule-all.yaml", "destination-rule-all-mtls.yaml"):
        objs = bookinfo_registry() + bookinfo_file(dr) + bookinfo_file("bookinfo-gateway.yaml") + bookinfo_file(task)
        ctx = context(objs)
        envoy_validate(sidecar("productpage"), ctx, tmp_path)
        envoy_validate(sidecar("reviews", "v2", inbound="http:9080"), ctx, tmp_path)
        envoy_validate(gateway(ns="default"), ctx, tmp_path)


@pytest.mark.parametrize("mode", ["NONE", "REDIRECT"])
@pytest.mark.parametrize("mtls", [False, True])
def test_feature_corpus_validates(mode: str, mtls: bool, tmp_path: Path, cert_dir: Path) -> None:
    mesh = MeshSettings(inbound_mtls=mtls, outbound_traffic_policy="REGISTRY_ONLY" if mtls else "ALLOW_ANY")
    ctx = context(bookinfo_registry() + feature_objects(str(cert_dir)), mesh)
    envoy_validate(sidecar("productpage", INTERCEPTION_MODE=mode, INBOUND_PORTS="http:9080=19080,9090/TCP,grpc:9091"),
                   ctx, tmp_path)
    if mode == "NONE":
        envoy_validate(gateway(), ctx, tmp_path)


def test_sidecar_scoped_config_validates(tmp_path: Path, cert_dir: Path) -> None:
    objs = bookinfo_registry() + feature_objects(str(cert_dir)) + [
        sidecar_cr("default", {"egress": [{"hosts": ["./reviews.default.svc.cluster.local", "*/api.example.com"]}],
                               "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})]
    envoy_validate(sidecar("productpage"), context(objs), tmp_path)
