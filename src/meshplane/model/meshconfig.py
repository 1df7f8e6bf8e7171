"""Istio's MeshConfig document -> ``MeshSettings``: pure, so that admission (the ``istio`` ConfigMap in the root
namespace, key ``mesh``) and the server (``--mesh-config FILE``) read it identically.

Why a hand-written reader and not a schema: MeshConfig is one document whose fields either take effect, are kept
for a later consumer with a warning, or are refused; a reader says which, naming the field
(``extensionProviders[1].envoyExtAuthzHttp.port``). Field names are Istio's (camelCase).

- Applied: ``rootNamespace``, ``trustDomain``, ``outboundTrafficPolicy.mode``, ``connectTimeout``,
  ``enableAutoMtls``, ``localityLbSetting.enabled``, ``defaultHttpRetryPolicy.attempts``, the ext_authz
  ``extensionProviders`` (``envoyExtAuthzHttp``, ``envoyExtAuthzGrpc``: every field applied, see ``ExtAuthzProvider``),
  the mesh-wide access log (``accessLogFile``, ``accessLogFormat``, ``accessLogEncoding``) and ``envoyFileAccessLog``
  providers (``translate.telemetryapi``), ``enableTracing`` and the ``opentelemetry`` and ``zipkin`` tracing
  providers (their ``service`` and ``port``; other fields of them are warned about; ``translate.tracing``).
- Kept, with a warning (nothing in translation reads them yet): the ``defaultConfig`` subset below, and the other
  Telemetry API providers (``skywalking``, ``datadog``, ...).
- Warned and ignored: the other MeshConfig fields Istio has (``IGNORED``). Refused: anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import yaml

from meshplane.model.mesh import BodyInCheck, ExtAuthzProvider, MeshSettings, TelemetryProvider
from meshplane.model.spec import parse_duration

# Where Istio users keep it: ConfigMap ``istio`` in ``istio-system``, key ``mesh``.
MESH_CONFIGMAP = ("istio-system", "istio")
MESH_KEY = "mesh"

# MeshConfig fields Istio has that meshplane does not apply (warned, not refused: a config written for Istio loads).
IGNORED = frozenset({
    "proxyListenPort", "proxyInboundListenPort", "proxyHttpPort", "protocolDetectionTimeout", "tcpKeepalive",
    "ingressClass", "ingressService", "ingressControllerMode", "ingressSelector", "enableEnvoyAccessLogService",
    "disableEnvoyListenerLog", "inboundTrafficPolicy", "configSources", "trustDomainAliases", "caCertificates",
    "defaultServiceExportTo", "defaultVirtualServiceExportTo", "defaultDestinationRuleExportTo", "dnsRefreshRate",
    "h2UpgradePolicy", "inboundClusterStatName", "outboundClusterStatName", "certificates", "serviceSettings",
    "enablePrometheusMerge", "verifyCertificateAtClient", "ca", "defaultProviders", "discoverySelectors",
    "pathNormalization", "meshMTLS", "tlsDefaults", "thriftConfig", "serviceScopeConfigs", "extensionProvidersDefaults",
    "meshNetworks",
})
DEFAULT_CONFIG = frozenset({
    "discoveryAddress", "proxyMetadata", "concurrency", "drainDuration", "terminationDrainDuration",
    "holdApplicationUntilProxyStarts", "tracing", "proxyStatsMatcher", "gatewayTopology",
})
TELEMETRY_KINDS = frozenset({
    "opentelemetry", "zipkin", "skywalking", "datadog", "lightstep", "stackdriver", "opencensus", "prometheus",
    "envoyFileAccessLog", "envoyHttpAls", "envoyTcpAls", "envoyOtelAls",
})
# Tracing providers translation applies (``translate.tracing``).
_TRACING = frozenset({"opentelemetry", "zipkin"})
# Telemetry providers that send somewhere: they need service and port.
_NEEDS_SERVICE = frozenset({"opentelemetry", "zipkin", "skywalking", "datadog", "lightstep", "opencensus",
                            "envoyHttpAls", "envoyTcpAls", "envoyOtelAls"})
_EXT_AUTHZ_COMMON = frozenset({"service", "port", "timeout", "failOpen", "clearRouteCache", "statusOnError",
                               "includeRequestBodyInCheck"})
_EXT_AUTHZ_HTTP = _EXT_AUTHZ_COMMON | {"pathPrefix", "includeRequestHeadersInCheck", "includeAdditionalHeadersInCheck",
                                       "headersToUpstreamOnAllow", "headersToDownstreamOnAllow",
                                       "headersToDownstreamOnDeny"}


class MeshConfigError(ValueError):
    """A MeshConfig that cannot be used; ``field`` is the path of the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """The parsed document: the settings translation uses, and what was accepted without taking effect."""

    settings: MeshSettings
    warnings: tuple[str, ...] = ()


