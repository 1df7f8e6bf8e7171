"""Envoy's admin ``/config_dump`` (and ``/clusters?format=json``) as the tables ``istioctl proxy-config`` prints.

Why these columns: they are istioctl's (``istioctl/pkg/writer/envoy/configdump``), so a reader of Istio's
troubleshooting guides finds the same table: clusters by SERVICE FQDN / PORT / SUBSET / DIRECTION / TYPE (parsed
from Istio's ``outbound|PORT|SUBSET|HOST`` names, which our translation keeps), listeners by ADDRESSES / PORT /
MATCH / DESTINATION, routes by NAME / VHOST NAME / DOMAINS / MATCH plus where each route sends (DESTINATION: a
column istioctl only shows with ``-o json``, here because "which cluster does this path reach" is the question one
asks), endpoints by ENDPOINT / STATUS / OUTLIER CHECK / CLUSTER (from ``/clusters``, which knows health), secrets by
RESOURCE NAME / TYPE / STATUS / VALID CERT / SERIAL NUMBER / NOT AFTER / NOT BEFORE. Istio's DESTINATION RULE and
VIRTUAL SERVICE columns come from config metadata our translation does not attach; ``meshplane describe`` says which
DestinationRule and VirtualService apply instead.

Envoy prints its config dump with the protos' field names (``dynamic_active_clusters``), which is what is read here.
Private keys never appear: Envoy's admin redacts them, and the secret table shows certificates only.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

Row = list[str]
_T = "type.googleapis.com/envoy.admin.v3."


class ConfigDumpError(ValueError):
    """What was read is not an Envoy config dump (or lacks the section asked for)."""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class ConfigDump:
    """One Envoy's configuration as its admin reported it. ``clusters_status`` is ``/clusters?format=json`` (the
    endpoints with their health), optional."""

    raw: Mapping[str, Any]
    clusters_status: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, Mapping) or not isinstance(self.raw.get("configs"), list):
            raise ConfigDumpError("not an Envoy config dump (no 'configs' list)")

    def section(self, name: str) -> dict[str, Any]:
        """The entry of ``configs`` whose ``@type`` is ``envoy.admin.v3.NAME`` ({} when absent)."""
        for entry in self.raw["configs"]:
            if isinstance(entry, dict) and entry.get("@type") == _T + name:
                return entry
        return {}

    def bootstrap(self) -> dict[str, Any]:
        return _dict(self.section("BootstrapConfigDump").get("bootstrap"))

    def clusters(self) -> list[dict[str, Any]]:
        s = self.section("ClustersConfigDump")
        out = [_dict(c.get("cluster")) for c in _list(s.get("static_clusters"))]
        out += [_dict(c.get("cluster")) for c in _list(s.get("dynamic_active_clusters"))]
        out += [_dict(c.get("cluster")) for c in _list(s.get("dynamic_warming_clusters"))]
        return [c for c in out if c]

    def listeners(self) -> list[dict[str, Any]]:
        s = self.section("ListenersConfigDump")
        out = [_dict(x.get("listener")) for x in _list(s.get("static_listeners"))]
        for d in _list(s.get("dynamic_listeners")):
            state = _dict(d.get("active_state")) or _dict(d.get("warming_state"))
            out.append(_dict(state.get("listener")))
        return [x for x in out if x]

    def routes(self) -> list[dict[str, Any]]:
        s = self.section("RoutesConfigDump")
        out = [_dict(r.get("route_config")) for r in _list(s.get("static_route_configs"))]
        out += [_dict(r.get("route_config")) for r in _list(s.get("dynamic_route_configs"))]
        return [r for r in out if r]

    def secrets(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, ACTIVE | WARMING, the secret) for every static and SDS secret."""
        s = self.section("SecretsConfigDump")
        out = [(str(x.get("name", "")), "ACTIVE", _dict(x.get("secret"))) for x in _list(s.get("static_secrets"))]
        for key, state in (("dynamic_active_secrets", "ACTIVE"), ("dynamic_warming_secrets", "WARMING")):
            out += [(str(x.get("name", "")), state, _dict(x.get("secret"))) for x in _list(s.get(key))]
        return out

    def of(self, kind: str) -> Any:
        """The part of the dump ``-o json|yaml`` prints for ``kind``."""
        parts: dict[str, Any] = {"clusters": self.clusters, "listeners": self.listeners, "routes": self.routes,
                                 "bootstrap": self.bootstrap}
        if kind in parts:
            return parts[kind]()
        if kind == "secret":
            return [{"name": n, "state": st, "secret": sec} for n, st, sec in self.secrets()]
        if kind == "endpoints":
            return _list(self.clusters_status.get("cluster_statuses"))
        return dict(self.raw)


# --- clusters ------------------------------------------------------------------------------------------------

CLUSTER_HEADER = ("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE")


def _cluster_type(c: Mapping[str, Any]) -> str:
    if "cluster_type" in c:
        return str(_dict(c["cluster_type"]).get("name", "")).rpartition(".")[2].upper() or "CUSTOM"
    return str(c.get("type") or "STATIC")


