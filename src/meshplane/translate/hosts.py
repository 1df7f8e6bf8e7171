"""Istio's host name rules: short names resolve in the object's namespace; wildcards match suffixes."""

from __future__ import annotations

from collections.abc import Iterable

from meshplane.model.names import Hostname


def resolve_host(host: str, namespace: str, domain_suffix: str) -> Hostname:
    """``reviews`` in ``default`` -> ``reviews.default.svc.cluster.local``; names with a dot or ``*`` stay: where a
    host a user wrote becomes a registry/translation host key (a wildcard stays a pattern, "" stays empty)."""
    if host == "*" or "." in host or not host:
        return Hostname(host)
    return Hostname(f"{host}.{namespace}.svc.{domain_suffix}")


def host_matches(pattern: str, host: str) -> bool:
    """Does ``pattern`` (maybe a wildcard like ``*.example.com`` or ``*``) cover the concrete ``host``?"""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return False


def hosts_intersect(a: str, b: str) -> bool:
    """Either pattern covers the other (used between Gateway server hosts and VirtualService hosts)."""
    return host_matches(a, b) or host_matches(b, a)


def more_specific(a: str, b: str) -> str:
    """Of two intersecting patterns, the narrower one."""
    if a == "*":
        return b
    if b == "*":
        return a
    if a.startswith("*") and not b.startswith("*"):
        return b
    if b.startswith("*") and not a.startswith("*"):
        return a
    return a if len(a) >= len(b) else b


def best_match(host: str, patterns: Iterable[str]) -> str | None:
    """The most specific pattern covering ``host`` (exact beats the longest wildcard)."""
    best: str | None = None
    for p in patterns:
        if not host_matches(p, host):
            continue
        if p == host:
            return p
        if best is None or len(p) > len(best):
            best = p
    return best


def namespace_matches(pattern_ns: str, namespace: str, own_namespace: str) -> bool:
    """``*`` any, ``.`` the owner's namespace, ``~`` none, else exact."""
    if pattern_ns == "*":
        return True
    if pattern_ns == "~":
        return False
    if pattern_ns == ".":
        return namespace == own_namespace
    return pattern_ns == namespace


def service_domains(hostname: str, namespace: str, port: int, proxy_namespace: str,
                    domain_suffix: str, with_bare: bool = True) -> list[str]:
    """The Host header values a client may use for a service: short name (same namespace only), name.ns,
    name.ns.svc, the FQDN; each with ``:port`` and (``with_bare``) without."""
    names = [hostname]
    suffix = f".{namespace}.svc.{domain_suffix}"
    if hostname.endswith(suffix):
        short = hostname[: -len(suffix)]
        names = [hostname, f"{short}.{namespace}.svc", f"{short}.{namespace}"]
        if namespace == proxy_namespace:
            names.append(short)
    out: list[str] = []
    for n in names:
        if with_bare:
            out.append(n)
        out.append(f"{n}:{port}")
    return out
