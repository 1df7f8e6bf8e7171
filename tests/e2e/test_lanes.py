"""Traffic lanes end to end on the local runtime (``meshplane demo up --scenario lanes``): real Envoys, real
kubectl, the mocka -> mockb -> mockc chain, lanes applied and changed at runtime.

One mesh for the module (starting it dominates the cost); each test applies its lane group and removes it. The
weighted split is checked with a statistical tolerance (each lane's share within 4 binomial standard deviations
of its weight), never with a wall-clock threshold.
"""

from __future__ import annotations

import math
import pathlib
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from test_runtime_support import alive, eventually, get_json, kill_all, meshplane, recorded_processes, status

from tests.unit.lanes.lane_objects import group, lane, permissive_lanes

pytestmark = [pytest.mark.envoy, pytest.mark.kubectl,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")]

Chain = tuple[str, str, str]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("lanes") / "home"
    seen: list[tuple[int, int]] = []
    try:
        printed = meshplane("demo", "up", "--scenario", "lanes", "--home", str(home)).stdout
        seen += recorded_processes(home)
        st = status(home)
        yield {"home": home, "api": st["api"], "ingress": st["ingress"]["cluster-1"], "printed": printed}
        seen += recorded_processes(home)
    finally:
        seen += recorded_processes(home)
        down = meshplane("demo", "down", "--home", str(home), check=False)
        left = alive(seen)
        kill_all(left)
    assert down.returncode == 0, down.stderr
    assert left == [], f"processes left behind: {left}"


def kubectl(api: str, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(["kubectl", "--server", api, *args], input=stdin, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def apply(api: str, objs: list[dict[str, Any]]) -> None:
    clean = []
    for o in objs:
        md = {k: v for k, v in o["metadata"].items() if k != "uid"}
        clean.append({**o, "metadata": md})
    kubectl(api, "apply", "-f", "-", stdin=yaml.safe_dump_all(clean))


def remove_lanes(api: str) -> None:
    kubectl(api, "delete", "asmswimlanes,asmswimlanegroups", "--all", "-n", "istio-system", "--ignore-not-found")
    eventually(lambda: kubectl(api, "get", "virtualservices,destinationrules", "-A", "-l",
                               "meshplane.io/generated-by=lanes", "-o", "name").strip() == "",
               "generated objects removed with their owners")


def chain(url: str, headers: dict[str, str] | None = None) -> Chain:
    doc = get_json(url + "/mock", headers)
    b = (doc.get("calls") or [{}])[0]
    c = (b.get("calls") or [{}])[0]
    assert b.get("status") == 200 and c.get("status") == 200, doc
    assert (doc["service"], b["service"], c["service"]) == ("mocka", "mockb", "mockc"), doc
    assert b["status"] == 200 and c["status"] == 200, doc
    return str(doc["version"]), str(b["version"]), str(c["version"])


def lane_chain(tag: str) -> Chain:
    """Where a request of lane ``tag`` must go in the permissive sample (lane v2 has no mockb)."""
    return (tag, "v1" if tag == "v2" else tag, tag)


def steady(url: str, headers: dict[str, str] | None, want: Chain, n: int = 6) -> bool:
    return all(chain(url, headers) == want for _ in range(n))


def test_permissive_fallback_and_return(mesh: dict[str, Any]) -> None:
    api, url = mesh["api"], mesh["ingress"]
    apply(api, [group(permissive=True), *permissive_lanes()])
    tag = "x-asm-prefer-tag"
    eventually(lambda: steady(url, {tag: "v2"}, ("v2", "v1", "v2")), "lane v2: mockb falls back to v1, then back")
    eventually(lambda: steady(url, {tag: "v3"}, ("v3", "v3", "v3")), "lane v3 end to end (across clusters)")
    assert steady(url, None, ("v1", "v1", "v1"), 10), "no header: the base lane"
    assert steady(url, {tag: "v2"}, ("v2", "v1", "v2"), 10)
    # The request demo up suggests is one the mocks serve, in the lane it names.
    (suggested,) = [ln for ln in mesh["printed"].splitlines() if ln.startswith("then: curl")]
    assert f"-H 'x-asm-prefer-tag: v2' {url}/mock " in suggested, suggested
    assert chain(url, {tag: "v2"}) == ("v2", "v1", "v2")
    # What was generated is visible and owned by the lane resources.
    vs = yaml.safe_load(kubectl(api, "get", "virtualservice", "lanes-mock-mockb", "-n", "default", "-o", "yaml"))
    assert vs["metadata"]["ownerReferences"][0]["kind"] == "ASMSwimLaneGroup"
    assert "lanes-mock-ingress" in kubectl(api, "get", "virtualservices", "-n", "istio-system")
    remove_lanes(api)


def test_weighted_split_with_affinity(mesh: dict[str, Any]) -> None:
    api, url = mesh["api"], mesh["ingress"]
    weights = {"v1": 80, "v2": 10, "v3": 10}
    apply(api, [group(permissive=True), *permissive_lanes((80, 10, 10))])

    def split_active() -> bool:
        return {chain(url)[0] for _ in range(40)} >= {"v1", "v2", "v3"}

    eventually(split_active, "the weighted split in effect")
    n = 300
    chains = [chain(url) for _ in range(n)]
    for c in chains:
        assert c == lane_chain(c[0]), f"affinity broken along the chain: {c}"
    counts = Counter(c[0] for c in chains)
    for tag, w in weights.items():
        p = w / 100
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[tag] - n * p) <= 4 * sd, (counts, tag)
    # A request that names its lane is not split.
    assert steady(url, {"x-asm-prefer-tag": "v3"}, ("v3", "v3", "v3"))
    remove_lanes(api)


def test_strict_mode_stays_in_lane(mesh: dict[str, Any]) -> None:
    api, url = mesh["api"], mesh["ingress"]
    # Strict: every lane has every service (v1 and v3 do), routing by the caller's own lane label.
    apply(api, [group(permissive=False), lane("v1"), lane("v3")])
    eventually(lambda: steady(url, {"x-asm-prefer-tag": "v3"}, ("v3", "v3", "v3")), "strict lane v3 end to end")
    assert steady(url, None, ("v1", "v1", "v1"), 10)
    # The chain stays in v3 even when the applications drop the lane header: mockb routes on its caller's label.
    vs = yaml.safe_load(kubectl(api, "get", "virtualservice", "lanes-mock-mockc", "-n", "default", "-o", "yaml"))
    assert {"sourceLabels": {"version": "v3"}} in [m for r in vs["spec"]["http"] for m in r.get("match", [])]
    remove_lanes(api)


# Where a request of lane v3 may go in each stage of the test below (lane v2 has no mockb and always answers
# (v2, v1, v2); no header is the base lane): a request may also see the stage before the one it started in.
# Anything else is a chain that leaked across lanes.
V3_STAGES: list[set[Chain]] = [
    {("v1", "v1", "v1")},  # the group, v1 and v2 are created: v3 is no lane, the gateway sends it to the base
    {("v3", "v3", "v3")},  # lane v3 is created with every service
    {("v3", "v1", "v3")},  # mockb leaves lane v3
    {("v1", "v1", "v1")},  # lane v3 is deleted
]


def test_lane_changes_under_load_stay_in_lane(mesh: dict[str, Any]) -> None:
    """The group and its lanes are created, changed and deleted under a request loop: no request fails once the
    gateway routes, and no response comes from a chain that crosses lanes (the generated objects arrive in an order
    in which no proxy routes into a lane before the next hop knows it, nor keeps routing into a removed one)."""
    api, url = mesh["api"], mesh["ingress"]
    failures: list[str] = []
    leaks: list[str] = []
    seen: Counter[Chain] = Counter()
    routed = threading.Event()
    stop = threading.Event()
    stage = [0]

    def allowed(tag: str, started: int, v2_routed: bool) -> set[Chain]:
        if tag == "v2":
            # While lane v2 is being created (from nothing) the permissive group sends its requests to the base
            # lane, as it does for v3 before v3 exists; once a request went the v2 way, it must always.
            return {("v2", "v1", "v2")} if v2_routed else {("v2", "v1", "v2"), ("v1", "v1", "v1")}
        if not tag:
            return {("v1", "v1", "v1")}
        return V3_STAGES[started] | V3_STAGES[max(started - 1, 0)]

    def loop() -> None:
        while not stop.is_set():
            for tag in ("v2", "v3", ""):
                started, v2_routed = stage[0], seen[("v2", "v1", "v2")] > 0
                try:
                    got = chain(url, {"x-asm-prefer-tag": tag} if tag else None)
                except Exception as e:
                    if routed.is_set():
                        failures.append(f"{tag}: {e!r}")
                    continue
                routed.set()
                seen[got] += 1
                if got not in allowed(tag, started, v2_routed):
                    leaks.append(f"stage {started}, {tag or 'no header'}: {got}")

    # From nothing: the previous test's objects are gone from the store, but the gateway may still route with them.
    eventually(lambda: http_status(url + "/mock") == 404, "the gateway has no lane routes left")
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        apply(api, [group(permissive=True), lane("v1"), lane("v2", ("mocka", "mockc"))])  # from nothing
        eventually(lambda: seen[("v2", "v1", "v2")] > 3, "lanes v1 and v2")
        stage[0] = 1
        apply(api, [lane("v3")])  # created
        eventually(lambda: seen[("v3", "v3", "v3")] > 3, "lane v3 created under load")
        stage[0] = 2
        apply(api, [lane("v3", ("mocka", "mockc"))])  # changed: mockb leaves lane v3
        eventually(lambda: seen[("v3", "v1", "v3")] > 3, "lane v3 changed under load")
        stage[0] = 3
        before = seen[("v1", "v1", "v1")]
        kubectl(api, "delete", "asmswimlane", "v3", "-n", "istio-system")  # deleted: v3 requests go to base
        eventually(lambda: seen[("v1", "v1", "v1")] > before + 6, "lane v3 deleted under load")
    finally:
        stop.set()
        t.join(timeout=30)
    assert failures == [], failures[:5]
    assert leaks == [], (len(leaks), leaks[:10])
    remove_lanes(api)


ASM_DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "asm"


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=20) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_weighted_ingress_rule(mesh: dict[str, Any]) -> None:
    """ASM's weight-based entry applied as written: only requests the group's one rule matches (/mock with header
    test: yes) enter the lanes, split 50/50 between v1 and v3 with affinity along the chain; the group's status
    says the gateway routes and the base lane is a lane."""
    api, url = mesh["api"], mesh["ingress"]
    kubectl(api, "apply", "-f", str(ASM_DATA / "lanes-weighted.yaml"))
    test = {"test": "yes"}
    eventually(lambda: {chain(url, test) for _ in range(40)} == {("v1", "v1", "v1"), ("v3", "v3", "v3")},
               "the weighted rule splits between v1 and v3")
    assert http_status(url + "/mock") == 404  # the rule does not match: not routed into any lane
    assert steady(url, {**test, "x-asm-prefer-tag": "v3"}, ("v3", "v3", "v3"))

    def group_status() -> dict[str, Any]:
        obj = yaml.safe_load(kubectl(api, "get", "asmswimlanegroup", "mock", "-n", "istio-system", "-o", "yaml"))
        return dict(obj.get("status") or {})

    eventually(lambda: "generated" in group_status(), "the group's status written")
    st = group_status()
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"Reconciled": "True", "IngressRouted": "True", "FallbackTargetFound": "True"}, st
    assert "VirtualService istio-system/lanes-mock-ingress" in st["generated"]
    remove_lanes(api)


