"""The authorization-decision access log of a sidecar's inbound HTTP connection managers.

Why an access log: Envoy's RBAC filter decides in Envoy (DENY/ALLOW policies, and dry-run policies as *shadow*
rules that block nothing), so the only per-request record of who was denied is what Envoy writes. The agent
declares a file in node metadata ``AUTHZ_LOG`` (under its instance dir); this log writes one JSON line per
request that an RBAC filter denied (status 403; the agent keeps those whose response code details say
``rbac_access_denied_matched_policy[...]``) or that a dry-run policy would have denied (dynamic metadata
``envoy.filters.http.rbac`` ``<prefix>shadow_engine_result: denied``), with the caller's SPIFFE id, method, path
and policy. The agent tails it and reports each decision to the security audit trail. Proxies without the key
get no log (nothing is written that nobody reads).
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2

from meshplane.model.proxy import Proxy
from meshplane.translate.authz import DRY_RUN_STAT
from meshplane.translate.common import pack

METADATA_KEY = "AUTHZ_LOG"
RBAC_NAMESPACE = "envoy.filters.http.rbac"
FILE_LOGGER = "envoy.access_loggers.file"

# One JSON object per line; field names are what meshplane.agent.authzlog reads.
FIELDS = {
    "time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "code": "%RESPONSE_CODE%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "principal": "%DOWNSTREAM_PEER_URI_SAN%",
    "source": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    **{f"{action.lower()}ShadowResult": f"%DYNAMIC_METADATA({RBAC_NAMESPACE}:{prefix}shadow_engine_result)%"
       for action, prefix in DRY_RUN_STAT.items()},
    **{f"{action.lower()}ShadowPolicy": f"%DYNAMIC_METADATA({RBAC_NAMESPACE}:{prefix}shadow_effective_policy_id)%"
       for action, prefix in DRY_RUN_STAT.items()},
}


def _shadow_denied(prefix: str) -> accesslog_pb2.AccessLogFilter:
    f = accesslog_pb2.AccessLogFilter()
    m = f.metadata_filter.matcher
    m.filter = RBAC_NAMESPACE
    m.path.add(key=f"{prefix}shadow_engine_result")
    m.value.string_match.CopyFrom(string_pb2.StringMatcher(exact="denied"))
    f.metadata_filter.match_if_key_not_found.value = False
    return f


def authz_access_logs(proxy: Proxy) -> list[accesslog_pb2.AccessLog]:
    """The decision log for ``proxy``'s inbound HTTP, or nothing when its agent declared no file."""
    path = proxy.metadata.get(METADATA_KEY)
    if not isinstance(path, str) or not path:
        return []
    denied = accesslog_pb2.AccessLogFilter()
    denied.status_code_filter.comparison.op = accesslog_pb2.ComparisonFilter.EQ
    denied.status_code_filter.comparison.value.default_value = 403
    denied.status_code_filter.comparison.value.runtime_key = "meshplane.authz_log.status"
    either = accesslog_pb2.AccessLogFilter()
    either.or_filter.filters.extend([denied, *(_shadow_denied(p) for p in DRY_RUN_STAT.values())])
    fmt = struct_pb2.Struct()
    fmt.update(FIELDS)
    cfg = file_pb2.FileAccessLog(path=path)
    cfg.log_format.json_format.CopyFrom(fmt)
    log = accesslog_pb2.AccessLog(name=FILE_LOGGER, filter=either, typed_config=pack(cfg))
    return [log]


__all__ = ["METADATA_KEY", "authz_access_logs"]