def _map(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MeshConfigError(field, "must be an object")
    return value


def _str(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise MeshConfigError(field, "must be a string")
    return value


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise MeshConfigError(field, "must be true or false")
    return value


def _int(value: Any, field: str, lo: int, hi: int) -> int:
    """An integer, also as a numeric string (Istio's examples write ``port: "9000"``)."""
    if isinstance(value, bool):
        raise MeshConfigError(field, "must be an integer")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise MeshConfigError(field, "must be an integer")
    if not lo <= value <= hi:
        raise MeshConfigError(field, f"must be between {lo} and {hi}")
    return value


def _seconds(value: Any, field: str) -> float:
    text = _str(value, field)
    d = parse_duration(text)
    if d is None or d < 0:
        raise MeshConfigError(field, f"{text!r} is not a duration (e.g. 10s, 500ms)")
    return d / 1e9


def _strings(value: Any, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise MeshConfigError(field, "must be a list of non-empty strings")
    return tuple(value)


def _only(doc: Mapping[str, Any], allowed: frozenset[str], field: str) -> None:
    for key in doc:
        if key not in allowed:
            raise MeshConfigError(f"{field}.{key}", f"unknown field (known: {', '.join(sorted(allowed))})")


def _body(value: Any, field: str) -> BodyInCheck:
    doc = _map(value, field)
    _only(doc, frozenset({"maxRequestBytes", "allowPartialMessage", "packAsBytes"}), field)
    return BodyInCheck(
        max_request_bytes=_int(doc.get("maxRequestBytes", 0), f"{field}.maxRequestBytes", 0, 2**32 - 1),
        allow_partial_message=_bool(doc.get("allowPartialMessage", False), f"{field}.allowPartialMessage"),
        pack_as_bytes=_bool(doc.get("packAsBytes", False), f"{field}.packAsBytes"))


def _ext_authz(name: str, doc: Mapping[str, Any], http: bool, field: str) -> ExtAuthzProvider:
    if "includeHeadersInCheck" in doc:
        raise MeshConfigError(f"{field}.includeHeadersInCheck", "deprecated in Istio; use includeRequestHeadersInCheck")
    _only(doc, _EXT_AUTHZ_HTTP if http else _EXT_AUTHZ_COMMON, field)
    if not doc.get("service"):
        raise MeshConfigError(f"{field}.service", "required")
    if "port" not in doc:
        raise MeshConfigError(f"{field}.port", "required")
    p = ExtAuthzProvider(name=name, service=_str(doc["service"], f"{field}.service"),
                         port=_int(doc["port"], f"{field}.port", 1, 65535), http=http)
    if "timeout" in doc:
        p = replace(p, timeout_s=_seconds(doc["timeout"], f"{field}.timeout"))
    if "failOpen" in doc:
        p = replace(p, fail_open=_bool(doc["failOpen"], f"{field}.failOpen"))
    if "clearRouteCache" in doc:
        p = replace(p, clear_route_cache=_bool(doc["clearRouteCache"], f"{field}.clearRouteCache"))
    if "statusOnError" in doc:
        status = _int(doc["statusOnError"], f"{field}.statusOnError", 100, 599)
        if status not in {int(c) for c in HTTPStatus}:
            raise MeshConfigError(f"{field}.statusOnError", f"{status} is not an HTTP status code")
        p = replace(p, status_on_error=status)
    if "includeRequestBodyInCheck" in doc:
        p = replace(p, body=_body(doc["includeRequestBodyInCheck"], f"{field}.includeRequestBodyInCheck"))
    if not http:
        return p
    if "pathPrefix" in doc:
        prefix = _str(doc["pathPrefix"], f"{field}.pathPrefix")
        if prefix and not prefix.startswith("/"):
            raise MeshConfigError(f"{field}.pathPrefix", "must start with /")
        p = replace(p, path_prefix=prefix)
    if "includeAdditionalHeadersInCheck" in doc:
        extra = _map(doc["includeAdditionalHeadersInCheck"], f"{field}.includeAdditionalHeadersInCheck")
        p = replace(p, include_additional_headers=tuple(
            (str(k), _str(v, f"{field}.includeAdditionalHeadersInCheck.{k}")) for k, v in extra.items()))
    def strings(key: str) -> tuple[str, ...]:
        return _strings(doc[key], f"{field}.{key}") if key in doc else ()

    return replace(p, include_request_headers=strings("includeRequestHeadersInCheck"),
                   headers_to_upstream_on_allow=strings("headersToUpstreamOnAllow"),
                   headers_to_downstream_on_allow=strings("headersToDownstreamOnAllow"),
                   headers_to_downstream_on_deny=strings("headersToDownstreamOnDeny"))


def _telemetry(name: str, kind: str, doc: Mapping[str, Any], field: str) -> TelemetryProvider:
    if kind in _NEEDS_SERVICE:
        if not doc.get("service"):
            raise MeshConfigError(f"{field}.service", "required")
        if "port" not in doc:
            raise MeshConfigError(f"{field}.port", "required")
        _int(doc["port"], f"{field}.port", 1, 65535)
    if kind == "envoyFileAccessLog" and "path" in doc:
        _str(doc["path"], f"{field}.path")
    fields = tuple(sorted((str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True))
                          for k, v in doc.items()))
    return TelemetryProvider(name, kind, fields)


def _providers(value: Any, warnings: list[str]) -> tuple[tuple[ExtAuthzProvider, ...], tuple[TelemetryProvider, ...]]:
    if not isinstance(value, list):
        raise MeshConfigError("extensionProviders", "must be a list")
    authz: list[ExtAuthzProvider] = []
    telemetry: list[TelemetryProvider] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        field = f"extensionProviders[{i}]"
        doc = _map(item, field)
        name = doc.get("name")
        if not isinstance(name, str) or not name:
            raise MeshConfigError(f"{field}.name", "required")
        if name in seen:
            raise MeshConfigError(f"{field}.name", f"{name!r} is declared twice")
        seen.add(name)
        kinds = [k for k in doc if k != "name"]
        if len(kinds) != 1:
            raise MeshConfigError(field, f"exactly one provider kind is required, got {kinds or 'none'}")
        kind = kinds[0]
        field = f"{field}.{kind}"
        body = _map(doc[kind], field)
        if kind in ("envoyExtAuthzHttp", "envoyExtAuthzGrpc"):
            authz.append(_ext_authz(name, body, kind == "envoyExtAuthzHttp", field))
        elif kind in TELEMETRY_KINDS:
            telemetry.append(_telemetry(name, kind, body, field))
            if kind in _TRACING:
                warnings.extend(f"{field}.{k}: not applied (only service and port are)"
                                for k in sorted(body) if k not in ("service", "port"))
            elif kind != "envoyFileAccessLog":
                warnings.append(f"{field}: kept for the Telemetry API; not applied yet")
        else:
            raise MeshConfigError(field, "unknown provider kind")
    return tuple(authz), tuple(telemetry)


def parse_mesh_config(doc: Any, base: MeshSettings | None = None) -> MeshConfig:
    """``doc`` (a decoded MeshConfig) over ``base`` (the server's own settings); MeshConfigError names the field."""
    settings = base or MeshSettings()
    doc = _map(doc, "")
    warnings: list[str] = []
    changes: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "rootNamespace":
            changes["root_namespace"] = _str(value, key)
        elif key == "trustDomain":
            changes["trust_domain"] = _str(value, key)
        elif key == "outboundTrafficPolicy":
            body = _map(value, key)
            _only(body, frozenset({"mode"}), key)
            mode = _str(body.get("mode", "ALLOW_ANY"), f"{key}.mode")
            if mode not in ("ALLOW_ANY", "REGISTRY_ONLY"):
                raise MeshConfigError(f"{key}.mode", "must be ALLOW_ANY or REGISTRY_ONLY")
            changes["outbound_traffic_policy"] = mode
        elif key == "connectTimeout":
            changes["connect_timeout_s"] = _seconds(value, key)
        elif key == "enableAutoMtls":
            changes["auto_mtls"] = _bool(value, key)
        elif key == "localityLbSetting":
            body = _map(value, key)
            if "enabled" in body:
                changes["locality_lb_enabled"] = _bool(body["enabled"], f"{key}.enabled")
            for other in body:
                if other != "enabled":
                    warnings.append(f"{key}.{other}: not applied (DestinationRule localityLbSetting is)")
        elif key == "defaultHttpRetryPolicy":
            body = _map(value, key)
            if "attempts" in body:
                changes["default_retry_attempts"] = _int(body["attempts"], f"{key}.attempts", 0, 1000)
            for other in body:
                if other != "attempts":
                    warnings.append(f"{key}.{other}: not applied")
        elif key == "extensionProviders":
            changes["ext_authz_providers"], changes["telemetry_providers"] = _providers(value, warnings)
        elif key in ("accessLogFile", "accessLogFormat"):
            changes["access_log_file" if key == "accessLogFile" else "access_log_format"] = _str(value, key)
        elif key == "accessLogEncoding":
            enc = _str(value, key)
            if enc not in ("TEXT", "JSON"):
                raise MeshConfigError(key, "must be TEXT or JSON")
            changes["access_log_encoding"] = enc
        elif key == "enableTracing":
            changes["enable_tracing"] = _bool(value, key)
        elif key == "defaultConfig":
            body = _map(value, key)
            _only(body, DEFAULT_CONFIG, key)
            changes["default_config"] = tuple(sorted(
                (str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in body.items()))
            if body:
                warnings.append(f"{key}: kept; agents take their proxy settings from their own configuration")
        elif key in IGNORED:
            warnings.append(f"{key}: not applied by meshplane (ignored)")
        else:
            raise MeshConfigError(key, "unknown MeshConfig field")
    if "ext_authz_providers" not in changes:  # a document without providers declares none
        changes["ext_authz_providers"], changes["telemetry_providers"] = (), ()
    return MeshConfig(replace(settings, **changes), tuple(warnings))


def parse_mesh_yaml(text: str, base: MeshSettings | None = None) -> MeshConfig:
    """A MeshConfig in YAML (a ``--mesh-config`` file, the ``istio`` ConfigMap's ``mesh`` key)."""
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        raise MeshConfigError("", f"not YAML: {e}") from e
    return parse_mesh_config(doc, base)


__all__ = ["IGNORED", "MESH_CONFIGMAP", "MESH_KEY", "MeshConfig", "MeshConfigError", "parse_mesh_config",
           "parse_mesh_yaml"]
