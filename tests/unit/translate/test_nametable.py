"""The DNS name table (NDS) and auto-allocated VIPs: what the agent's DNS proxy answers, and the TCP listeners
that match the same addresses."""

from __future__ import annotations

import ipaddress

from _translate_helpers import bookinfo_registry, context, fqdn, listeners, service_entry, sidecar

from meshplane.model import nds, xdstypes
from meshplane.translate import generate
from meshplane.translate.nametable import AUTO_VIP_NETWORK, allocate


def _table(proxy_ns: str = "default", objs: list | None = None) -> dict[str, object]:
    ctx = context(objs if objs is not None else bookinfo_registry())
    (res,) = generate(xdstypes.NAME_TABLE, sidecar(ns=proxy_ns), ctx)
    assert res.resource.type_url == nds.TYPE_URL
    return dict(nds.NameTable.FromString(res.resource.value).table)


def test_allocation_is_stable_unique_and_in_the_reserved_class() -> None:
    hosts = [f"svc-{i}.example.com" for i in range(500)]
    first = allocate(hosts)
    assert len(set(first.values())) == 500
    assert all(ipaddress.ip_address(v) in AUTO_VIP_NETWORK for v in first.values())
    assert allocate(list(reversed(hosts))) == first  # order of discovery does not matter
    # A host added later does not move the others unless it takes a hashed slot first (rare): most stay.
    more = allocate([*hosts, "late.example.com"])
    assert sum(more[h] == first[h] for h in hosts) >= 499


def test_table_has_kubernetes_style_services_with_their_short_names() -> None:
    table = _table()
    info = table[fqdn("reviews")]
    assert info.registry == "Kubernetes" and info.shortname == "reviews" and info.namespace == "default"
    assert len(info.ips) == 1 and ipaddress.ip_address(info.ips[0]) in AUTO_VIP_NETWORK


def test_service_entry_addresses_win_and_external_hosts_are_marked() -> None:
    objs = [*bookinfo_registry(),
            service_entry("ext", hosts=["api.example.com"], location="MESH_EXTERNAL", resolution="DNS",
                          ports=[{"number": 443, "name": "tls", "protocol": "TLS"}]),
            service_entry("db", hosts=["db.internal"], addresses=["10.9.9.9"],
                          ports=[{"number": 5432, "name": "tcp", "protocol": "TCP"}]),
            service_entry("wild", hosts=["*.wild.example.com"], location="MESH_EXTERNAL", resolution="NONE",
                          ports=[{"number": 80, "name": "http", "protocol": "HTTP"}]),
            service_entry("wild-ip", hosts=["*.corp.example.com"], addresses=["10.8.8.8"], resolution="NONE",
                          ports=[{"number": 80, "name": "http", "protocol": "HTTP"}])]
    table = _table(objs=objs)
    assert table["db.internal"].ips == ["10.9.9.9"]
    assert table["api.example.com"].registry == "External"
    assert ipaddress.ip_address(table["api.example.com"].ips[0]) in AUTO_VIP_NETWORK
    # A wildcard host gets no VIP (it stays out of the table) unless it has addresses of its own, as in Istio.
    assert [h for h in table if h.startswith("*")] == ["*.corp.example.com"]
    assert table["*.corp.example.com"].ips == ["10.8.8.8"]


def test_resolution_none_and_the_opt_out_label_get_no_vip() -> None:
    """The proxy would dial the VIP itself (ORIGINAL_DST): the name is left to the upstream resolver, as in Istio."""
    objs = [*bookinfo_registry(),
            service_entry("passthrough", hosts=["db.partner.example"], location="MESH_EXTERNAL", resolution="NONE",
                          ports=[{"number": 5432, "name": "tcp", "protocol": "TCP"}]),
            service_entry("dns", hosts=["api.partner.example"], location="MESH_EXTERNAL", resolution="DNS",
                          ports=[{"number": 443, "name": "tls", "protocol": "TLS"}])]
    opted_out = service_entry("optout", hosts=["billing.partner.example"], location="MESH_EXTERNAL", resolution="DNS",
                              ports=[{"number": 443, "name": "tls", "protocol": "TLS"}])
    opted_out["metadata"]["labels"] = {"networking.istio.io/enable-autoallocate-ip": "False"}  # Istio's opt-out
    objs.append(opted_out)
    table = _table(objs=objs)
    assert "db.partner.example" not in table
    assert "billing.partner.example" not in table
    assert ipaddress.ip_address(table["api.partner.example"].ips[0]) in AUTO_VIP_NETWORK
    lds = listeners(sidecar(INTERCEPTION_MODE="REDIRECT"), context(objs))
    assert not [name for name in lds if name.startswith("240.240.") and name.endswith("_5432")]


def test_tcp_service_without_address_gets_a_listener_on_its_auto_vip() -> None:
    objs = [*bookinfo_registry(), service_entry("redis", ports=[{"number": 6379, "name": "tcp", "protocol": "TCP"}],
                                                selector={"app": "redis"})]
    vip = _table(objs=objs)[fqdn("redis")].ips[0]
    lds = listeners(sidecar(INTERCEPTION_MODE="REDIRECT"), context(objs))
    assert f"{vip}_6379" in lds and not lds[f"{vip}_6379"].bind_to_port.value
    assert "0.0.0.0_6379" in lds  # still there, as before, for a connection to any address on that port
    assert f"{vip}_6379" not in listeners(sidecar(), context(objs))  # explicit mode has no per-port listeners
