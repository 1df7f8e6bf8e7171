"""The string formats Kubernetes and Istio check: names, label keys, hosts, IPs, ports, durations, RE2 regexes.

Each check returns ``None`` when the value is fine, else the detail text of the error, so a caller writes
``if (err := fqdn(host)): report.invalid(path, host, err)``. They are pure and cheap: they run on every write.
The regex check exists because Envoy uses RE2 while Python's ``re`` accepts more (lookaround, backreferences);
a pattern Envoy would reject must be refused at apply time, not by a NACK later.
"""

from __future__ import annotations

import ipaddress
import re
import warnings

# The product's one duration parser (re-exported for the checks here and in _networking).
from meshplane.model.spec import DURATION_FORMS
from meshplane.model.spec import parse_duration as parse_duration

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253

_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(f"^{_LABEL_FMT}$")
_DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL_FMT}(\.{_LABEL_FMT})*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Host labels in Istio accept upper case (DNS is case-insensitive).
_HOST_LABEL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_WILDCARD_LABEL = re.compile(r"^(\*|\*?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)$")
_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and "
    "end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
    "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def dns1123_label(value: str) -> str | None:
    if len(value) > DNS1123_LABEL_MAX:
        return f"must be no more than {DNS1123_LABEL_MAX} characters"
    if not _DNS1123_LABEL.match(value):
        return DNS1123_LABEL_MSG
    return None


def dns1123_subdomain(value: str) -> str | None:
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
    if not _DNS1123_SUBDOMAIN.match(value):
        return DNS1123_SUBDOMAIN_MSG
    return None


