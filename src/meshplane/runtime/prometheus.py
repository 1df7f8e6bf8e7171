"""A real Prometheus for the local runtime: it scrapes the control plane and every proxy, as in a cluster.

Why the runtime runs it: Istio's dashboards and PromQL are written against Prometheus, and a user checks
``istio_requests_total`` there, not in a proxy's text output. Debian's ``prometheus`` package is used when it is
installed (``scripts/setup`` installs it when apt is available); without it the mesh runs without one and the
proxies' own ``/stats/prometheus`` still answer.

The configuration is written once; the scrape targets are a file-based service discovery file the supervisor
rewrites when instances come and go (Prometheus rereads it), each target labelled like Kubernetes' pod targets
(``namespace``, ``pod``, ``cluster``, ``app``, ``version``) so queries grouped by them work.

Each instance is scraped once, on its agent's status port (15020, ``/stats/prometheus``): Istio's merged metrics,
the agent's own (``istio_agent_*``) followed by everything Envoy's 15090 serves, as Prometheus scrapes a pod
annotated ``prometheus.io/port: "15020"`` in Istio. Never 15090 as well: its series would be counted twice.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATS_PORT = 15020  # the agent's status port: its metrics and Envoy's (agent.statusport)
PORT = 9090
SCRAPE_INTERVAL = "5s"


def find_prometheus() -> str | None:
    return shutil.which("prometheus")


@dataclass(frozen=True, slots=True)
class Target:
    """One proxy to scrape: its instance address and Kubernetes-like labels."""

    address: str
    labels: Mapping[str, str]


def config(api: str, targets_file: Path) -> dict[str, Any]:
    """``api``: the control plane's ``host:port`` (its ``/metrics``)."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": "meshplane-control-plane", "metrics_path": "/metrics",
             "static_configs": [{"targets": [api]}]},
            {"job_name": "envoy-stats", "metrics_path": "/stats/prometheus",
             "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": SCRAPE_INTERVAL}]},
        ],
    }


def targets_document(targets: Iterable[Target]) -> list[dict[str, Any]]:
    return [{"targets": [f"{t.address}:{STATS_PORT}"], "labels": dict(t.labels)}
            for t in sorted(targets, key=lambda t: t.address)]


def write_targets(path: Path, targets: Iterable[Target]) -> bool:
    """Rewrite the targets file when it changed (atomically: Prometheus may read it at any time)."""
    text = json.dumps(targets_document(targets), indent=1, sort_keys=True)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def argv(binary: str, config_file: Path, data_dir: Path, listen: str) -> list[str]:
    return [binary, f"--config.file={config_file}", f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address={listen}", "--storage.tsdb.retention.time=1d", "--log.level=warn"]


__all__ = ["PORT", "STATS_PORT", "Target", "argv", "config", "find_prometheus", "targets_document",
           "write_targets"]
