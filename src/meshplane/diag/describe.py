"""``meshplane describe pod|service``: which Istio objects apply to one workload instance or service, and what they
do to it, as ``istioctl x describe`` tells it.

Why over the API's objects rather than a proxy's config: the question is "which of *my* objects is in effect and
why", which the generated Envoy config no longer says. The rules are Istio's: a pod is a WorkloadEntry (the local
runtime and member clusters register one per instance); its services are the ServiceEntries whose
``workloadSelector`` matches its labels in its namespace; a VirtualService or DestinationRule applies to a service
when one of its hosts names the service (short names are completed with the object's namespace); the subsets of a
DestinationRule the pod is in are those whose labels it carries; PeerAuthentication is taken most specific first
(workload selector, then namespace, then the root namespace) and port-level modes override; an
AuthorizationPolicy applies when it is in the root namespace or the pod's and has no selector or a matching one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]
ROOT_NAMESPACE = "istio-system"
DOMAIN = "svc.cluster.local"


def _m(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _md(o: Obj) -> Mapping[str, Any]:
    md = o.get("metadata")
    return md if isinstance(md, Mapping) else {}


def _spec(o: Obj) -> Mapping[str, Any]:
    s = o.get("spec")
    return s if isinstance(s, Mapping) else {}


def ns_of(o: Obj) -> str:
    return str(_md(o).get("namespace") or "default")


def name_of(o: Obj) -> str:
    return str(_md(o).get("name") or "")


def full_host(host: str, namespace: str) -> str:
    """Istio's completion of a short host: ``reviews`` in ``default`` is ``reviews.default.svc.cluster.local``."""
    return host if "." in host or host == "*" else f"{host}.{namespace}.{DOMAIN}"


def host_matches(pattern: str, host: str) -> bool:
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return False


def selects(selector: Any, labels: Mapping[str, str]) -> bool:
    """A ``selector.matchLabels`` / ``workloadSelector.labels`` map matches ``labels``; no selector matches all."""
    if not isinstance(selector, Mapping):
        return True
    wanted = selector.get("matchLabels", selector.get("labels", {}))
    if not isinstance(wanted, Mapping):
        return True
    return all(labels.get(str(k)) == str(v) for k, v in wanted.items())


@dataclass(frozen=True, slots=True)
class Mesh:
    """What ``describe`` reads from the API, grouped by kind."""

    service_entries: Sequence[Obj] = ()
    workload_entries: Sequence[Obj] = ()
    virtual_services: Sequence[Obj] = ()
    destination_rules: Sequence[Obj] = ()
    peer_authentications: Sequence[Obj] = ()
    authorization_policies: Sequence[Obj] = ()
    root_namespace: str = ROOT_NAMESPACE