def test_full_link_canary_with_traffic_labels(mesh: dict[str, Any]) -> None:
    """ASM's full-link canary sample applied as written (TrafficLabel v1beta1 with $getContext / $localLabel, and
    subsets named $userdefinelabel1): the gateway splits over mocka's versions, and the rest of the chain follows
    the version mocka was reached in (mockb and mockc in that version; v2 has no mockb, so mockb is the nearest
    one, v1, and mockc is v2 again because the label came along through x-request-id, the only header the
    applications propagate). Without the TrafficLabel, mockc after mockb v1 is v1 or v2 at random."""
    api, url = mesh["api"], mesh["ingress"]
    kubectl(api, "apply", "-f", str(ASM_DATA / "full-link-canary.yaml"))

    def consistent(c: Chain) -> bool:
        return c[2] == c[0] and (c[1] == c[0] or (c[0], c[1]) == ("v2", "v1"))

    def following() -> bool:
        chains = [chain(url) for _ in range(30)]
        return all(map(consistent, chains)) and {c[0] for c in chains} == {"v1", "v2", "v3"}

    eventually(following, "the chain follows the version mocka was reached in")
    chains = [chain(url) for _ in range(60)]
    assert all(map(consistent, chains)), [c for c in chains if not consistent(c)]
    kubectl(api, "delete", "-f", str(ASM_DATA / "full-link-canary.yaml"))


