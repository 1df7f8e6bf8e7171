"""AuthorizationPolicy -> Envoy RBAC (and ext_authz for CUSTOM), in Istio's evaluation order.

Which policies apply to a workload: those in the root namespace without a selector (mesh-wide), those in its
namespace without a selector, and those (in its namespace or the root namespace) whose ``selector.matchLabels``
match its labels. The HTTP filters are, in order (Istio's precedence CUSTOM, DENY, ALLOW):

1. CUSTOM: an RBAC filter with only *shadow* rules (one Envoy policy per CUSTOM rule, named ``istio-ext-authz-...``)
   marks the requests a CUSTOM rule matches in dynamic metadata, and the ``ext_authz`` filter that follows runs only
   for them (``filter_enabled_metadata``), calling the provider named in ``spec.provider.name``
   (``MeshSettings.ext_authz_providers``, from the MeshConfig's ``extensionProviders``: ``envoyExtAuthzHttp`` as
   ``http_service``, ``envoyExtAuthzGrpc`` as ``grpc_service``; ``ext_authz_config``). One provider per workload,
   as in Istio: CUSTOM policies naming several, a provider the mesh config does not declare, or one whose service
   is not in the registry make the CUSTOM rules a DENY filter (fail closed).
2. DENY: an RBAC filter with action DENY.
3. ALLOW: an RBAC filter with action ALLOW. If any ALLOW policy applies, a request must match one; an ALLOW policy
   without rules allows nothing.
4. AUDIT: an RBAC filter with action LOG (marks requests for access logs; never blocks).

Dry run (annotation ``istio.io/dry-run: "true"``): the policy goes into the *shadow* rules of its action's filter
with ``shadow_rules_stat_prefix`` ``istio_dry_run_deny_`` / ``istio_dry_run_allow_``: it blocks nothing, and
Envoy counts what it would have done (``http.<stat_prefix>.rbac.istio_dry_run_deny_.shadow_denied``) and writes the
would-be decision to dynamic metadata for access logs.

TCP ports (``authz_tcp_filters``: an ``envoy.filters.network.rbac`` filter before ``tcp_proxy``, same order
CUSTOM, DENY, ALLOW, AUDIT): fields that exist only in HTTP (``requestPrincipals``, ``hosts``, ``methods``,
``paths`` and their ``not*`` forms; ``when`` keys ``request.headers[...]`` and ``request.auth.*``) follow Istio's
fail-closed reading: in an ALLOW policy a rule using one matches nothing (an ALLOW policy whose every rule uses
one denies the port), in a DENY (and AUDIT, CUSTOM) policy those fields are dropped and the rest of the rule kept,
so it denies more, never less. AUDIT becomes a network RBAC filter with action LOG, as Istio builds it (it blocks
nothing; Envoy only marks the connection). CUSTOM on TCP: the provider must be a gRPC one
(``envoy.filters.network.ext_authz``, called once per connection); an HTTP provider cannot check a TCP
connection, so where Istio skips the policy (the port stays open) we deny what its rules match (fail closed).

Rule semantics (Istio): a rule matches if any ``from`` source matches, any ``to`` operation matches, and every
``when`` condition holds; within a source or operation, every field must match and one value of a field
suffices; ``not*`` fields exclude. Values with ``*`` are prefix / suffix / presence matches. Envoy policy names
are ``ns[NS]-policy[NAME]-rule[I]``: a denied request's response details name the rule (for the audit trail).

``requestPrincipals`` and ``request.auth.*`` read the payload ``jwt_authn`` writes to metadata (see ``jwt``):
``iss/sub`` is matched as issuer (exact) and subject. An unknown ``when`` key removes the rule from an ALLOW policy
(it cannot be proven) and is ignored in a DENY policy (the rule denies more, never less).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as tcp_ext_authz_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as tcp_rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from meshplane.model import spec as istio
from meshplane.model.names import Hostname
from meshplane.model.proxy import Proxy
from meshplane.model.resources import AUTHORIZATION_POLICIES
from meshplane.model.spec import AuthorizationAction, ConfigObject
from meshplane.translate.common import cluster_name, duration, is_ip_address, pack, static_cluster
from meshplane.translate.context import PushContext
from meshplane.translate.jwt import JWT_FILTER, PAYLOAD_KEY
from meshplane.translate.memo import Slot
from meshplane.translate.mesh import ExtAuthzProvider
from meshplane.translate.opa import opa_http_filters
from meshplane.translate.peerauthn import selected_policies

RBAC_FILTER = "envoy.filters.http.rbac"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
TCP_RBAC_FILTER = "envoy.filters.network.rbac"
TCP_EXT_AUTHZ_FILTER = "envoy.filters.network.ext_authz"
TCP_RBAC_STAT = "tcp."
DRY_RUN = "istio.io/dry-run"
EXT_AUTHZ_PREFIX = "istio-ext-authz"
EXT_AUTHZ_SHADOW_STAT = "istio_ext_authz_"
DRY_RUN_STAT = {AuthorizationAction.DENY: "istio_dry_run_deny_", AuthorizationAction.ALLOW: "istio_dry_run_allow_"}


@dataclass(frozen=True, slots=True)
class Policy:
    """One AuthorizationPolicy as the filters need it: identity, effective action, dry run, rules, provider."""

    namespace: str
    name: str
    action: AuthorizationAction
    dry_run: bool
    rules: tuple[istio.Rule, ...]
    provider: str = ""


# Go's strconv.ParseBool, which Istio reads the annotation with; any other value is not a dry run (enforced).
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


def is_dry_run(annotations: Mapping[str, str]) -> bool:
    return annotations.get(DRY_RUN, "") in _TRUE


def _policy(obj: ConfigObject[istio.AuthorizationPolicy]) -> Policy:
    spec = obj.spec
    return Policy(obj.meta.namespace, obj.meta.name, spec.action or AuthorizationAction.ALLOW,
                  is_dry_run(obj.meta.annotations), spec.rules,
                  (spec.provider.name if spec.provider is not None else None) or "")


# The policies selecting a workload (by namespace and labels).
_POLICIES: Slot[tuple[str, tuple[tuple[str, str], ...]], list[Policy]] = Slot("authz-policies")


def policies_for(proxy: Proxy, ctx: PushContext) -> list[Policy]:
    def build() -> list[Policy]:
        levels = selected_policies(ctx, AUTHORIZATION_POLICIES, proxy, istio.AuthorizationPolicy)
        return [_policy(o) for o in levels.all()]

    return ctx.memo.get_or_build(_POLICIES, (proxy.namespace, tuple(sorted(proxy.labels.items()))), build)


# ---- string and value matchers ------------------------------------------------------------------------------


def _string(value: str, *, prefix: str = "", ignore_case: bool = False) -> string_pb2.StringMatcher:
    """Istio's wildcard semantics: ``*`` any non-empty value, ``abc*`` prefix, ``*abc`` suffix, else exact."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + value[:-1], ignore_case=ignore_case)
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=prefix + value, ignore_case=ignore_case)