def cluster_row(c: Mapping[str, Any]) -> Row:
    name = str(c.get("name", ""))
    parts = name.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound"):
        direction, port, subset, fqdn = parts
        return [fqdn or "-", port or "-", subset or "-", direction, _cluster_type(c)]
    return [name, "-", "-", "-", _cluster_type(c)]


def cluster_rows(dump: ConfigDump, *, fqdn: str = "", port: int = 0, subset: str = "", direction: str = ""
                 ) -> list[Row]:
    rows = []
    for c in dump.clusters():
        r = cluster_row(c)
        if fqdn and fqdn not in r[0]:
            continue
        if port and r[1] != str(port):
            continue
        if subset and r[2] != subset:
            continue
        if direction and r[3] != direction:
            continue
        rows.append(r)
    return sorted(rows, key=lambda r: (r[0], r[1], r[2], r[3]))


# --- listeners -----------------------------------------------------------------------------------------------

LISTENER_HEADER = ("ADDRESSES", "PORT", "MATCH", "DESTINATION")
HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"


def _socket(addr: Any) -> tuple[str, int]:
    sa = _dict(_dict(addr).get("socket_address"))
    return str(sa.get("address", "")), int(sa.get("port_value") or 0)


def _chain_match(m: Mapping[str, Any]) -> str:
    parts = []
    if m.get("destination_port"):
        parts.append(f"port {m['destination_port']}")
    for r in _list(m.get("prefix_ranges")):
        parts.append(f"{_dict(r).get('address_prefix')}/{_dict(r).get('prefix_len', 32)}")
    if m.get("server_names"):
        parts.append("SNI: " + ",".join(map(str, m["server_names"])))
    if m.get("transport_protocol"):
        parts.append(f"Trans: {m['transport_protocol']}")
    if m.get("application_protocols"):
        parts.append("App: " + ",".join(map(str, m["application_protocols"])))
    return "; ".join(parts) or "ALL"


def _filter_destination(filters: list[Any]) -> str:
    for f in filters:
        f = _dict(f)
        cfg = _dict(f.get("typed_config"))
        name = str(f.get("name", ""))
        if name == HCM or str(cfg.get("@type", "")).endswith("HttpConnectionManager"):
            rds = _dict(cfg.get("rds"))
            if rds:
                return f"Route: {rds.get('route_config_name', '')}"
            inline = _dict(cfg.get("route_config"))
            return f"Inline Route: {inline.get('name') or '/*'}"
        if name == TCP_PROXY or str(cfg.get("@type", "")).endswith("TcpProxy"):
            if cfg.get("cluster"):
                return f"Cluster: {cfg['cluster']}"
            weighted = [str(_dict(w).get("name")) for w in _list(_dict(cfg.get("weighted_clusters")).get("clusters"))]
            return "Clusters: " + ",".join(weighted)
    return "Non-HTTP/Non-TCP"


def listener_rows(dump: ConfigDump, *, port: int = 0, address: str = "") -> list[Row]:
    rows: list[tuple[int, str, Row]] = []
    for lst in dump.listeners():
        addr, lport = _socket(lst.get("address"))
        if port and lport != port:
            continue
        if address and addr != address:
            continue
        chains = [_dict(c) for c in _list(lst.get("filter_chains"))]
        if lst.get("default_filter_chain"):
            chains.append({**_dict(lst["default_filter_chain"]), "_default": True})
        for ch in chains:
            match = "(default)" if ch.get("_default") else _chain_match(_dict(ch.get("filter_chain_match")))
            rows.append((lport, addr, [addr, str(lport), match, _filter_destination(_list(ch.get("filters")))]))
        if not chains:
            rows.append((lport, addr, [addr, str(lport), "-", "-"]))
    return [r for _, _, r in sorted(rows, key=lambda t: (t[0], t[1]))]


# --- routes --------------------------------------------------------------------------------------------------

ROUTE_HEADER = ("NAME", "VHOST NAME", "DOMAINS", "MATCH", "DESTINATION")


def _domains(domains: list[Any]) -> str:
    """istioctl's rule: one domain as it is; several: those without a port, at most two, then ``+ N more...``."""
    ds = [str(d) for d in domains]
    if len(ds) <= 1:
        return ds[0] if ds else ""
    plain = [d for d in ds if ":" not in d or (d.count(":") > 2 and d.endswith("]"))] or ds
    return ", ".join(plain[:2]) + (f" + {len(plain) - 2} more..." if len(plain) > 2 else "")