def test_dynamic_subset_by_header(mesh: dict[str, Any]) -> None:
    """ASM's dynamic subsets: mocka's endpoints grouped by version with no subset listed, the gateway picking the
    group from x-version (default v1); a version nobody runs is a 503 under NO_FALLBACK."""
    api, url = mesh["api"], mesh["ingress"]
    kubectl(api, "apply", "-f", str(ASM_DATA / "dynamic-subset.yaml"))

    def version(v: str) -> str:
        return str(get_json(url + "/mock", {"x-version": v})["version"])

    eventually(lambda: all(version(v) == v for v in ("v1", "v2", "v3") for _ in range(3)),
               "x-version picks mocka's version")
    assert {str(get_json(url + "/mock")["version"]) for _ in range(10)} == {"v1"}
    assert http_status(url + "/mock", {"x-version": "v9"}) == 503
    kubectl(api, "delete", "-f", str(ASM_DATA / "dynamic-subset.yaml"))


def test_baggage_only_propagation(mesh: dict[str, Any]) -> None:
    """traceHeader baggage: the lane travels only in W3C baggage; every sidecar lifts it back (ASMHeaderPropagation)
    to route, and the routes drop the lifted header again, so the applications never see x-asm-prefer-tag."""
    api, url = mesh["api"], mesh["ingress"]
    apply(api, [group(permissive=True, trace_header="baggage"), *permissive_lanes()])
    bag = {"baggage": "x-asm-prefer-tag=v2,other=1"}
    eventually(lambda: steady(url, bag, ("v2", "v1", "v2")), "lane v2 from baggage alone")
    doc = get_json(url + "/mock", bag)
    b = doc["calls"][0]
    for hop in (doc, b, b["calls"][0]):
        assert "x-asm-prefer-tag" not in hop["headers"], hop["headers"]
        assert "x-asm-prefer-tag=v2" in hop["headers"]["baggage"]
    assert steady(url, {"baggage": "x-asm-prefer-tag=v3"}, ("v3", "v3", "v3"))
    assert steady(url, None, ("v1", "v1", "v1"))
    remove_lanes(api)