def _principal_any(ids: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if len(ids) == 1:
        return ids[0]
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=list(ids)))


def _principal_all(ids: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if not ids:
        return rbac_pb2.Principal(any=True)
    if len(ids) == 1:
        return ids[0]
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=list(ids)))


def _permission_any(rules: Sequence[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if len(rules) == 1:
        return rules[0]
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=list(rules)))


def _permission_all(rules: Sequence[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not rules:
        return rbac_pb2.Permission(any=True)
    if len(rules) == 1:
        return rules[0]
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=list(rules)))


def _authenticated(m: string_pb2.StringMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=m))


def _source_principal(value: str) -> rbac_pb2.Principal:
    return _authenticated(_string(value, prefix="spiffe://"))


def _source_namespace(value: str) -> rbac_pb2.Principal:
    pattern = ".*" if value == "*" else re.escape(value).replace(r"\*", "[^/]*")
    return _authenticated(string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=f".*/ns/{pattern}/.*")))


def _cidr(value: str) -> address_pb2.CidrRange:
    net = ipaddress.ip_network(value, strict=False)
    out = address_pb2.CidrRange(address_prefix=str(net.network_address))
    out.prefix_len.value = net.prefixlen
    return out


def _metadata(path: Sequence[str], value: value_pb2.ValueMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(metadata=metadata_pb2.MetadataMatcher(
        filter=JWT_FILTER, path=[metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in path], value=value))


def _claim(names: Sequence[str], value: str) -> rbac_pb2.Principal:
    """The (nested) JWT claim ``names`` equal to ``value`` whether the claim is a string or a list of strings."""
    path = [PAYLOAD_KEY, *names]
    sm = _string(value)
    return _principal_any([
        _metadata(path, value_pb2.ValueMatcher(string_match=sm)),
        _metadata(path, value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(
            one_of=value_pb2.ValueMatcher(string_match=sm)))),
    ])