def _route_match(m: Mapping[str, Any]) -> str:
    if "prefix" in m:
        text = f"{m['prefix']}*"
    elif "path" in m:
        text = str(m["path"])
    elif "safe_regex" in m:
        text = f"~{_dict(m['safe_regex']).get('regex', '')}"
    elif "path_separated_prefix" in m:
        text = f"{m['path_separated_prefix']}/*"
    elif "connect_matcher" in m:
        text = "CONNECT"  # HTTP CONNECT requests (allow_any's tunnel), not a path
    else:
        text = "/*"
    for h in _list(m.get("headers")):
        h = _dict(h)
        sm = _dict(h.get("string_match"))
        val = next((f"{k}={v}" for k, v in sm.items() if k != "ignore_case"), "present")
        text += f" [{h.get('name')} {val}]"
    return text


def _route_destination(r: Mapping[str, Any]) -> str:
    if "route" in r:
        a = _dict(r["route"])
        if a.get("cluster"):
            return str(a["cluster"])
        weighted = _list(_dict(a.get("weighted_clusters")).get("clusters"))
        if weighted:
            return ", ".join(f"{_dict(w).get('name')} {_dict(w).get('weight', 0)}%" for w in weighted)
        if a.get("cluster_header"):
            return f"cluster from header {a['cluster_header']}"
        return "route"
    if "redirect" in r:
        return "redirect"
    if "direct_response" in r:
        return f"direct response {_dict(r['direct_response']).get('status', '')}"
    return "-"


def route_rows(dump: ConfigDump, *, name: str = "") -> list[Row]:
    rows = []
    for rc in sorted(dump.routes(), key=lambda r: str(r.get("name", ""))):
        rname = str(rc.get("name", ""))
        if name and rname != name:
            continue
        for vh in _list(rc.get("virtual_hosts")):
            vh = _dict(vh)
            routes = [_dict(x) for x in _list(vh.get("routes"))]
            for r in routes:
                rows.append([rname, str(vh.get("name", "")), _domains(_list(vh.get("domains"))),
                             _route_match(_dict(r.get("match"))), _route_destination(r)])
            if not routes:
                rows.append([rname, str(vh.get("name", "")), _domains(_list(vh.get("domains"))), "/*", "404"])
    return rows


# --- endpoints -----------------------------------------------------------------------------------------------

ENDPOINT_HEADER = ("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER")


def _host_statuses(dump: ConfigDump) -> Iterator[tuple[str, dict[str, Any]]]:
    for cs in _list(dump.clusters_status.get("cluster_statuses")):
        cs = _dict(cs)
        for hs in _list(cs.get("host_statuses")):
            yield str(cs.get("name", "")), _dict(hs)


def endpoint_rows(dump: ConfigDump, *, cluster: str = "", status: str = "") -> list[Row]:
    rows = []
    for cname, hs in _host_statuses(dump):
        if cluster and cluster not in cname:
            continue
        addr = _dict(hs.get("address"))
        if "pipe" in addr:
            ep = f"unix://{_dict(addr['pipe']).get('path', '')}"
        else:
            host, port = _socket(addr)
            ep = f"{host}:{port}"
        health = _dict(hs.get("health_status"))
        state = str(health.get("eds_health_status") or "HEALTHY")
        if any(health.get(k) for k in ("failed_active_health_check", "failed_outlier_check",
                                       "failed_active_degraded_check", "pending_dynamic_removal")):
            state = "UNHEALTHY" if state == "HEALTHY" else state
        if status and state != status.upper():
            continue
        rows.append([ep, state, "FAILED" if health.get("failed_outlier_check") else "OK", cname])
    return sorted(rows, key=lambda r: (r[3], r[0]))


# --- secrets -------------------------------------------------------------------------------------------------

SECRET_HEADER = ("RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE")


def _pem(source: Mapping[str, Any]) -> bytes:
    if source.get("inline_bytes"):
        return base64.b64decode(str(source["inline_bytes"]))
    if source.get("inline_string"):
        return str(source["inline_string"]).encode()
    return b""


def _stamp(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def secret_rows(dump: ConfigDump, now: datetime.datetime) -> list[Row]:
    rows = []
    for name, state, sec in dump.secrets():
        if "tls_certificate" in sec:
            kind, pem = "Cert Chain", _pem(_dict(_dict(sec["tls_certificate"]).get("certificate_chain")))
        elif "validation_context" in sec:
            kind, pem = "CA", _pem(_dict(_dict(sec["validation_context"]).get("trusted_ca")))
        else:
            rows.append([name, "Other", state, "-", "-", "-", "-"])
            continue
        try:
            cert = x509.load_pem_x509_certificates(pem)[0] if pem else None
        except ValueError:
            cert = None
        if cert is None:
            rows.append([name, kind, state, "false", "-", "-", "-"])
            continue
        before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
        valid = before <= now <= after
        rows.append([name, kind, state, str(valid).lower(), format(cert.serial_number, "x"), _stamp(after),
                     _stamp(before)])
    return rows


__all__ = ["CLUSTER_HEADER", "ENDPOINT_HEADER", "LISTENER_HEADER", "ROUTE_HEADER", "SECRET_HEADER", "ConfigDump",
           "ConfigDumpError", "cluster_row", "cluster_rows", "endpoint_rows", "listener_rows", "route_rows",
           "secret_rows"]
