"""Tracing on the demo (Bookinfo on real Envoys, the agents, the server's collector): with the Telemetry of Istio's
tracing task applied by kubectl, one request through cluster-1's ingress is one trace whose spans link
ingress -> productpage -> reviews -> ratings (the demo apps forward ``traceparent``), read back with
``meshplane trace``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_demo import demo, kubectl_apply  # noqa: F401  (demo is a fixture)
from test_runtime_support import eventually, get_json

from meshplane.client import SyncClient

pytestmark = [pytest.mark.envoy, pytest.mark.kubectl,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")]

DATA = Path(__file__).resolve().parents[1] / "data" / "telemetry"


def _chain(spans: list[dict[str, Any]]) -> list[str]:
    """The services from the root down to the ratings server span, following parent span ids; [] while a span of
    the chain has not arrived yet (Envoy exports at its flush interval)."""
    by_id = {s["spanId"]: s for s in spans}
    leaves = [s for s in spans if s["service"].startswith("ratings") and s["kind"] == "SERVER"]
    if len(leaves) != 1:
        return []
    s = leaves[0]
    out = [s["service"]]
    while s["parentSpanId"] in by_id:
        s = by_id[s["parentSpanId"]]
        out.append(s["service"])
    return out[::-1] if not s["parentSpanId"] else []


def test_a_request_through_the_ingress_is_one_trace_down_to_ratings(demo: tuple[Path, dict[str, Any], str]) -> None:  # noqa: F811
    _, st, _printed = demo
    api, url = st["api"], st["ingress"]["cluster-1"]
    kubectl_apply(api, DATA / "mesh-default-tracing.yaml")
    found: dict[str, Any] = {}

    def traced() -> bool:
        get_json(url + "/productpage", {"Connection": "close"})
        with SyncClient(api) as c:
            for t in c.traces(limit=50):
                if any(s.startswith("ratings") for s in t["services"]):
                    spans = c.trace(t["traceId"])
                    if _chain(spans):
                        found.update(spans=spans, id=t["traceId"])
                        return True
        return False

    eventually(traced, "a whole trace down to ratings at the server's collector")
    spans = found["spans"]
    chain = _chain(spans)
    names = [c.split("-")[0] for c in chain]
    assert names.index("productpage") < names.index("reviews") < names.index("ratings"), chain
    assert "ingress" in chain[0] or "gateway" in chain[0], f"the ingress gateway starts the trace: {chain}"
    assert all(s["attributes"].get("my_tag_literal") == "tracing-e2e" for s in spans)
    tree = subprocess.run([sys.executable, "-m", "meshplane.cli.main", "trace", found["id"], "--server", api],
                          capture_output=True, text=True, timeout=60, check=True).stdout
    assert tree.startswith(f"trace {found['id']}\n") and "\n  " in tree and "ratings" in tree
