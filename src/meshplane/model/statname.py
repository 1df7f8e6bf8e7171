"""Istio's standard metric labels packed into one Envoy stat name, so Envoy does not format them per request.

Why: Envoy's stats access logger formats every tag of every sample for each request and looks the stat up by
the resulting dynamic name; with Istio's ~23 labels that was most of the metrics' CPU cost (bench/README.md).
Most labels are known when a listener is built (the reporter, the protocol, the destination service on the
inbound side, the proxy's own identity on listeners built for one proxy), so they go into the stat *name*,
which Envoy interns once. What changes per request (response code and flags, the other side's principal, the
peer's identity, at the source the destination service) is formatted into *one* tag, ``meshplane``: Envoy's
cost per tag (a string, two dynamic stat names, the join) is paid once instead of five times. The agent's
metrics listener (port 15090) decodes names and that tag back into Istio's names and labels at scrape time
(``agent.statsdecode``); Prometheus never sees the encoding.

The encoding (names only ``[A-Za-z0-9_]``, which Envoy's Prometheus output keeps as it is):

- a value or label name is *escaped*: ASCII letters and digits stay, every other byte becomes ``_`` and two
  lowercase hex digits (``reviews-v2`` -> ``reviews_2dv2``, ``_`` -> ``_5f``), so ``__`` never occurs inside one;
- a stat name is ``m`` + the labels' escaped ``name__value`` pairs joined by ``__`` + ``__`` + the metric
  (``m reporter__destination__request_5fprotocol__http __requests_total`` without the spaces); the metric
  (``requests_total``) never contains ``__``, so the last ``__`` ends the labels;
- a value can be a placeholder the decoder fills in: ``$self`` (the proxy's own value for that label, known to
  its agent: listeners shared by the proxies of a scope cannot carry it), and fields of the request tag:
  ``$code``, ``$flags``, ``$principal`` (the other side's principal from the TLS handshake; ``unknown`` without
  one), ``$peer`` (that label's field of the peer value), ``$service`` (that label's field of the service value),
  ``$mtls`` (the proxy's own principal when the other side's principal is known, i.e. the connection was mutual
  TLS; else ``unknown``);
- the request tag's value is its *fields* ``code|flags|service|principal|peer`` (``REQUEST_FIELDS``; a field no
  label uses is empty). The first three are written by Envoy or by us and never contain ``|``; the principal
  comes from a certificate and the peer value from a header (untrusted), so the decoder splits the first three
  at the first separators and the rest at its *last* one: a principal with a ``|`` still decodes, a forged peer
  with one can only damage the peer's own labels and make the principal visibly wrong (``split_request``);
- the peer's identity travels as one *peer value* ``workload;namespace;app;version;cluster`` of escaped fields
  (the header ``x-meshplane-peer``, the metadata key ``meshplane.peer:id``); an outbound cluster's service as one
  *service value* ``host;name;namespace`` (its metadata). A missing or ``-`` value means every field is
  ``unknown``.

Names built before the request tag carried the peer and the service as tags of their own (``meshplane_peer``,
``meshplane_service``) and the response code, flags and principals as plain tags; the decoder still reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

# model.peer's fields, in the order of the peer value and of Istio's ``source_*`` / ``destination_*`` labels
PEER_FIELDS = ("workload", "namespace", "app", "version", "cluster")
UNKNOWN = "unknown"  # Istio's value for a label it cannot know

MARK = "m"  # first character of an encoded stat name
SEPARATOR = "__"
PEER_SEPARATOR = ";"
SELF = "$self"
PEER = "$peer"
SERVICE = "$service"
MTLS = "$mtls"
CODE = "$code"
FLAGS = "$flags"
PRINCIPAL = "$principal"
REQUEST_TAG = "meshplane"  # the one per-request tag: REQUEST_FIELDS joined by FIELD_SEPARATOR
FIELD_SEPARATOR = "|"
REQUEST_FIELDS = ("code", "flags", "service", "principal", "peer")
# the request field each placeholder reads
FIELD_OF_PLACEHOLDER = {CODE: "code", FLAGS: "flags", SERVICE: "service", PRINCIPAL: "principal", PEER: "peer",
                        MTLS: "principal"}
PEER_TAG = "meshplane_peer"  # before the request tag: the peer value as a tag of its own
SERVICE_TAG = "meshplane_service"  # ... and the service value
SERVICE_LABELS = ("destination_service", "destination_service_name", "destination_service_namespace")

# Istio's label suffixes of model.peer's fields (source_<suffix>, destination_<suffix>)
LABEL_SUFFIXES = ("workload", "workload_namespace", "app", "version", "cluster")
FIELD_OF_SUFFIX = dict(zip(LABEL_SUFFIXES, PEER_FIELDS, strict=True))


def escape(value: str) -> str:
    """``value`` with every byte outside ``[A-Za-z0-9]`` as ``_xx`` (UTF-8, lowercase hex)."""
    out = []
    for byte in value.encode():
        char = chr(byte)
        out.append(char if char.isascii() and char.isalnum() else f"_{byte:02x}")
    return "".join(out)


def unescape(value: str) -> str:
    """The inverse of :func:`escape`; anything that is not a valid escape (a peer's header may be forged or
    malformed) is kept as it is."""
    raw = bytearray()
    i = 0
    while i < len(value):
        hexa = value[i + 1:i + 3]
        if value[i] == "_" and len(hexa) == 2 and all(c in "0123456789abcdefABCDEF" for c in hexa):
            raw.append(int(hexa, 16))
            i += 3
        else:
            raw.extend(value[i].encode())
            i += 1
    return raw.decode(errors="replace")


def encode_name(metric: str, labels: Mapping[str, str]) -> str:
    """The stat name of ``metric`` (``requests_total``) with ``labels`` fixed in it (sorted by name)."""
    if SEPARATOR in metric or not metric or not metric.replace("_", "").isalnum():
        raise ValueError(f"metric {metric!r}: expected letters, digits and single underscores")
    pairs = SEPARATOR.join(f"{escape(k)}{SEPARATOR}{escape(v)}" for k, v in sorted(labels.items()))
    return f"{MARK}{pairs}{SEPARATOR}{metric}"


def decode_name(name: str) -> tuple[str, dict[str, str]] | None:
    """``(metric, labels)`` of an encoded stat name, None for any other name. The reference for the agent's Lua
    decoder (``agent.statsdecode``), which does the same at scrape time."""
    if not name.startswith(MARK) or SEPARATOR not in name:
        return None
    body, _, metric = name[len(MARK):].rpartition(SEPARATOR)
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(body):
        if body.startswith(SEPARATOR, i):
            parts.append("".join(current))
            current = []
            i += 2
        elif body[i] == "_":
            current.append(body[i:i + 3])
            i += 3
        else:
            current.append(body[i])
            i += 1
    if body:
        parts.append("".join(current))
    if len(parts) % 2:
        return None
    return metric, {unescape(parts[i]): unescape(parts[i + 1]) for i in range(0, len(parts), 2)}


def joined(values: Iterable[str]) -> str:
    """Several values as one (a peer value, a service value): each escaped, joined by ``;``."""
    return PEER_SEPARATOR.join(escape(v) for v in values)


def split(value: str, count: int) -> list[str]:
    """The ``count`` fields of a joined value; a missing one (a peer that sent nothing, or a malformed value)
    is ``unknown``, as is every field of a missing value (``-``: Envoy's word for it)."""
    parts: Sequence[str] = value.split(PEER_SEPARATOR) if value not in ("", "-") else []
    return [unescape(parts[i]) if i < len(parts) and parts[i] else UNKNOWN for i in range(count)]


def request_value(fields: Mapping[str, str]) -> str:
    """The request tag's value (or Envoy format string) of ``fields`` (by ``REQUEST_FIELDS`` name; a missing one
    is empty)."""
    return FIELD_SEPARATOR.join(fields.get(f, "") for f in REQUEST_FIELDS)


def split_request(value: str) -> dict[str, str]:
    """The fields of a request tag's value: the first three split at the first separators (they never contain
    one), the rest at its last (the principal may contain one, a forged peer value too); missing fields are
    empty. The reference for the agent's Lua decoder."""
    parts = value.split(FIELD_SEPARATOR, 3)
    if len(parts) == 4:
        principal, sep, peer = parts[3].rpartition(FIELD_SEPARATOR)
        parts[3:] = [principal, peer] if sep else [peer]
    return {f: parts[i] if i < len(parts) else "" for i, f in enumerate(REQUEST_FIELDS)}


def peer_value(identity: Mapping[str, str]) -> str:
    """One proxy's identity as the single peer value (``model.peer``'s fields in order)."""
    return joined(identity.get(f) or UNKNOWN for f in PEER_FIELDS)


def side_labels(side: str) -> Iterable[tuple[str, str]]:
    """``(label, model.peer field)`` of one side (``source``/``destination``): ``source_workload``..."""
    return ((f"{side}_{suffix}", FIELD_OF_SUFFIX[suffix]) for suffix in LABEL_SUFFIXES)


__all__ = ["CODE", "FIELD_OF_PLACEHOLDER", "FIELD_OF_SUFFIX", "FIELD_SEPARATOR", "FLAGS", "LABEL_SUFFIXES", "MARK",
           "MTLS", "PEER", "PEER_FIELDS", "PEER_SEPARATOR", "PEER_TAG", "PRINCIPAL", "REQUEST_FIELDS", "REQUEST_TAG",
           "SELF", "SEPARATOR", "SERVICE", "SERVICE_LABELS", "SERVICE_TAG", "UNKNOWN", "decode_name", "encode_name",
           "escape", "joined", "peer_value", "request_value", "side_labels", "split", "split_request", "unescape"]