def test_traffic_labels(mesh: dict[str, Any]) -> None:
    """Auto-colouring from $getLabel(ASM_TRAFFIC_TAG), and context mapping: a header the application does not
    propagate (``appname``) is restored on its outbound call through the x-request-id it does propagate."""
    api, url = mesh["api"], mesh["ingress"]
    labels = [
        {"apiVersion": "istio.alibabacloud.com/v1", "kind": "TrafficLabel",
         "metadata": {"name": "colour", "namespace": "default"},
         "spec": {"rules": [{"labels": [{"name": "x-colour", "valueFrom": ["$getLabel(ASM_TRAFFIC_TAG)"]}]}]}},
        {"apiVersion": "istio.alibabacloud.com/v1", "kind": "TrafficLabel",
         "metadata": {"name": "appname", "namespace": "default"},
         "spec": {"workloadSelector": {"labels": {"app": "mocka"}}, "rules": [{"labels": [
             {"name": "x-app-name", "valueFrom": ["$getExternalInboundRequestHeader(appname, x-request-id)",
                                                  "$getLabel(app)"]}]}]}},
    ]
    apply(api, [group(permissive=True), *permissive_lanes(), *labels])

    def labelled() -> bool:
        doc = get_json(url + "/mock", {"x-asm-prefer-tag": "v3", "appname": "shop"})
        b = doc["calls"][0]
        c = b["calls"][0]
        return (b["headers"].get("x-colour"), c["headers"].get("x-colour"), b["headers"].get("x-app-name")) == (
            "v3", "v3", "shop") and "appname" not in doc["headers"]

    eventually(labelled, "TrafficLabel headers on outbound requests")
    for _ in range(5):
        doc = get_json(url + "/mock", {"x-asm-prefer-tag": "v2", "appname": "shop"})
        b = doc["calls"][0]
        assert (b["version"], b["headers"]["x-colour"], b["headers"]["x-app-name"]) == ("v1", "v2", "shop")
        assert b["calls"][0]["headers"]["x-colour"] == "v1"  # mockb v1 colours its own calls
    # Without the inbound header, the next source answers.
    doc = get_json(url + "/mock", {"x-asm-prefer-tag": "v3"})
    assert doc["calls"][0]["headers"]["x-app-name"] == "mocka"
    kubectl(api, "delete", "trafficlabels", "colour", "appname", "-n", "default")
    remove_lanes(api)
