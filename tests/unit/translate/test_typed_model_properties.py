"""Admission and translation agree on every form a VirtualService field can take (issue 19).

A generated VirtualService sets ``timeout``, ``retries.perTryTimeout``, ``fault.delay.fixedDelay``, destination
weights and ports, and header and uri matches to forms the schema admits and forms it does not (Go durations
such as ``.5s``, ``1.s``, ``+1s``, ``1h2m3.5s``, sub-millisecond, negative and garbage ones; weights below 0 and
above 100; ports 0 to 65536; valid and invalid RE2). Each generated field knows whether Istio admits its value.
Then either admission refuses the object, every invalid field is named by a cause and every cause names an
invalid field; or it admits it, every field was valid, and the Envoy route generated for a sidecar carries
exactly the values (durations in nanoseconds as :func:`meshplane.model.spec.parse_duration` reads them).
"""

from __future__ import annotations

import copy
import string
from dataclasses import dataclass
from typing import Any

import pytest
from _feature_corpus import vs
from _translate_helpers import bookinfo_file, bookinfo_registry, context, fqdn, routes, sidecar
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from google.protobuf import duration_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from meshplane.api.errors import InvalidObject
from meshplane.api.kinds import default_registry
from meshplane.api.validation import validate
from meshplane.model.spec import parse_duration

REVIEWS = fqdn("reviews")
HTTP = "spec.http[0]"
MS = 1_000_000
INFO = default_registry().by_kind("networking.istio.io", "VirtualService")
MESH = bookinfo_registry() + bookinfo_file("destination-rule-all.yaml")
PROXY = sidecar(INTERCEPTION_MODE="REDIRECT")  # has the per-port route configuration "9080"

# --- what Istio admits ------------------------------------------------------------------------------------------


def duration_admitted(value: Any) -> bool:
    """Istio's route durations: Go's syntax, at least 1ms, whole milliseconds."""
    ns = parse_duration(value) if isinstance(value, str) else None
    return ns is not None and ns >= MS and ns % MS == 0


def weights_admitted(weights: list[int | None]) -> bool:
    """No negative weight; one destination: unset, 0 or 100; several: they add up to 100."""
    if any(w is not None and w < 0 for w in weights):
        return False
    if len(weights) == 1:
        return weights[0] in (None, 0, 100)
    return sum(w or 0 for w in weights) == 100


VALID_RE2 = ["a+", "[0-9]{1,3}", "^/api/.*$", "(?i)jason", r"\d+", "v[12]|v3", ".*"]
INVALID_RE2 = ["", "(a", "a{2,1}", "(?=a)", "[z-a]", "a**", r"\1", "(?<!a)b", "x{1001}"]
HEADER_NAMES = {"end-user": True, "X-Version": True, "x_b": True, "bad name": False}


# --- strategies: each field has what Istio admits, and anything ---------------------------------------------------

DURATION_FORMS = ["1s", "1.5s", ".5s", "1.s", "+1s", "100ms", "1h2m3.5s", "2m", "0.25s", "1000us", "0", "0s",
                  "10us", "-1s", "-.5s", "1500us", "0.0005s", "1.0001s", "garbage", "", "1", "s", ".s", "1x",
                  "1 s", "--1s", "1ss"]


@st.composite
def ms_text(draw: st.DrawFn) -> str:
    """A whole number of milliseconds written in one of Go's units."""
    ms = draw(st.integers(min_value=1, max_value=10**7))
    return draw(st.sampled_from([f"{ms}ms", f"{ms / 1000}s", f"{ms * 1000}us", f"{ms * MS}ns", f"+{ms}ms"]))


good_durations = st.one_of(st.sampled_from([d for d in DURATION_FORMS if duration_admitted(d)]), ms_text())
any_durations = st.one_of(st.sampled_from(DURATION_FORMS), ms_text(),
                          st.text(alphabet="0123456789.+-smhunµ", max_size=6), st.integers(-3, 3))

valid_split = st.integers(min_value=2, max_value=3).flatmap(
    lambda n: st.lists(st.integers(0, 100), min_size=n - 1, max_size=n - 1).map(
        lambda cuts: [b - a for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), 100], strict=True)]))
good_weights = st.one_of(valid_split, st.sampled_from([[None], [0], [100]]))
any_weights = st.one_of(valid_split, st.lists(st.one_of(st.none(), st.integers(-5, 105)), min_size=1, max_size=3))
PORTS = [None, 0, 1, 9080, 65535, 65536]

text = st.text(alphabet=string.ascii_letters + string.digits + "-_./", max_size=8)


def string_matches(regexes: list[str], *, empty: bool, lead: str = "") -> st.SearchStrategy[dict[str, str]]:
    kinds = [st.builds(lambda t: {"exact": lead + t}, text), st.builds(lambda t: {"prefix": lead + t}, text),
             st.builds(lambda p: {"regex": p}, st.sampled_from(regexes))]
    return st.one_of(*kinds, st.just({})) if empty else st.one_of(*kinds)


