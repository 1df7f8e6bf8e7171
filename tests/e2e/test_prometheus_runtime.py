"""The local runtime's Prometheus (Debian's package, as ``scripts/setup`` installs it) against real proxies: after
N requests from one workload's sidecar to another, PromQL over what Prometheus scraped gives the same count of
``istio_requests_total{reporter="destination"}`` as the destination proxy's own ``/stats/prometheus``, with Istio's
labels and ``connection_security_policy="mutual_tls"``, scraped once per instance on its agent's 15020 (Istio's
merged metrics, the agent's ``istio_agent_*`` with them); the control plane's ``pilot_xds`` is scraped too.
Skipped only when no ``prometheus`` binary is installed (CI installs it)."""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from test_runtime import small_manifest
from test_runtime_support import eventually, running_mesh

from tests.support.promtext import samples

pytestmark = [pytest.mark.envoy,
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")]

N = 12


def _query(prom: str, promql: str) -> float | None:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.loads(r.read())
    result = doc["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _via_sidecar(sidecar: str, host: str, path: str) -> int:
    """A request as the workload's application makes it: through its sidecar (explicit proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://{sidecar}:15001"}))
    with opener.open(f"http://{host}{path}", timeout=10) as r:
        return int(r.status)


def test_promql_counts_what_the_proxies_counted(tmp_path: Path) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(yaml.safe_dump(small_manifest(tmp_path / "unhealthy")))
    with running_mesh(manifest, tmp_path / "home") as (_, st):
        prom = st["prometheus"]
        assert prom.startswith("http://127."), st
        by = {w["workload"]: w for w in st["workloads"]}
        details, ratings = by["details-v1"]["address"], by["ratings-v1"]["address"]
        for i in range(N):
            assert _via_sidecar(details, "ratings:9080", f"/ratings/{i}") == 200
        labels = ('reporter="destination",destination_workload="ratings-v1",source_workload="details-v1",'
                  'response_code="200"')
        promql = f"sum(istio_requests_total{{{labels}}})"

        def scraped() -> bool:
            return _query(prom, promql) == N

        eventually(scraped, f"Prometheus has {N} requests")
        with urllib.request.urlopen(f"http://{ratings}:15090/stats/prometheus", timeout=10) as r:
            own = samples(r.read().decode())
        counted = [(dict(lbls), v) for (name, lbls), v in own.items() if name == "istio_requests_total"
                   and dict(lbls).get("source_workload") == "details-v1"]
        assert [v for _, v in counted] == [N]
        (lbls, _), = counted
        assert lbls["connection_security_policy"] == "mutual_tls"
        assert lbls["source_principal"] == "spiffe://cluster.local/ns/default/sa/sa-details"
        assert _query(prom, f"sum(istio_requests_total{{{labels},connection_security_policy=\"mutual_tls\"}})") == N
        # The targets carry Kubernetes-like labels, so per-pod queries work too.
        assert _query(prom, f'sum(istio_requests_total{{{labels},pod=~"ratings-v1-.*",namespace="default"}})') == N
        # Each instance is scraped once, on its agent's 15020 (Envoy's series merged in: the sums above are N, not
        # 2N), and the agents' own metrics come with them.
        eventually(lambda: _query(prom, f'count(istio_agent_process_start_time_seconds{{pod=~"ratings-v1-.*",'
                                        f'instance="{ratings}:15020"}})') == 1, "the agent's metrics scraped")
        eventually(lambda: _query(prom, 'pilot_xds{job="meshplane-control-plane"}') == 2,
                   "the control plane scraped: two proxies connected")