def _request_principal(value: str) -> rbac_pb2.Principal:
    present = value_pb2.ValueMatcher(present_match=True)
    if value == "*":
        return _metadata([PAYLOAD_KEY, "iss"], present)
    iss, sep, sub = value.rpartition("/")
    if not sep:
        return _metadata([PAYLOAD_KEY, "iss"], value_pb2.ValueMatcher(string_match=_string(value)))
    parts = [_metadata([PAYLOAD_KEY, "iss"], value_pb2.ValueMatcher(string_match=_string(iss)))]
    parts.append(_metadata([PAYLOAD_KEY, "sub"], present if sub == "*" else value_pb2.ValueMatcher(
        string_match=_string(sub))))
    return _principal_all(parts)


def _header(name: str, value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(header=_header_matcher(name, value))


def _header_matcher(name: str, value: str, ignore_case: bool = False) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=name, string_match=_string(value, ignore_case=ignore_case))


def _path(value: str) -> rbac_pb2.Permission:
    any_path = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))
    m = any_path if value == "*" else _string(value)
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=m))


def _host(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=_header_matcher(":authority", value, ignore_case=True))


def _method(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=_header_matcher(":method", value))


def _port(value: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(destination_port=int(value))


def _direct_remote_ip(value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(direct_remote_ip=_cidr(value))


def _remote_ip(value: str) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(remote_ip=_cidr(value))


# ---- rules --------------------------------------------------------------------------------------------------

M = TypeVar("M")
# One field of a source, operation or condition: its values, its negated values, and the matcher of one value.
_Field = tuple[tuple[str, ...], tuple[str, ...], Callable[[str], M]]


def _fields(fields: Iterable[_Field[M]], any_of: Callable[[Sequence[M]], M], negate: Callable[[M], M]) -> list[M]:
    """Every field must match (one of its values suffices); a negated field must match none of its values."""
    out: list[M] = []
    for values, negated, build in fields:
        if values:
            out.append(any_of([build(v) for v in values]))
        if negated:
            out.append(negate(any_of([build(v) for v in negated])))
    return out


def _not_principal(p: rbac_pb2.Principal) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(not_id=p)


def _not_permission(p: rbac_pb2.Permission) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(not_rule=p)


def _principals(fields: Iterable[_Field[rbac_pb2.Principal]]) -> list[rbac_pb2.Principal]:
    return _fields(fields, _principal_any, _not_principal)


def _permissions(fields: Iterable[_Field[rbac_pb2.Permission]]) -> list[rbac_pb2.Permission]:
    return _fields(fields, _permission_any, _not_permission)


def _source(s: istio.Source) -> rbac_pb2.Principal:
    return _principal_all(_principals((
        (s.principals, s.not_principals, _source_principal),
        (s.request_principals, s.not_request_principals, _request_principal),
        (s.namespaces, s.not_namespaces, _source_namespace),
        (s.ip_blocks, s.not_ip_blocks, _direct_remote_ip),
        (s.remote_ip_blocks, s.not_remote_ip_blocks, _remote_ip))))


def _operation(op: istio.Operation) -> rbac_pb2.Permission:
    return _permission_all(_permissions((
        (op.hosts, op.not_hosts, _host),
        (op.methods, op.not_methods, _method),
        (op.paths, op.not_paths, _path),
        (op.ports, op.not_ports, _port))))


# ``request.auth.claims[a][b]`` is the claim ``b`` nested in ``a``; ``request.auth.claims[foo.bar]`` is the one
# claim named ``foo.bar`` (Istio splits on brackets only, never on dots).
_CLAIMS = re.compile(r"^request\.auth\.claims((?:\[[^\[\]]+\])+)$")
_HEADERS = re.compile(r"^request\.headers\[(.+)\]$")
_PRINCIPAL_KEYS: dict[str, Callable[[str], rbac_pb2.Principal]] = {
    "source.ip": _direct_remote_ip,
    "remote.ip": _remote_ip,
    "source.namespace": _source_namespace,
    "source.principal": _source_principal,
    "request.auth.principal": _request_principal,
    "request.auth.audiences": lambda v: _claim(["aud"], v),
    "request.auth.presenter": lambda v: _claim(["azp"], v),
}
_PERMISSION_KEYS: dict[str, Callable[[str], rbac_pb2.Permission]] = {
    "destination.ip": lambda v: rbac_pb2.Permission(destination_ip=_cidr(v)),
    "destination.port": _port,
    "connection.sni": lambda v: rbac_pb2.Permission(requested_server_name=_string(v)),
}


def _principal_key(key: str) -> Callable[[str], rbac_pb2.Principal] | None:
    """The matcher of one value of a ``when`` key about the caller or the request; None for other keys."""
    if m := _HEADERS.match(key):
        name = m.group(1)
        return lambda v: _header(name, v)
    if m := _CLAIMS.match(key):
        claims = m.group(1)[1:-1].split("][")
        return lambda v: _claim(claims, v)
    return _PRINCIPAL_KEYS.get(key)


def _when(cond: istio.Condition) -> tuple[list[rbac_pb2.Principal], list[rbac_pb2.Permission]] | None:
    """A ``when`` condition as principals or permissions (values, then notValues); None for an unknown key."""
    key = cond.key or ""
    principal = _principal_key(key)
    if principal is not None:
        return _principals([(cond.values, cond.not_values, principal)]), []
    permission = _PERMISSION_KEYS.get(key)
    if permission is not None:
        return [], _permissions([(cond.values, cond.not_values, permission)])
    return None


_HTTP_WHEN = re.compile(r"^(request\.headers\[.+\]|request\.auth\..+)$")


def tcp_rule(rule: istio.Rule) -> tuple[istio.Rule, bool]:
    """``rule`` without the fields a TCP connection does not have (see the module docstring), and whether it had
    any."""
    had = False
    froms = []
    for f in rule.from_:
        src = f.source
        if src is not None and (src.request_principals or src.not_request_principals):
            had = True
            src = replace(src, request_principals=(), not_request_principals=())
        froms.append(replace(f, source=src))
    tos = []
    for t in rule.to:
        op = t.operation
        if op is not None and (op.hosts or op.not_hosts or op.methods or op.not_methods or op.paths or op.not_paths):
            had = True
            op = replace(op, hosts=(), not_hosts=(), methods=(), not_methods=(), paths=(), not_paths=())
        tos.append(replace(t, operation=op))
    when = tuple(c for c in rule.when if not _HTTP_WHEN.match(c.key or ""))
    had = had or len(when) != len(rule.when)
    return istio.Rule(from_=tuple(froms), to=tuple(tos), when=when), had


def rule_policy(rule: istio.Rule, action: AuthorizationAction, *, tcp: bool = False) -> rbac_pb2.Policy | None:
    """One AuthorizationPolicy rule as one Envoy RBAC policy; None when the rule can never be proven (ALLOW with an
    unsupported condition, or on TCP with a field only HTTP has)."""
    if tcp:
        rule, had_http = tcp_rule(rule)
        if had_http and action is AuthorizationAction.ALLOW:
            return None
    principals: list[rbac_pb2.Principal] = []
    permissions: list[rbac_pb2.Permission] = []
    if rule.from_:
        principals.append(_principal_any([_source(f.source or istio.Source()) for f in rule.from_]))
    if rule.to:
        permissions.append(_permission_any([_operation(t.operation or istio.Operation()) for t in rule.to]))
    for cond in rule.when:
        built = _when(cond)
        if built is None:
            if action is AuthorizationAction.ALLOW and (cond.values or cond.not_values):
                return None
            continue
        principals += built[0]
        permissions += built[1]
    return rbac_pb2.Policy(principals=[_principal_all(principals)], permissions=[_permission_all(permissions)])


def _rbac_policies(pols: Sequence[Policy], name_prefix: str = "", *,
                   tcp: bool = False) -> dict[str, rbac_pb2.Policy]:
    out: dict[str, rbac_pb2.Policy] = {}
    for p in pols:
        # A CUSTOM rule's conditions are read as a DENY rule's: an unprovable condition widens the match.
        action = AuthorizationAction.DENY if p.action is AuthorizationAction.CUSTOM else p.action
        for i, rule in enumerate(p.rules):
            built = rule_policy(rule, action, tcp=tcp)
            if built is not None:
                out[f"{name_prefix}ns[{p.namespace}]-policy[{p.name}]-rule[{i}]"] = built
    return out


_ACTIONS = {AuthorizationAction.ALLOW: rbac_pb2.RBAC.ALLOW, AuthorizationAction.DENY: rbac_pb2.RBAC.DENY,
            AuthorizationAction.AUDIT: rbac_pb2.RBAC.LOG}


def _rbac_filter(action: AuthorizationAction, enforced: Sequence[Policy],
                 shadow: Sequence[Policy]) -> hcm_pb2.HttpFilter:
    cfg = http_rbac_pb2.RBAC()
    if enforced:
        cfg.rules.action = _ACTIONS[action]
        for name, pol in _rbac_policies(enforced).items():
            cfg.rules.policies[name].CopyFrom(pol)
    if shadow:
        cfg.shadow_rules.action = _ACTIONS[action]
        for name, pol in _rbac_policies(shadow).items():
            cfg.shadow_rules.policies[name].CopyFrom(pol)
        cfg.shadow_rules_stat_prefix = DRY_RUN_STAT.get(action, "istio_dry_run_")
    return hcm_pb2.HttpFilter(name=RBAC_FILTER, typed_config=pack(cfg))


def ext_authz_cluster_name(provider: ExtAuthzProvider) -> str:
    return f"extauthz|{provider.name}"


def provider_cluster(provider: ExtAuthzProvider, ctx: PushContext) -> str | None:
    """The cluster the authorizer is reached through: a mesh service's ``outbound|port||host`` (as Istio), a static
    ``extauthz|<name>`` for an IP address; None when the service is unknown (the CUSTOM rules then deny)."""
    if is_ip_address(provider.service):
        return ext_authz_cluster_name(provider)
    svc = ctx.service(Hostname(provider.service))
    if svc is None or not any(sp.number == provider.port for sp in svc.ports):
        return None
    return cluster_name("outbound", provider.port, "", provider.service)


def _patterns(values: Iterable[str]) -> list[string_pb2.StringMatcher]:
    """Header names with Istio's wildcards (``abc``, ``abc*``, ``*abc``), case-insensitive."""
    return [_string(v, ignore_case=True) for v in values]


def ext_authz_config(provider: ExtAuthzProvider, cluster: str) -> ext_authz_pb2.ExtAuthz:
    """The HTTP ext_authz filter's configuration: every field of the provider applied (``model.mesh``)."""
    ea = ext_authz_pb2.ExtAuthz(transport_api_version=config_source_pb2.V3, failure_mode_allow=provider.fail_open,
                                clear_route_cache=provider.clear_route_cache)
    if provider.http:
        hs = ea.http_service
        hs.server_uri.uri = f"http://{provider.service}:{provider.port}"
        hs.server_uri.cluster = cluster
        hs.server_uri.timeout.CopyFrom(duration(provider.timeout_s))
        hs.path_prefix = provider.path_prefix
        for key, value in provider.include_additional_headers:
            hs.authorization_request.headers_to_add.add(key=key, value=value)
        ar = hs.authorization_response
        # A list matcher must not be empty (Envoy refuses it): each is set only when the provider names headers.
        for matcher, values in ((ar.allowed_upstream_headers, provider.headers_to_upstream_on_allow),
                                (ar.allowed_client_headers, provider.headers_to_downstream_on_deny),
                                (ar.allowed_client_headers_on_success, provider.headers_to_downstream_on_allow),
                                (ea.allowed_headers, provider.include_request_headers)):
            if values:
                matcher.patterns.extend(_patterns(values))
    else:
        ea.grpc_service.envoy_grpc.cluster_name = cluster
        ea.grpc_service.timeout.CopyFrom(duration(provider.timeout_s))
    if provider.status_on_error:
        ea.status_on_error.code = provider.status_on_error
    if provider.body is not None:
        ea.with_request_body.max_request_bytes = provider.body.max_request_bytes
        ea.with_request_body.allow_partial_message = provider.body.allow_partial_message
        ea.with_request_body.pack_as_bytes = provider.body.pack_as_bytes
    ea.filter_enabled_metadata.filter = RBAC_FILTER
    ea.filter_enabled_metadata.path.add(key=f"{EXT_AUTHZ_SHADOW_STAT}shadow_effective_policy_id")
    ea.filter_enabled_metadata.value.string_match.prefix = EXT_AUTHZ_PREFIX
    return ea


def _custom_filters(custom: Sequence[Policy], provider: ExtAuthzProvider,
                    cluster: str) -> list[hcm_pb2.HttpFilter]:
    marker = http_rbac_pb2.RBAC(shadow_rules_stat_prefix=EXT_AUTHZ_SHADOW_STAT)
    marker.shadow_rules.action = rbac_pb2.RBAC.ALLOW
    for name, pol in _rbac_policies(custom, f"{EXT_AUTHZ_PREFIX}-").items():
        marker.shadow_rules.policies[name].CopyFrom(pol)
    return [hcm_pb2.HttpFilter(name=RBAC_FILTER, typed_config=pack(marker)),
            hcm_pb2.HttpFilter(name=EXT_AUTHZ_FILTER, typed_config=pack(ext_authz_config(provider, cluster)))]


def custom_provider(custom: Sequence[Policy], ctx: PushContext) -> tuple[ExtAuthzProvider, str] | None:
    """The one provider the workload's CUSTOM policies name and its cluster; None (deny what they match) when it
    is not declared in the mesh config, its service is unknown, or the policies name several providers (Istio
    does the same without its multi-provider feature flag)."""
    names = {p.provider for p in custom}
    if len(names) != 1:
        return None
    provider = ctx.mesh.ext_authz_provider(names.pop())
    if provider is None:
        return None
    cluster = provider_cluster(provider, ctx)
    return (provider, cluster) if cluster is not None else None


def _custom(pols: Sequence[Policy]) -> list[Policy]:
    """The enforced CUSTOM policies (a dry-run CUSTOM policy does nothing)."""
    return [p for p in pols if p.action is AuthorizationAction.CUSTOM and not p.dry_run]


def authz_http_filters(proxy: Proxy, ctx: PushContext) -> list[hcm_pb2.HttpFilter]:
    """The RBAC / ext_authz filters for ``proxy``'s inbound HTTP chains, CUSTOM then DENY, ALLOW, AUDIT."""
    pols = policies_for(proxy, ctx)
    out: list[hcm_pb2.HttpFilter] = []
    custom = _custom(pols)
    if custom:
        found = custom_provider(custom, ctx)
        if found is not None:
            out.extend(_custom_filters(custom, *found))
        else:
            # An unusable provider must not silently open the door: deny what the CUSTOM rules match.
            out.append(_rbac_filter(AuthorizationAction.DENY, custom, []))
    for action in (AuthorizationAction.DENY, AuthorizationAction.ALLOW, AuthorizationAction.AUDIT):
        enforced = [p for p in pols if p.action is action and not p.dry_run]
        shadow = [p for p in pols if p.action is action and p.dry_run and action is not AuthorizationAction.AUDIT]
        if enforced or shadow:
            # Every RBAC filter keeps the canonical name: Envoy writes its dynamic metadata under it.
            out.append(_rbac_filter(action, enforced, shadow))
    out.extend(opa_http_filters(proxy, ctx))  # ASMOPAPolicy: OPA next to the workload, after Istio's RBAC
    return out


def ext_authz_clusters(proxy: Proxy, ctx: PushContext) -> list[cluster_pb2.Cluster]:
    """A static cluster for the CUSTOM provider ``proxy`` uses when it is an IP address (HTTP/2 for gRPC); a mesh
    service's cluster is already among the outbound ones."""
    custom = _custom(policies_for(proxy, ctx))
    found = custom_provider(custom, ctx) if custom else None
    if found is None or found[1] != ext_authz_cluster_name(found[0]):
        return []
    provider, name = found
    return [static_cluster(name, provider.service, provider.port, http2=provider.grpc)]


# ---- TCP ports ----------------------------------------------------------------------------------------------


def _rbac_rules(action: AuthorizationAction, pols: Sequence[Policy], *, tcp: bool,
                name_prefix: str = "") -> rbac_pb2.RBAC:
    out = rbac_pb2.RBAC(action=_ACTIONS[action])
    for name, pol in _rbac_policies(pols, name_prefix, tcp=tcp).items():
        out.policies[name].CopyFrom(pol)
    return out


def _tcp_rbac(cfg: tcp_rbac_pb2.RBAC) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(name=TCP_RBAC_FILTER, typed_config=pack(cfg))


def _tcp_rbac_filter(action: AuthorizationAction, enforced: Sequence[Policy],
                     shadow: Sequence[Policy]) -> listener_components_pb2.Filter:
    cfg = tcp_rbac_pb2.RBAC(stat_prefix=TCP_RBAC_STAT)
    if enforced:
        cfg.rules.CopyFrom(_rbac_rules(action, enforced, tcp=True))
    if shadow:
        cfg.shadow_rules.CopyFrom(_rbac_rules(action, shadow, tcp=True))
        cfg.shadow_rules_stat_prefix = DRY_RUN_STAT.get(action, "istio_dry_run_")
    return _tcp_rbac(cfg)


def _tcp_custom_filters(custom: Sequence[Policy], provider: ExtAuthzProvider,
                        cluster: str) -> list[listener_components_pb2.Filter]:
    marker = tcp_rbac_pb2.RBAC(stat_prefix=TCP_RBAC_STAT, shadow_rules_stat_prefix=EXT_AUTHZ_SHADOW_STAT)
    marker.shadow_rules.CopyFrom(_rbac_rules(AuthorizationAction.ALLOW, custom, tcp=True,
                                             name_prefix=f"{EXT_AUTHZ_PREFIX}-"))
    ea = tcp_ext_authz_pb2.ExtAuthz(stat_prefix="tcp.", transport_api_version=config_source_pb2.V3,
                                    failure_mode_allow=provider.fail_open)
    ea.grpc_service.envoy_grpc.cluster_name = cluster
    ea.grpc_service.timeout.CopyFrom(duration(provider.timeout_s))
    ea.filter_enabled_metadata.filter = TCP_RBAC_FILTER
    ea.filter_enabled_metadata.path.add(key=f"{EXT_AUTHZ_SHADOW_STAT}shadow_effective_policy_id")
    ea.filter_enabled_metadata.value.string_match.prefix = EXT_AUTHZ_PREFIX
    return [_tcp_rbac(marker),
            listener_components_pb2.Filter(name=TCP_EXT_AUTHZ_FILTER, typed_config=pack(ea))]


def authz_tcp_filters(proxy: Proxy, ctx: PushContext) -> list[listener_components_pb2.Filter]:
    """The network RBAC / ext_authz filters for ``proxy``'s inbound TCP chains, CUSTOM then DENY, ALLOW, AUDIT
    (placed before ``tcp_proxy``)."""
    pols = policies_for(proxy, ctx)
    out: list[listener_components_pb2.Filter] = []
    custom = _custom(pols)
    if custom:
        found = custom_provider(custom, ctx)
        if found is not None and found[0].grpc:
            out.extend(_tcp_custom_filters(custom, *found))
        else:
            # Unusable provider, or an HTTP one (it cannot check a connection): deny what the CUSTOM rules match.
            out.append(_tcp_rbac_filter(AuthorizationAction.DENY, custom, []))
    for action in (AuthorizationAction.DENY, AuthorizationAction.ALLOW, AuthorizationAction.AUDIT):
        enforced = [p for p in pols if p.action is action and not p.dry_run]
        shadow = [p for p in pols if p.action is action and p.dry_run and action is not AuthorizationAction.AUDIT]
        if enforced or shadow:
            out.append(_tcp_rbac_filter(action, enforced, shadow))
    return out