def header_maps(names: list[str], regexes: list[str]) -> st.SearchStrategy[dict[str, dict[str, str]]]:
    return st.dictionaries(st.sampled_from(names), string_matches(regexes, empty=True), max_size=2)


ALL_RE2 = VALID_RE2 + INVALID_RE2
good_headers = header_maps(sorted(n for n, ok in HEADER_NAMES.items() if ok), VALID_RE2)
any_headers = header_maps(sorted(HEADER_NAMES), ALL_RE2)
good_uris = st.one_of(st.none(), string_matches(VALID_RE2, empty=False, lead="/"))
any_uris = st.one_of(st.none(), string_matches(ALL_RE2, empty=True, lead="/"))


# --- the generated object and what it claims ------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One generated field: whether Istio admits it, and the cause paths that name it (exactly, or below).
    ``shape_error``: the value does not have the schema's JSON type, which structural validation refuses before
    (and instead of) the semantic rules, as kube-apiserver's schema check comes before Istio's webhook."""

    valid: bool
    exact: tuple[str, ...] = ()
    under: tuple[str, ...] = ()
    shape_error: bool = False

    def names(self, cause: str) -> bool:
        return cause in self.exact or any(cause == p or cause.startswith((p + ".", p + "[")) for p in self.under)


def string_match_admitted(sm: dict[str, str], *, allow_empty: bool) -> bool:
    if not sm:
        return allow_empty
    return "regex" not in sm or sm["regex"] in VALID_RE2


@dataclass
class Case:
    """One generated http route; None leaves the field out."""

    timeout: Any
    per_try: Any
    fixed_delay: Any
    weights: list[int | None]
    ports: list[int | None]
    headers: dict[str, dict[str, str]]
    uri: dict[str, str] | None

    def http(self) -> dict[str, Any]:
        dests: list[dict[str, Any]] = []
        for k, (w, port) in enumerate(zip(self.weights, self.ports, strict=True)):
            dest: dict[str, Any] = {"host": "reviews", "subset": f"v{k + 1}"}
            if port is not None:
                dest["port"] = {"number": port}
            dests.append({"destination": dest} if w is None else {"destination": dest, "weight": w})
        http: dict[str, Any] = {"name": "prop", "route": dests}
        if self.timeout is not None:
            http["timeout"] = self.timeout
        if self.per_try is not None:
            http["retries"] = {"attempts": 2, "perTryTimeout": self.per_try}
        if self.fixed_delay is not None:
            http["fault"] = {"delay": {"fixedDelay": self.fixed_delay, "percentage": {"value": 100}}}
        match = {"headers": self.headers} if self.headers else {}
        if self.uri is not None:
            match["uri"] = self.uri
        if match:
            http["match"] = [match]
        return http

    def fields(self) -> list[Field]:
        durations = ((self.timeout, "timeout"), (self.per_try, "retries.perTryTimeout"),
                     (self.fixed_delay, "fault.delay.fixedDelay"))
        out = [Field(duration_admitted(v), exact=(f"{HTTP}.{path}",), shape_error=not isinstance(v, str))
               for v, path in durations if v is not None]
        out.append(Field(weights_admitted(self.weights), exact=(
            f"{HTTP}.route", *(f"{HTTP}.route[{k}].weight" for k in range(len(self.weights))))))
        out += [Field(1 <= p <= 65535, exact=(f"{HTTP}.route[{k}].destination.port.number",))
                for k, p in enumerate(self.ports) if p is not None]
        out += [Field(HEADER_NAMES[name] and string_match_admitted(sm, allow_empty=True),
                      under=(f"{HTTP}.match[0].headers[{name}]",)) for name, sm in self.headers.items()]
        if self.uri is not None:
            out.append(Field(string_match_admitted(self.uri, allow_empty=False), under=(f"{HTTP}.match[0].uri",)))
        return out


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Half the cases admissible throughout (their routes are checked), half with anything in any field."""
    good = draw(st.booleans())
    durations = good_durations if good else any_durations
    maybe = st.one_of(st.none(), durations)
    ws = draw(good_weights if good else any_weights)
    ports = st.sampled_from([p for p in PORTS if not good or p is None or 1 <= p <= 65535])
    return Case(draw(maybe), draw(maybe), draw(maybe), ws, draw(st.lists(ports, min_size=len(ws), max_size=len(ws))),
                draw(good_headers if good else any_headers), draw(good_uris if good else any_uris))


# --- what Envoy was given ---------------------------------------------------------------------------------------


def ns_of(d: duration_pb2.Duration) -> int:
    return int(d.seconds) * 10**9 + int(d.nanos)


def generated_route(obj: dict[str, Any]) -> rc.Route:
    rds = {c.name: c for c in routes(PROXY, context([*MESH, obj]))}
    vh = next(v for v in rds["9080"].virtual_hosts if v.name == f"{REVIEWS}:9080")
    return next(r for r in vh.routes if r.name == "prop")


