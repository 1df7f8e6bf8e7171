"""The ServiceEntry source and the registry snapshot: workloadSelector, inline endpoints, exportTo, resolution,
shards and endpoint diffs."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "translate"))

from _translate_helpers import NS, fqdn, service_entry, snapshot, workload_entry

from meshplane.model.proxy import Locality
from meshplane.model.service import Endpoint, Location, Protocol, RegistrySnapshot, Resolution, Service, ShardKey
from meshplane.registry import ServiceEntrySource, ServiceRegistry, aggregate, diff_endpoints, registry_from_config


def test_workload_selector_picks_workload_entries_in_same_namespace_by_labels() -> None:
    objs = [
        service_entry("reviews", selector={"app": "reviews"}),
        workload_entry("r1", "10.0.0.1", {"app": "reviews", "version": "v1"}, sa="sa-r", locality="r/z/s"),
        workload_entry("r2", "10.0.0.2", {"app": "reviews", "version": "v2"}),
        workload_entry("x", "10.0.0.3", {"app": "ratings"}),
        workload_entry("elsewhere", "10.0.0.4", {"app": "reviews"}, ns="other"),
    ]
    reg = registry_from_config(snapshot(objs), "c1")
    eps = reg.endpoints_of(fqdn("reviews"))
    assert sorted(e.address for e in eps) == ["10.0.0.1", "10.0.0.2"]
    e1 = next(e for e in eps if e.address == "10.0.0.1")
    assert e1.service_account == "sa-r" and e1.locality == Locality("r", "z", "s") and e1.cluster_id == "c1"
    assert e1.labels["version"] == "v1"
    svc = reg.service(fqdn("reviews"))
    assert svc is not None and svc.ports[0].protocol is Protocol.HTTP and svc.location is Location.MESH_INTERNAL
    assert set(reg.shards[fqdn("reviews")]) == {ShardKey("c1", "ServiceEntry")}


def test_inline_endpoints_dns_and_export_to() -> None:
    objs = [
        service_entry("ext", hosts=["api.example.com"], resolution="DNS", location="MESH_EXTERNAL",
                      ports=[{"number": 443, "name": "https", "protocol": "HTTPS"}], export_to=["."],
                      endpoints=[{"address": "a.example.com", "weight": 2, "ports": {"https": 8443}}]),
    ]
    reg = registry_from_config(snapshot(objs))
    svc = reg.service("api.example.com")
    assert svc is not None
    assert svc.resolution is Resolution.DNS and svc.export_to == frozenset({NS})
    assert svc.visible_in(NS) and not svc.visible_in("other")
    (ep,) = reg.endpoints_of("api.example.com")
    assert ep.weight == 2 and ep.port_for(svc.ports[0]) == 8443


def test_unhealthy_workload_entry() -> None:
    we = workload_entry("r1", "10.0.0.1", {"app": "reviews"})
    we["status"] = {"conditions": [{"type": "Healthy", "status": "False"}]}
    reg = registry_from_config(snapshot([service_entry("reviews", selector={"app": "reviews"}), we]))
    assert [e.healthy for e in reg.endpoints_of(fqdn("reviews"))] == [False]


def test_diff_endpoints_reports_changed_hosts_only() -> None:
    base = [service_entry("a", selector={"app": "a"}), service_entry("b", selector={"app": "b"}),
            workload_entry("a1", "10.0.0.1", {"app": "a"}), workload_entry("b1", "10.0.0.2", {"app": "b"})]
    old = registry_from_config(snapshot(base))
    same = registry_from_config(snapshot(list(reversed(base))))
    assert diff_endpoints(old, same) == frozenset()
    changed = registry_from_config(snapshot([*base, workload_entry("a2", "10.0.0.3", {"app": "a"})]))
    assert diff_endpoints(old, changed) == {fqdn("a")}
    gone = registry_from_config(snapshot(base[:3]))
    assert diff_endpoints(old, gone) == {fqdn("b")}


class _Static:
    """A second source, as a member cluster would be."""

    def __init__(self, cluster: str, eps: list[Endpoint]) -> None:
        self._cluster, self._eps = cluster, eps

    @property
    def cluster_id(self) -> str:
        return self._cluster

    @property
    def source(self) -> str:
        return "Kubernetes"

    def services(self) -> list[Service]:
        return [Service(fqdn("a"), NS, labels={"from": self._cluster})]

    def endpoints(self) -> dict[str, list[Endpoint]]:
        return {fqdn("a"): self._eps}


def test_aggregate_merges_sources_by_host_and_shards_endpoints() -> None:
    se = ServiceEntrySource(snapshot([service_entry("a", selector={"app": "a"}),
                                      workload_entry("a1", "10.0.0.1", {"app": "a"})]), "c1")
    other = _Static("c2", [Endpoint("10.1.0.1", cluster_id="c2")])
    assert isinstance(other, ServiceRegistry) and isinstance(se, ServiceRegistry)
    snap = aggregate([se, other])
    assert isinstance(snap, RegistrySnapshot)
    assert snap.service(fqdn("a")).source.startswith("ServiceEntry/")  # type: ignore[union-attr]
    assert set(snap.shards[fqdn("a")]) == {ShardKey("c1", "ServiceEntry"), ShardKey("c2", "Kubernetes")}
    assert sorted(e.address for e in snap.endpoints_of(fqdn("a"))) == ["10.0.0.1", "10.1.0.1"]
    assert snap.version and snap.version == aggregate([se, other]).version


def test_defaults_of_absent_fields_follow_istio() -> None:
    """Absent resolution is NONE and absent location MESH_EXTERNAL (Istio's defaults); a port without a number is
    skipped and one without a name is named after its number; an endpoint without an address is no endpoint;
    a weight of 0 counts as 1."""
    se = service_entry("ext", hosts=["a.example.com", "a.example.com"],
                       ports=[{"number": 8080, "protocol": "HTTP"}, {"name": "nonum", "protocol": "TCP"}],
                       endpoints=[{"address": "10.0.0.1", "weight": 0, "network": "n1", "locality": "r/z"},
                                  {"labels": {"app": "x"}}])
    del se["spec"]["resolution"], se["spec"]["location"]
    se["metadata"]["labels"] = {"team": "a"}
    reg = registry_from_config(snapshot([se]), "c1")
    svc = reg.service("a.example.com")
    assert svc is not None and len(reg.services) == 1
    assert svc.resolution is Resolution.NONE and svc.location is Location.MESH_EXTERNAL
    assert [(p.name, p.number, p.protocol) for p in svc.ports] == [("port-8080", 8080, Protocol.HTTP)]
    assert svc.labels == {"team": "a"} and svc.export_to == frozenset({"*"})
    assert svc.source == f"ServiceEntry/{NS}/ext"
    (ep,) = reg.endpoints_of("a.example.com")
    assert (ep.weight, ep.network, ep.locality, ep.cluster_id) == (1, "n1", Locality("r", "z", ""), "c1")


def test_workload_entry_cluster_label_and_health_condition() -> None:
    """A WorkloadEntry labelled topology.istio.io/cluster belongs to that cluster; Healthy=True (or no Healthy
    condition) is healthy, only Healthy=False is not."""
    local = workload_entry("r1", "10.0.0.1", {"app": "reviews", "topology.istio.io/cluster": "local-1"})
    local["status"] = {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Healthy", "status": "True"}]}
    plain = workload_entry("r2", "10.0.0.2", {"app": "reviews"}, ports={"http": 19080})
    reg = registry_from_config(snapshot([service_entry("reviews", selector={"app": "reviews"}), local, plain]), "c1")
    eps = {e.address: e for e in reg.endpoints_of(fqdn("reviews"))}
    assert eps["10.0.0.1"].cluster_id == "local-1" and eps["10.0.0.1"].healthy
    assert eps["10.0.0.2"].cluster_id == "c1" and eps["10.0.0.2"].ports == {"http": 19080}
    assert eps["10.0.0.1"].workload_name == "r1" and eps["10.0.0.1"].namespace == NS
