"""String formats (RE2, Go durations, hosts, names) and the metadata checks every kind gets."""

from __future__ import annotations

import pytest
from _api_helpers import KINDS, assert_cause, causes, make, ok

from meshplane.api import _formats as fmt
from meshplane.api.errors import InvalidObject
from meshplane.api.validation import validate

GOOD_VS = {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}


@pytest.mark.parametrize("pattern", ["^/api/v[0-9]+/.*", r"\d+\z", "(?P<x>a)|(?<y>b)", "(?i)jason", r"[\]a]+",
                                     r"\p{Greek}+", "a{2,1000}", r"\Qa.b\E"])
def test_re2_accepts(pattern: str) -> None:
    assert fmt.re2(pattern) is None


@pytest.mark.parametrize(("pattern", "why"), [
    ("(?=a)b", "(?="), ("(?!a)b", "(?!"), ("(?<=a)b", "(?<="), ("(?<!a)b", "(?<!"),
    (r"(a)\1", "backreferences"), ("(?P<n>a)(?P=n)", "backreferences"), ("(?>a)", "atomic"),
    ("a++", "++"), ("a{1001}", "repeat count"), ("[", "unterminated"), ("a" * 1025, "too large"),
])
def test_re2_rejects(pattern: str, why: str) -> None:
    err = fmt.re2(pattern)
    assert err is not None and why in err


@pytest.mark.parametrize(("text", "ns"), [("1s", 10**9), ("0.5s", 5 * 10**8), ("100ms", 10**8),
                                          ("1h30m", 5400 * 10**9), ("1.5s", 15 * 10**8), ("3m", 180 * 10**9),
                                          ("0", 0), ("2us", 2000)])
def test_go_durations_parse(text: str, ns: int) -> None:
    assert fmt.parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "1", "1.5", "s", "1 s", "1sec", "abc", "1s2"])
def test_not_durations(text: str) -> None:
    assert fmt.parse_duration(text) is None


def test_duration_rules() -> None:
    assert fmt.duration("0.5s") is None
    assert "greater than 1ms" in (fmt.duration("0s") or "")
    assert "greater than 1ms" in (fmt.duration("-1s") or "")
    assert "ms precision" in (fmt.duration("1.0005s") or "")
    assert fmt.duration("0s", minimum_ms=0) is None


@pytest.mark.parametrize("host", ["reviews", "reviews.default.svc.cluster.local", "*.example.com", "*", "Foo.com",
                                  "istio.io."])
def test_wildcard_domains(host: str) -> None:
    assert fmt.wildcard_domain(host) is None


@pytest.mark.parametrize("host", ["", "a..b", "bad_host", "foo.*.com", "example.123", "-a.com", "a" * 64 + ".com"])
def test_bad_domains(host: str) -> None:
    assert fmt.wildcard_domain(host) is not None


def test_other_formats() -> None:
    assert fmt.ip_or_cidr("10.0.0.0/8") is None and fmt.ip_or_cidr("2001:db8::/32") is None
    assert fmt.ip_or_cidr("10.0.0.300") and fmt.ip_or_cidr("10.0.0.0/33")
    assert fmt.qualified_name("app.kubernetes.io/name") is None and fmt.qualified_name("bad key")
    assert fmt.label_value("") is None and fmt.label_value("v1") is None and fmt.label_value("-v1")
    assert fmt.header_name("x-request-id") is None and fmt.header_name("x request")
    assert fmt.header_value("%HOSTNAME%") is None and fmt.header_value("100%%") is None
    assert fmt.header_value("abc%123") and fmt.header_value("a\nb")
    assert fmt.port(1) is None and fmt.port(65535) is None and fmt.port(0) and fmt.port(65536)


# --- metadata -------------------------------------------------------------------------------------------------


def test_name_is_required_unless_generate_name() -> None:
    obj = make("VirtualService", GOOD_VS)
    del obj["metadata"]["name"]
    with pytest.raises(InvalidObject) as exc:
        validate(KINDS["VirtualService"], obj)
    assert_cause(exc.value.causes, "metadata.name", "FieldValueRequired", "name or generateName is required")
    obj["metadata"]["generateName"] = "reviews-"
    assert validate(KINDS["VirtualService"], obj) == []


def test_name_must_be_a_dns_subdomain() -> None:
    cause = assert_cause(causes("VirtualService", GOOD_VS, name="Reviews_1"), "metadata.name", "FieldValueInvalid")
    assert cause.message.startswith('Invalid value: "Reviews_1": a lowercase RFC 1123 subdomain')
    assert_cause(causes("VirtualService", GOOD_VS, name="a" * 254), "metadata.name", "FieldValueInvalid",
                 "no more than 253")
    assert ok("VirtualService", GOOD_VS, name="reviews.v1") == []


def test_namespace_must_be_a_dns_label() -> None:
    assert_cause(causes("VirtualService", GOOD_VS, namespace="my.ns"), "metadata.namespace", "FieldValueInvalid",
                 "RFC 1123 label")
    assert ok("VirtualService", GOOD_VS, namespace="istio-system") == []


def test_cluster_scoped_kind_has_no_namespace() -> None:
    obj = make("MemberCluster", {"local": True})
    obj["metadata"]["namespace"] = "default"
    with pytest.raises(InvalidObject) as exc:
        validate(KINDS["MemberCluster"], obj)
    assert_cause(exc.value.causes, "metadata.namespace", "FieldValueForbidden", "not allowed on this type")


def test_labels_and_annotations() -> None:
    found = causes("VirtualService", GOOD_VS, labels={"bad key": "v", "app": "bad value"})
    assert_cause(found, "metadata.labels", "FieldValueInvalid", 'Invalid value: "bad key"')
    assert_cause(found, "metadata.labels", "FieldValueInvalid", 'Invalid value: "bad value"')
    found = causes("VirtualService", GOOD_VS, annotations={"bad/key/x": "v"})
    assert_cause(found, "metadata.annotations", "FieldValueInvalid")
    found = causes("VirtualService", GOOD_VS, annotations={"big": "x" * (256 * 1024)})
    assert_cause(found, "metadata.annotations", "FieldValueTooLong", "262144")
    assert ok("VirtualService", GOOD_VS, labels={"app.kubernetes.io/name": "reviews", "empty": ""},
              annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}", "Note": "x" * 1000}) == []


def test_dry_run_annotation_only_on_authorization_policy() -> None:
    found = causes("VirtualService", GOOD_VS, annotations={"istio.io/dry-run": "true"})
    assert_cause(found, "metadata.annotations[istio.io/dry-run]", "FieldValueInvalid", "only supported on")
    assert ok("AuthorizationPolicy", {"action": "DENY", "rules": [{}]}, annotations={"istio.io/dry-run": "true"}) == []
