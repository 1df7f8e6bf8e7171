"""The part of Istio's CEL vocabulary (Telemetry API tag values and access-log filters) meshplane translates.

Why in ``model``: admission warns about an expression translation cannot carry out, naming its field, and
translation turns the others into Envoy format strings; both read this one table.
"""

from __future__ import annotations

import re

# CEL attributes (Istio's attribute vocabulary) that have an Envoy format string.
CEL_ATTRIBUTES = {
    "request.host": "%REQ(:AUTHORITY)%",
    "request.method": "%REQ(:METHOD)%",
    "request.path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "request.scheme": "%REQ(:SCHEME)%",
    "request.protocol": "%PROTOCOL%",
    "request.useragent": "%REQ(USER-AGENT)%",
    "request.id": "%REQ(X-REQUEST-ID)%",
    "request.referer": "%REQ(REFERER)%",
    "response.code": "%RESPONSE_CODE%",
    "response.code_details": "%RESPONSE_CODE_DETAILS%",
    "response.flags": "%RESPONSE_FLAGS%",
    "source.address": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "source.port": "%DOWNSTREAM_REMOTE_PORT%",
    "destination.address": "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%",
    "destination.port": "%DOWNSTREAM_LOCAL_PORT%",
    "connection.requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream.address": "%UPSTREAM_HOST%",
}
_HEADER = re.compile(r"""^(request|response)\.headers\[\s*(['"])([A-Za-z0-9!#$&'*+.^_`|~-]+)\2\s*\]$""")
_LITERAL = re.compile(r"""^(['"])([^'"%\\]*)\1$""")
_CODE_FILTER = re.compile(r"^response\.code\s*(>=|<=|==|!=|>|<)\s*(\d{3})$")


def cel_to_format(expression: str) -> str | None:
    """The Envoy format string of a CEL tag value, or None when it has none."""
    text = expression.strip()
    if text in CEL_ATTRIBUTES:
        return CEL_ATTRIBUTES[text]
    m = _HEADER.match(text)
    if m:
        return f"%{'REQ' if m.group(1) == 'request' else 'RESP'}({m.group(3)})%"
    m = _LITERAL.match(text)
    if m:
        return m.group(2)
    return None


def code_filter(expression: str) -> tuple[str, int] | None:
    """``response.code >= 400`` -> (">=", 400); None for any other expression."""
    m = _CODE_FILTER.match(expression.strip())
    return (m.group(1), int(m.group(2))) if m else None


__all__ = ["CEL_ATTRIBUTES", "cel_to_format", "code_filter"]
