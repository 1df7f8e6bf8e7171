"""The typed spec model: the one duration parser (Go's reading), the decoder's errors, and the generated classes
being up to date with the served schemas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshplane.model import spec
from meshplane.model.config import ConfigSnapshot
from meshplane.model.resources import GroupResource

ROOT = Path(__file__).resolve().parents[3]
NET = "networking.istio.io"


@pytest.mark.parametrize(("text", "ns"), [
    ("0", 0), ("1s", 10**9), ("1.5s", 1_500_000_000), ("100ms", 10**8), (".5s", 5 * 10**8), ("1.s", 10**9),
    ("+1s", 10**9), ("-1s", -(10**9)), ("1h30m", 5400 * 10**9), ("1m0.5s", 60_500_000_000), ("10us", 10_000),
    ("10µs", 10_000), ("3ns", 3), ("0.0000000015s", 1), ("+0", 0),
])
def test_durations_read_as_go_reads_them(text: str, ns: int) -> None:
    assert spec.parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "1", "s", ".s", "1.5", "1 s", "1d", "1s ", "--1s", "+", "1ss", "ms1"])
def test_what_go_refuses_is_not_a_duration(text: str) -> None:
    assert spec.parse_duration(text) is None


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_formatted_durations_read_back_exactly(ns: int) -> None:
    assert spec.parse_duration(spec.format_duration(ns)) == ns


def test_decode_types_durations_enums_defaults() -> None:
    vs = spec.decode_spec(NET, "VirtualService", {
        "hosts": ["reviews"],
        "http": [{"timeout": ".5s", "retries": {"attempts": 2, "perTryTimeout": "250ms"},
                  "route": [{"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}},
                             "weight": 100}]}]})
    assert isinstance(vs, spec.VirtualService)
    route = vs.http[0]
    assert route.timeout == 500_000_000 and route.retries is not None and route.retries.per_try_timeout == 250_000_000
    dest = route.route[0].destination
    assert dest is not None and dest.port is not None and dest.port.number == 9080
    assert vs.gateways == () and route.match == () and route.fault is None  # absent stays visible
    dr = spec.decode_spec(NET, "DestinationRule", {"host": "r", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})
    assert dr.traffic_policy.tls.mode is spec.ClientTLSMode.ISTIO_MUTUAL


@pytest.mark.parametrize(("body", "path", "text"), [
    ({"http": [{"timeout": "5"}]}, "spec.http[0].timeout", "not a valid duration"),
    ({"http": [{"route": [{"weight": "x"}]}]}, "spec.http[0].route[0].weight", "integer"),
    ({"hosts": "reviews"}, "spec.hosts", "array"),
    ({"http": [{"match": [{"headers": {"end-user": {"exact": 1}}}]}]}, "spec.http[0].match[0].headers[end-user].exact",
     "string"),
])
def test_decode_errors_name_the_field(body: dict[str, object], path: str, text: str) -> None:
    with pytest.raises(spec.DecodeError) as err:
        spec.decode_spec(NET, "VirtualService", body)
    assert err.value.path == path and text in err.value.message


def test_an_unknown_enum_value_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(spec.DecodeError, match="supported values are DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL"):
        spec.decode_spec(NET, "DestinationRule", {"trafficPolicy": {"tls": {"mode": "STRICT"}}})


def test_snapshots_decode_once_with_typed_metadata() -> None:
    gr = GroupResource(NET, "virtualservices")
    snap = ConfigSnapshot.from_json(1, {gr: [{"metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"},
                                                          "creationTimestamp": "2026-01-01T00:00:00Z"},
                                              "spec": {"hosts": ["h"]}}]})
    (obj,) = snap.of(gr)
    assert obj.kind == "VirtualService" and obj.key == "ns/a" and obj.meta.labels == {"x": "y"}
    assert obj.order == ("2026-01-01T00:00:00Z", "ns", "a") and obj.spec.hosts == ("h",)


def test_every_served_kind_has_a_generated_class() -> None:
    from meshplane.api.kinds import CORE, default_registry

    served = {(k.group, k.kind) for k in default_registry() if k.group != CORE}
    assert served == set(spec.KINDS)


def test_the_generated_classes_match_the_schemas() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_spec_types.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr


def test_a_proto_field_name_is_the_same_field_as_its_json_name() -> None:
    """protobuf JSON accepts ``jwks_uri`` for ``jwksUri``: one attribute, the JSON name first when both are set."""
    rule = spec.decode_spec("security.istio.io", "RequestAuthentication",
                            {"jwtRules": [{"issuer": "i", "jwks_uri": "https://a/keys"}]}).jwt_rules[0]
    assert rule.jwks_uri == "https://a/keys"
    both = spec.decode_spec("security.istio.io", "RequestAuthentication",
                            {"jwtRules": [{"issuer": "i", "jwks_uri": "https://old", "jwksUri": "https://new"}]})
    assert both.jwt_rules[0].jwks_uri == "https://new"
    route = spec.decode_spec(NET, "VirtualService", {"http": [{"mirror_percent": 5}]}).http[0]
    assert route.mirror_percent == 5


def test_the_named_collections_are_the_served_kinds() -> None:
    """``model.resources`` names each collection once for every layer; it must agree with the API's kind table."""
    from meshplane.api.kinds import default_registry
    from meshplane.model import resources

    served = {k.gr for k in default_registry()}
    named = {v for k, v in vars(resources).items() if k.isupper() and isinstance(v, GroupResource)}
    assert named - {resources.NAMESPACES} == served