def envoy_string_match(m: Any) -> tuple[str, str]:
    kind = m.WhichOneof("match_pattern")
    return (kind, m.safe_regex.regex if kind == "safe_regex" else getattr(m, kind))


def envoy_header(hm: rc.HeaderMatcher) -> tuple[str, str, str]:
    if hm.WhichOneof("header_match_specifier") == "present_match":
        return (hm.name, "present", "")
    return (hm.name, *envoy_string_match(hm.string_match))


def envoy_path(m: rc.RouteMatch) -> tuple[str, str]:
    kind = m.WhichOneof("path_specifier")
    return (kind, m.safe_regex.regex if kind == "safe_regex" else getattr(m, kind))


def istio_header(name: str, sm: dict[str, str]) -> tuple[str, str, str]:
    """Names are matched lower-case; ``{}`` means "present"."""
    kind, value = next(iter(sm.items())) if sm else ("present", "")
    return (name.lower(), "safe_regex" if kind == "regex" else kind, value)


def istio_path(uri: dict[str, str] | None) -> tuple[str, str]:
    """No uri matches every path."""
    kind, value = next(iter((uri or {"prefix": "/"}).items()))
    return ({"exact": "path", "regex": "safe_regex"}.get(kind, kind), value)


def expected_cluster(k: int, port: int | None) -> str:
    """reviews has port 9080 only: another port names no cluster the proxy has."""
    return f"outbound|9080|v{k + 1}|{REVIEWS}" if port in (None, 9080) else "BlackHoleCluster"


def check_route(case: Case, r: rc.Route) -> None:
    assert ns_of(r.route.timeout) == (parse_duration(case.timeout) if case.timeout is not None else 0)
    if case.per_try is not None:
        assert r.route.retry_policy.num_retries.value == 2
        assert ns_of(r.route.retry_policy.per_try_timeout) == parse_duration(case.per_try)
    fault = fault_pb2.HTTPFault()
    if case.fixed_delay is not None:
        assert r.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
        assert ns_of(fault.delay.fixed_delay) == parse_duration(case.fixed_delay)
    else:
        assert "envoy.filters.http.fault" not in r.typed_per_filter_config
    if len(case.weights) == 1:
        assert r.route.cluster == expected_cluster(0, case.ports[0])
    else:
        assert [(c.name, c.weight.value) for c in r.route.weighted_clusters.clusters] == [
            (expected_cluster(k, p), w or 0) for k, (w, p) in enumerate(zip(case.weights, case.ports, strict=True))]
    # Header matchers all have to match: their order is not part of the meaning.
    assert sorted(map(envoy_header, r.match.headers)) == sorted(istio_header(n, sm) for n, sm in case.headers.items())
    assert envoy_path(r.match) == istio_path(case.uri)


# --- the property -----------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_admission_and_translation_agree(case: Case) -> None:
    obj = vs("reviews", {"hosts": ["reviews"], "http": [case.http()]})
    fields = case.fields()
    stored = copy.deepcopy(obj)  # what admission keeps (it may prune in place)
    try:
        validate(INFO, stored)
    except InvalidObject as e:
        causes = [c.field for c in e.causes]
        invalid = [f for f in fields if not f.valid]
        assert invalid, f"refused, but every generated field is valid: {causes}"
        shape_errors = [f for f in invalid if f.shape_error]
        for f in shape_errors or invalid:
            assert any(f.names(c) for c in causes), (f, causes)
        for c in causes:
            assert any(f.names(c) for f in invalid), (c, invalid)
        event("refused")
        return
    event("admitted")
    assert all(f.valid for f in fields), [f for f in fields if not f.valid]
    check_route(case, generated_route(stored))


@pytest.mark.parametrize(("text", "ns"), [(".5s", 500 * MS), ("1.s", 10**9), ("+1s", 10**9), ("1h2m3.5s", 3723500 * MS),
                                          ("100ms", 100 * MS), ("1.5s", 1500 * MS)])
def test_go_duration_forms_reach_envoy_exactly(text: str, ns: int) -> None:
    """The forms the issue names, each on all three fields (the property test may not draw every one)."""
    case = Case(text, text, text, [None], [None], {}, None)
    obj = vs("reviews", {"hosts": ["reviews"], "http": [case.http()]})
    validate(INFO, copy.deepcopy(obj))
    r = generated_route(obj)
    fault = fault_pb2.HTTPFault()
    assert r.typed_per_filter_config["envoy.filters.http.fault"].Unpack(fault)
    assert ns_of(r.route.timeout) == ns_of(r.route.retry_policy.per_try_timeout) == ns_of(fault.delay.fixed_delay) == ns


def test_cause_paths_name_fields() -> None:
    """The matcher the property relies on: exact paths, and paths below a field."""
    f = Field(False, exact=("a.b",), under=("a.c[x]",))
    assert f.names("a.b") and f.names("a.c[x]") and f.names("a.c[x].regex") and f.names("a.c[x][0]")
    assert not f.names("a.b.c") and not f.names("a.c[xy]") and not f.names("a")