@dataclass(slots=True)
class Report:
    lines: list[str] = field(default_factory=list)

    def add(self, text: str, indent: int = 0) -> None:
        self.lines.append("   " * indent + text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class DescribeError(LookupError):
    """The pod or service asked for does not exist; the message names it."""


# --- pieces ----------------------------------------------------------------------------------------------

def services_of(mesh: Mesh, we: Obj) -> list[Obj]:
    labels = {str(k): str(v) for k, v in (_spec(we).get("labels") or {}).items()}
    return [se for se in mesh.service_entries if ns_of(se) == ns_of(we) and _spec(se).get("workloadSelector")
            and selects(_spec(se)["workloadSelector"], labels)]


def hosts_of(se: Obj) -> list[str]:
    return [full_host(str(h), ns_of(se)) for h in _spec(se).get("hosts") or []]


def _for_sidecars(vs: Obj) -> bool:
    gws = _spec(vs).get("gateways") or []
    return not gws or "mesh" in gws


def _destinations(vs: Obj) -> set[str]:
    out = set()
    for kind in ("http", "tcp", "tls"):
        for route in _spec(vs).get(kind) or []:
            for d in (route.get("route") or []) if isinstance(route, Mapping) else []:
                dest = d.get("destination") if isinstance(d, Mapping) else None
                if isinstance(dest, Mapping):
                    out.add(full_host(str(dest.get("host", "")), ns_of(vs)))
    return out


def virtual_services_for(mesh: Mesh, host: str) -> list[Obj]:
    """VirtualServices that route requests *for* ``host`` inside the mesh (bound to sidecars: no ``gateways`` or
    ``mesh`` among them, and a matching host)."""
    return [vs for vs in mesh.virtual_services if _for_sidecars(vs)
            and any(host_matches(full_host(str(h), ns_of(vs)), host) for h in _spec(vs).get("hosts") or [])]


def gateway_routes_to(mesh: Mesh, host: str) -> list[Obj]:
    """VirtualServices bound to gateways that send requests to ``host``."""
    return [vs for vs in mesh.virtual_services if _spec(vs).get("gateways") and host in _destinations(vs)]


def destination_rules_for(mesh: Mesh, host: str) -> list[Obj]:
    return [dr for dr in mesh.destination_rules if host_matches(full_host(str(_spec(dr).get("host", "")), ns_of(dr)),
                                                                host)]


def _match_text(m: Mapping[str, Any]) -> str:
    parts = []
    uri = m.get("uri")
    if isinstance(uri, Mapping):
        for k, v in uri.items():
            parts.append(f"uri {k} {v}")
    for name, hm in (m.get("headers") or {}).items():
        if isinstance(hm, Mapping):
            parts += [f"header {name} {k} {v}" for k, v in hm.items()]
    for k in ("port", "sourceLabels", "gateways", "method", "authority"):
        if m.get(k):
            parts.append(f"{k} {m[k]}")
    return " and ".join(parts) or "any request"


def _dest_text(d: Mapping[str, Any], namespace: str) -> str:
    dest = _m(d.get("destination"))
    host = full_host(str(dest.get("host", "")), namespace)
    text = host + (f" subset {dest['subset']}" if dest.get("subset") else "")
    port = _m(dest.get("port")).get("number")
    if port:
        text += f" port {port}"
    if "weight" in d:
        text += f" ({d['weight']}%)"
    return text


def describe_virtual_service(r: Report, vs: Obj, subsets: Mapping[str, set[str]], indent: int = 1) -> None:
    spec = _spec(vs)
    gws = spec.get("gateways") or []
    r.add(f"VirtualService: {name_of(vs)}.{ns_of(vs)}" + (f" (gateways {', '.join(map(str, gws))})" if gws else ""),
          indent - 1)
    http = spec.get("http") or []
    r.add(f"{len(http)} HTTP route(s)" + (f", {len(spec.get('tcp') or [])} TCP route(s)" if spec.get("tcp") else "")
          + (f", {len(spec.get('tls') or [])} TLS route(s)" if spec.get("tls") else ""), indent)
    for i, route in enumerate(http):
        if not isinstance(route, Mapping):
            continue
        matches = [m for m in route.get("match") or [] if isinstance(m, Mapping)]
        when = " or ".join(_match_text(m) for m in matches) or "any request"
        dests = [d for d in route.get("route") or [] if isinstance(d, Mapping)]
        if dests:
            what = "route to " + ", ".join(_dest_text(d, ns_of(vs)) for d in dests)
        elif route.get("redirect"):
            what = f"redirect {route['redirect']}"
        elif route.get("directResponse"):
            what = f"direct response {(route['directResponse'] or {}).get('status')}"
        else:
            what = "no destination"
        extras = [k for k in ("rewrite", "timeout", "retries", "fault", "mirror", "headers", "corsPolicy")
                  if route.get(k)]
        r.add(f"[{i}] {route.get('name') or ''}{' ' if route.get('name') else ''}when {when}: {what}"
              + (f" (with {', '.join(extras)})" if extras else ""), indent + 1)
        for d in dests:
            dest = _m(d.get("destination"))
            sub = str(dest.get("subset") or "")
            host = full_host(str(dest.get("host", "")), ns_of(vs))
            if sub and host in subsets and sub not in subsets[host]:
                r.add(f"WARNING: subset {sub} of {host} is defined by no DestinationRule (requests get 503)",
                      indent + 2)


def describe_destination_rule(r: Report, dr: Obj, labels: Mapping[str, str] | None, indent: int = 1) -> None:
    spec = _spec(dr)
    r.add(f"DestinationRule: {name_of(dr)}.{ns_of(dr)} for \"{spec.get('host')}\"", indent - 1)
    subsets = [s for s in spec.get("subsets") or [] if isinstance(s, Mapping)]
    if labels is not None:
        matching = [str(s.get("name")) for s in subsets if selects({"labels": s.get("labels") or {}}, labels)]
        others = [str(s.get("name")) for s in subsets if str(s.get("name")) not in matching]
        r.add(f"Matching subsets: {', '.join(matching) or '-'}", indent)
        if others:
            r.add(f"(Non-matching subsets {', '.join(others)})", indent + 1)
    else:
        r.add("Subsets: " + (", ".join(f"{s.get('name')} {dict(s.get('labels') or {})}" for s in subsets) or "-"),
              indent)
    tp = _m(spec.get("trafficPolicy"))
    tls = _m(tp.get("tls")).get("mode")
    r.add(f"Traffic Policy TLS Mode: {tls or '(unset: auto mTLS)'}", indent)
    for k in ("loadBalancer", "connectionPool", "outlierDetection"):
        if tp.get(k):
            r.add(f"Policy {k}: {dict(tp[k])}", indent)


def _pa_scope(pa: Obj, root: str) -> int:
    """2 workload, 1 namespace, 0 mesh (root namespace without selector)."""
    if _spec(pa).get("selector"):
        return 2
    return 0 if ns_of(pa) == root else 1


def peer_authentications_for(mesh: Mesh, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
    """The PeerAuthentications that apply, most specific first."""
    out = []
    for pa in mesh.peer_authentications:
        sel = _spec(pa).get("selector")
        here = ns_of(pa) == namespace and (not sel or selects(sel, labels))
        if here or (ns_of(pa) == mesh.root_namespace and not sel):
            out.append(pa)
    return sorted(out, key=lambda p: -_pa_scope(p, mesh.root_namespace))


def effective_mtls(pas: Sequence[Obj]) -> tuple[str, dict[str, str]]:
    """(workload mode, port -> mode) from the applying PeerAuthentications, most specific first; UNSET inherits."""
    mode = ""
    for pa in pas:
        m = str((_spec(pa).get("mtls") or {}).get("mode") or "UNSET")
        if m != "UNSET":
            mode = m
            break
    ports: dict[str, str] = {}
    for pa in pas:
        if _spec(pa).get("selector"):  # Istio honours portLevelMtls on workload-level policies only
            for port, v in (_spec(pa).get("portLevelMtls") or {}).items():
                if isinstance(v, Mapping) and str(port) not in ports:
                    ports[str(port)] = str(v.get("mode") or "UNSET")
    return mode or "PERMISSIVE", ports


def authorization_policies_for(mesh: Mesh, namespace: str, labels: Mapping[str, str]) -> list[Obj]:
    out = []
    for ap in mesh.authorization_policies:
        if ns_of(ap) not in (namespace, mesh.root_namespace):
            continue
        spec = _spec(ap)
        sel = spec.get("selector")
        if sel and not selects(sel, labels):
            continue
        out.append(ap)
    return out


def _ap_text(ap: Obj) -> str:
    spec = _spec(ap)
    action = str(spec.get("action") or "ALLOW")
    rules = spec.get("rules")
    if action == "CUSTOM":
        action += f" (provider {(spec.get('provider') or {}).get('name', '?')})"
    if rules is None:
        effect = "denies every request" if action == "ALLOW" else "matches nothing"
        return f"{action}, no rules: {effect}"
    if rules == [{}] or rules == [None]:
        return f"{action} every request"
    return f"{action}, {len(rules)} rule(s)"


def describe_security(r: Report, mesh: Mesh, namespace: str, labels: Mapping[str, str]) -> None:
    pas = peer_authentications_for(mesh, namespace, labels)
    mode, ports = effective_mtls(pas)
    r.add("Effective PeerAuthentication:")
    r.add(f"Workload mTLS mode: {mode}" + ("" if pas else " (no PeerAuthentication applies: the mesh default)"), 1)
    for port, m in sorted(ports.items()):
        r.add(f"Port {port}: {m}", 2)
    if pas:
        r.add("Applied PeerAuthentication:")
        r.add(", ".join(f"{name_of(p)}.{ns_of(p)}" for p in pas), 1)
    aps = authorization_policies_for(mesh, namespace, labels)
    if aps:
        r.add("Applied AuthorizationPolicies:")
        for ap in aps:
            r.add(f"{name_of(ap)}.{ns_of(ap)}: {_ap_text(ap)}", 1)
        if any(str(_spec(a).get("action") or "ALLOW") == "ALLOW" for a in aps):
            r.add("requests that no ALLOW policy matches are denied", 1)
    else:
        r.add("No AuthorizationPolicy applies: every request is allowed")


def _defined_subsets(mesh: Mesh) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for dr in mesh.destination_rules:
        host = full_host(str(_spec(dr).get("host", "")), ns_of(dr))
        out.setdefault(host, set()).update(str(s.get("name")) for s in _spec(dr).get("subsets") or []
                                           if isinstance(s, Mapping))
    return out


def _known_hosts(mesh: Mesh) -> dict[str, set[str]]:
    """Every service host (so a VS's subset on it can be checked), with its defined subsets."""
    out: dict[str, set[str]] = {h: set() for se in mesh.service_entries for h in hosts_of(se)}
    for h, subs in _defined_subsets(mesh).items():
        out.setdefault(h, set()).update(subs)
    return out


def _describe_service_traffic(r: Report, mesh: Mesh, se: Obj, labels: Mapping[str, str] | None) -> None:
    known = _known_hosts(mesh)
    for host in hosts_of(se):
        for dr in destination_rules_for(mesh, host):
            describe_destination_rule(r, dr, labels)
        vss = virtual_services_for(mesh, host)
        for vs in vss:
            describe_virtual_service(r, vs, known)
        if not vss:
            r.add(f"No VirtualService for {host}: requests are spread over all its endpoints")
        for vs in gateway_routes_to(mesh, host):
            if vs not in vss:
                r.add(f"Exposed through: VirtualService {name_of(vs)}.{ns_of(vs)} on gateways "
                      f"{', '.join(map(str, _spec(vs).get('gateways') or []))}")


# --- entry points ------------------------------------------------------------------------------------------

def describe_pod(mesh: Mesh, name: str, namespace: str) -> str:
    we = next((w for w in mesh.workload_entries if name_of(w) == name and ns_of(w) == namespace), None)
    if we is None:
        known = sorted(name_of(w) for w in mesh.workload_entries if ns_of(w) == namespace)
        raise DescribeError(f"no pod (WorkloadEntry) {namespace}/{name}" +
                            (f"; pods in {namespace}: {', '.join(known[:10])}" if known else ""))
    spec = _spec(we)
    labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
    r = Report()
    r.add(f"Pod: {name}")
    r.add(f"Address: {spec.get('address', '-')}  Network: {spec.get('network') or '-'}  Locality: "
          f"{spec.get('locality') or '-'}", 1)
    r.add(f"Service account: {spec.get('serviceAccount') or 'default'}", 1)
    r.add("Labels: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())), 1)
    ports = spec.get("ports") or {}
    if ports:
        r.add("Pod Ports: " + ", ".join(f"{p} ({n})" for n, p in ports.items()), 1)
    services = services_of(mesh, we)
    if not services:
        r.add("Suggestion: no ServiceEntry selects this pod: it receives no mesh traffic")
    for se in services:
        r.add("--------------------")
        ports_text = ", ".join(f"{p.get('name')} {p.get('number')}/{p.get('protocol', 'TCP')}"
                               for p in _spec(se).get("ports") or [] if isinstance(p, Mapping))
        r.add(f"Service: {name_of(se)} ({', '.join(hosts_of(se))})")
        r.add(f"Ports: {ports_text or '-'}", 1)
        _describe_service_traffic(r, mesh, se, labels)
    r.add("--------------------")
    describe_security(r, mesh, namespace, labels)
    return r.text()


def find_service(mesh: Mesh, name: str, namespace: str) -> Obj:
    for se in mesh.service_entries:
        if ns_of(se) == namespace and name_of(se) == name:
            return se
    host = full_host(name, namespace)
    for se in mesh.service_entries:
        if host in hosts_of(se):
            return se
    known = sorted(name_of(s) for s in mesh.service_entries if ns_of(s) == namespace)
    raise DescribeError(f"no service (ServiceEntry) {namespace}/{name} and no ServiceEntry with host {host}" +
                        (f"; services in {namespace}: {', '.join(known)}" if known else ""))


def describe_service(mesh: Mesh, name: str, namespace: str) -> str:
    se = find_service(mesh, name, namespace)
    spec = _spec(se)
    r = Report()
    r.add(f"Service: {name_of(se)}.{ns_of(se)}")
    r.add(f"Hosts: {', '.join(hosts_of(se))}", 1)
    for p in spec.get("ports") or []:
        if isinstance(p, Mapping):
            target = f" targets pod port {p['targetPort']}" if p.get("targetPort") else ""
            r.add(f"Port: {p.get('name')} {p.get('number')}/{p.get('protocol', 'TCP')}{target}", 1)
    sel = spec.get("workloadSelector")
    pods: list[Obj] = []
    if sel:
        pods = [w for w in mesh.workload_entries if ns_of(w) == ns_of(se)
                and selects(sel, {str(k): str(v) for k, v in (_spec(w).get("labels") or {}).items()})]
    pods += [e for e in spec.get("endpoints") or [] if isinstance(e, Mapping)]
    r.add(f"Endpoints: {len(pods)}", 1)
    for w in pods:
        s = _spec(w) if "spec" in w else w
        labels = ",".join(f"{k}={v}" for k, v in sorted((s.get("labels") or {}).items()))
        r.add(f"{name_of(w) or '-'}   {s.get('address', '-')}   {labels}", 2)
    r.add("--------------------")
    _describe_service_traffic(r, mesh, se, None)
    groups: dict[tuple[str, ...], list[str]] = {}  # pods with the same security, together
    for w in pods:
        if "spec" in w:
            sec = Report()
            describe_security(sec, mesh, ns_of(se), {str(k): str(v) for k, v in
                                                      (_spec(w).get("labels") or {}).items()})
            groups.setdefault(tuple(sec.lines), []).append(name_of(w))
    for lines, names in groups.items():
        r.add("--------------------")
        r.add(f"Security of {', '.join(names)}:")
        r.lines += ["   " + line for line in lines]
    return r.text()


def by_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o.get("kind") == kind]


__all__ = ["DescribeError", "Mesh", "authorization_policies_for", "describe_pod", "describe_service",
           "destination_rules_for", "effective_mtls", "full_host", "host_matches", "peer_authentications_for",
           "services_of", "virtual_services_for"]
