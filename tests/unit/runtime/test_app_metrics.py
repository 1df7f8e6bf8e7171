"""Istio's metrics merging in the local runtime: a workload's ``prometheus.io/*`` annotations tell its agent
where the application's own metrics are (``runtime.manifest.app_metrics``, ``Supervisor.agent_config``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshplane.runtime.home import Home
from meshplane.runtime.manifest import ManifestError, app_metrics, parse_manifest
from meshplane.runtime.supervisor import Instance, Supervisor


@pytest.mark.parametrize(("annotations", "expected"), [
    ({"prometheus.io/scrape": "true", "prometheus.io/port": "9102"}, (9102, "/metrics")),
    ({"prometheus.io/scrape": "True", "prometheus.io/port": "9102", "prometheus.io/path": "/m"}, (9102, "/m")),
    ({"prometheus.io/scrape": "true"}, None),  # no port: nothing to merge (as in Istio)
    ({"prometheus.io/port": "9102"}, None),  # not asked to scrape
    ({"prometheus.io/scrape": "true", "prometheus.io/port": "9102", "prometheus.istio.io/merge-metrics": "false"},
     None),
    ({}, None),
])
def test_annotations_say_where_the_applications_metrics_are(annotations: dict[str, str],
                                                            expected: tuple[int, str] | None) -> None:
    assert app_metrics(annotations) == expected


@pytest.mark.parametrize(("annotations", "named"), [
    ({"prometheus.io/scrape": "yes"}, "prometheus.io/scrape"),
    ({"prometheus.io/scrape": "true", "prometheus.io/port": "http"}, "prometheus.io/port"),
    ({"prometheus.io/scrape": "true", "prometheus.io/port": "70000"}, "prometheus.io/port"),
    ({"prometheus.io/scrape": "true", "prometheus.io/port": "1", "prometheus.io/path": "metrics"},
     "prometheus.io/path"),
])
def test_a_bad_annotation_is_refused_naming_the_workload_and_the_annotation(annotations: dict[str, str],
                                                                           named: str) -> None:
    with pytest.raises(ManifestError, match=r"annotations: annotation " + named.replace(".", r"\.")) as e:
        parse_manifest({"workloads": [{"name": "web", "command": ["true"], "ports": [9080],
                                       "annotations": annotations}]})
    assert "web" in str(e.value) or "workloads[0]" in str(e.value)


def _agent_url(tmp_path: Path, workload: dict[str, Any]) -> str:
    m = parse_manifest({"workloads": [{"name": "web", "command": ["true"], **workload}]})
    home = Home(tmp_path / "home")
    home.create()
    sup = Supervisor(home, m)
    sup.octet = 77
    ((w, c),) = list(m.placements())
    inst = Instance(w, c, 0, sup.address_for(w, c, 0))
    return sup.agent_config(inst).app_metrics_url


def test_the_agent_reads_the_application_where_it_listens(tmp_path: Path) -> None:
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": "9102", "prometheus.io/path": "/stats"}
    url = _agent_url(tmp_path, {"ports": [9080], "annotations": scrape})
    assert url.startswith("http://127.77.") and url.endswith(":9102/stats")  # its own port: as annotated
    # a service port of the workload is its sidecar's; the application serves it on that port's app_port
    on_service_port = {**scrape, "prometheus.io/port": "9080"}
    assert _agent_url(tmp_path / "b", {"ports": [9080], "annotations": on_service_port}).endswith(":19080/stats")
    assert _agent_url(tmp_path / "c", {"ports": [9080]}) == ""