def qualified_name(value: str) -> str | None:
    """A label or annotation key: an optional DNS subdomain prefix and '/', then a name of at most 63."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            return "prefix part must be non-empty"
        err = dns1123_subdomain(prefix)
        if err:
            return f"prefix part {err}"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.match(name):
        return _QUALIFIED_NAME_MSG
    return None


def label_value(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _LABEL_VALUE.match(value):
        return _LABEL_VALUE_MSG
    return None


def header_name(value: str) -> str | None:
    if not value:
        return "header name cannot be empty"
    if not _HEADER_NAME.match(value):
        return "must be a valid header name (letters, digits, '-' and '_')"
    return None


def header_value(value: str) -> str | None:
    if _HEADER_VALUE_BAD.search(value):
        return "header values may not contain control characters"
    # Envoy treats '%' as the start of a command operator: a lone one makes the route NACKed.
    rest = value.replace("%%", "")
    if rest.count("%") % 2:
        return "unbalanced '%' in header value (write '%%' for a literal percent sign)"
    return None


def _dns_labels(labels: str, domain: str) -> str | None:
    """Check the dot-separated ``labels`` (all of ``domain``, or what follows its first label)."""
    parts = labels.split(".")
    if parts[-1].isdigit():
        return f"domain name {domain!r} invalid (top level domain {parts[-1]!r} cannot be all-numeric)"
    last = len(parts) - 1
    for i, label in enumerate(parts):
        if i == last and label == "" and (i > 0 or labels != domain):
            return None  # a trailing dot: "istio.io."
        if len(label) > DNS1123_LABEL_MAX or not _HOST_LABEL.match(label):
            return f"domain name {domain!r} invalid (label {label!r} invalid)"
    return None


def _domain_preconditions(domain: str) -> str | None:
    if not domain:
        return "empty domain name not allowed"
    if len(domain) > 255:
        return "domain name too long (max 255)"
    return None


def fqdn(domain: str) -> str | None:
    """A host name without wildcards (a single label such as a short service name is allowed)."""
    return _domain_preconditions(domain) or _dns_labels(domain, domain)


def wildcard_domain(domain: str) -> str | None:
    """A host name that may start with a wildcard label: ``*``, ``*.example.com``, ``reviews``."""
    err = _domain_preconditions(domain)
    if err:
        return err
    first, dot, rest = domain.partition(".")
    if len(first) > DNS1123_LABEL_MAX or not _WILDCARD_LABEL.match(first):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    return _dns_labels(rest, domain) if dot else None


def partial_wildcard(host: str) -> str | None:
    if "*" in host and host != "*" and not host.startswith("*."):
        return f"partial wildcard {host!r} not allowed"
    return None


def ip_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value} is not a valid IP"
    return None


def ip_or_cidr(value: str) -> str | None:
    if value.count("/") == 1:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value} is not a valid CIDR block"
        return None
    return ip_address(value)


def is_ip(value: str) -> bool:
    return ip_address(value) is None


def port(number: int) -> str | None:
    if 1 <= number <= 65535:
        return None
    return f"port number {number} must be in the range 1..65535"


def unix_address(path: str) -> str | None:
    if not path:
        return "unix address must not be empty"
    if path.startswith("@"):
        return None
    if not path.startswith("/") or path.endswith("/"):
        return f"{path} is not an absolute path to a file"
    return None


# --- durations ---------------------------------------------------------------------------------------------

def duration(text: str, *, minimum_ms: int = 1) -> str | None:
    """A Go-style duration of at least ``minimum_ms`` (1ms by default, as Istio's CRDs demand), in whole ms."""
    ns = parse_duration(text)
    if ns is None:
        return DURATION_FORMS
    return duration_ns(ns, minimum_ms=minimum_ms)


def duration_ns(ns: int, *, minimum_ms: int = 1) -> str | None:
    """:func:`duration`'s rules on a decoded duration (nanoseconds)."""
    if ns < minimum_ms * 1_000_000:
        return f"must be a valid duration greater than {minimum_ms}ms" if minimum_ms else "must not be negative"
    if ns % 1_000_000:
        return "only durations to ms precision are supported"
    return None


# --- RE2 -----------------------------------------------------------------------------------------------------

_RE2_SYNTAX = "https://github.com/google/re2/wiki/Syntax"
_REPEAT = re.compile(r"\{(\d*)(?:,(\d*))?\}")


def _translate_re2(pattern: str) -> tuple[str, str | None]:
    """Rewrite RE2-only syntax for Python's ``re`` and find constructs RE2 lacks.

    Returns the Python pattern and the reason RE2 rejects the pattern, if it does.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                return "", "trailing backslash at end of expression"
            d = pattern[i + 1]
            if not in_class and d in "123456789":
                return "", f"invalid escape sequence: `\\{d}` (RE2 has no backreferences)"
            if d == "z":
                out.append(r"\Z")
            elif d == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = n if end < 0 else end + 2
                continue
            elif d in "pP":
                j = i + 2
                if j < n and pattern[j] == "{":
                    close = pattern.find("}", j)
                    if close < 0:
                        return "", "invalid character class range"
                    j = close + 1
                else:
                    j += 1
                out.append("a" if in_class else ".")
                i = j
                continue
            elif d == "C":
                out.append(".")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # A ']' right after '[' or '[^' is a literal member of the class.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("]")
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            rest = pattern[i + 2 : i + 4]
            if rest[:1] in ("=", "!") or rest in ("<=", "<!"):
                return "", f"invalid or unsupported Perl syntax: `(?{rest[:2] if rest[:1] == '<' else rest[:1]}`"
            if rest[:1] == ">":
                return "", "invalid or unsupported Perl syntax: `(?>` (RE2 has no atomic groups)"
            if rest[:1] == "(":
                return "", "invalid or unsupported Perl syntax: `(?(` (RE2 has no conditionals)"
            if pattern.startswith("(?P=", i):
                return "", "invalid named capture: `(?P=` (RE2 has no backreferences)"
            if rest[:1] == "<":
                out.append("(?P<")
                i += 3
                continue
        if c in "*+?}":
            if c == "}":
                start = pattern.rfind("{", 0, i)
                m = _REPEAT.fullmatch(pattern, start, i + 1) if start >= 0 else None
                if m and any(g and int(g) > 1000 for g in m.groups()):
                    return "", f"invalid repeat count: `{m.group(0)}`"
            if i + 1 < n and pattern[i + 1] == "+":
                return "", f"invalid nested repetition operator: `{c}+`"
        out.append(c)
        i += 1
    return "".join(out), None


def re2(pattern: str, *, max_length: int = 1024) -> str | None:
    """None if Envoy's RE2 accepts the pattern, else why not."""
    if len(pattern) > max_length:
        return f"regex is too large, max length allowed is {max_length}"
    translated, reason = _translate_re2(pattern)
    if reason is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                re.compile(translated)
        except re.error as e:
            reason = str(e)
    if reason is None:
        return None
    return f"error parsing regexp: {reason}; Istio uses RE2 style regex-based match ({_RE2_SYNTAX})"
