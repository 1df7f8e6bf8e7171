"""The web console in a real browser: headless Chromium (through chromedriver and Selenium) loads the console of a
running demo while requests go through cluster-1's ingress, and the topology graph shows the productpage ->
reviews and reviews -> ratings edges with a non-zero rate, learned from the sidecars' own metrics.

Screenshots are kept as test artifacts (in the test's tmp dir and in ``test-artifacts/`` at the repository root).
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_demo import demo as demo  # the demo fixture: `meshplane demo up`, and every process gone afterwards
from test_runtime_support import eventually, get_json

pytestmark = [pytest.mark.envoy]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (CI installs them: .ci/run)")


@pytest.fixture
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (a dev dependency) is not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1150", "--no-proxy-server", "--disable-extensions"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()  # stops chromedriver and the browser it started


TRACE_ALL = {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
             "metadata": {"name": "mesh-default", "namespace": "istio-system"},
             "spec": {"tracing": [{"randomSamplingPercentage": 100.0}]}}


def post_json(url: str, body: dict[str, Any]) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as r:
        assert r.status == 201


def keep(driver: Any, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    return shot


def graph_edges(driver: Any) -> list[dict[str, Any]]:
    """The edges cytoscape holds right now, with their data (rate, errors, p99, mTLS)."""
    edges: list[dict[str, Any]] | None = driver.execute_script(
        "const c = window.meshplaneConsole && window.meshplaneConsole.cy;"
        "return c ? c.edges().map((e) => e.data()) : null;")
    return edges or []


def edge(edges: list[dict[str, Any]], source: str, target_prefix: str) -> dict[str, Any] | None:
    for e in edges:
        if e["source"] == f"cluster-1/default/{source}" and e["target"].startswith(
                f"cluster-1/default/{target_prefix}"):
            return e
    return None


@needs_browser
def test_console_shows_live_topology(demo: tuple[Path, dict[str, Any], str], browser: Any, tmp_path: Path) -> None:
    _, st, _printed = demo
    assert st["console"] == st["api"] + "/console/"
    # Istio's tracing task: every request traced, spans to the control plane's collector (the Traces page).
    post_json(st["api"] + "/apis/telemetry.istio.io/v1/namespaces/istio-system/telemetries", TRACE_ALL)
    ingress = st["ingress"]["cluster-1"] + "/productpage"
    browser.get(st["console"])
    assert browser.title == "meshplane console"
    graph_loaded = browser.execute_script("return typeof window.cytoscape === 'function';")
    assert graph_loaded, "the graph library did not load (scripts/setup installs it)"

    sent = 0

    def edges_appear() -> bool:
        nonlocal sent
        if sent < 600:  # bounded traffic: a few requests per look
            for _ in range(6):
                try:
                    get_json(ingress)
                    sent += 1
                except (OSError, urllib.error.URLError):
                    pass
        edges = graph_edges(browser)
        pr = edge(edges, "productpage-v1", "reviews-v")
        rr = next((edge(edges, f"reviews-v{v}", "ratings-v1") for v in (2, 3) if edge(edges, f"reviews-v{v}",
                                                                                          "ratings-v1")), None)
        return bool(pr and rr and pr["rps"] > 0 and rr["rps"] > 0)

    eventually(edges_appear, "the console's graph shows productpage -> reviews -> ratings with traffic", 150.0)
    edges = graph_edges(browser)
    pr = edge(edges, "productpage-v1", "reviews-v")
    assert pr is not None
    # What each edge shows: mTLS (the demo's sidecars talk mutual TLS), no errors, and the label drawn.
    assert pr["mtls"] == "mutual_tls", pr
    assert pr["errorRate"] == 0, pr
    assert pr["services"] == ["reviews.default.svc.cluster.local"], pr  # the host productpage asked for
    assert "rps" in pr["label"] and pr["label"].startswith("mTLS · "), pr
    locks = browser.execute_script("return [...document.querySelectorAll('#edges img.lock')].filter("
                                   "(i) => i.complete && i.naturalWidth > 0).length;")
    assert locks >= 2, "the edges table shows a lock for each mutual-TLS edge"
    # Nodes are grouped by cluster and zone (compound nodes).
    parent = browser.execute_script(
        "return window.meshplaneConsole.cy.getElementById('cluster-1/default/productpage-v1').parent().id();")
    assert parent == "zone:cluster-1/zone-a"
    # The edges table under the graph shows the same edge.
    rows = browser.execute_script("return [...document.querySelectorAll('#edges tbody tr')].map((r) => r.innerText);")
    assert any(r.startswith("productpage-v1.default (cluster-1)\treviews-v") for r in rows), rows
    shot = keep(browser, tmp_path, "console-topology.png")
    assert shot.stat().st_size > 10_000

    # The proxies page: every instance's proxy and its xDS sync state, from /management/v1/proxies.
    browser.get(st["console"] + "#workloads")

    def proxies_listed() -> bool:
        text = str(browser.execute_script("return document.getElementById('page-workloads').innerText;"))
        return "Proxies (xDS sync state)" in text and "reviews-v2" in text and "SYNCED" in text

    eventually(proxies_listed, "the workloads page lists the proxies and their sync state", 30.0)
    keep(browser, tmp_path, "console-workloads.png")

    # The other read-only pages load what they show from the APIs without an error.
    for page, heading in (("clusters", "MemberClusters"), ("lanes", "ASMSwimLaneGroups"),
                          ("security", "AuthorizationPolicies"), ("audit", "Configuration changes")):
        browser.get(st["console"] + "#" + page)

        def shown(page: str = page, heading: str = heading) -> bool:
            text = str(browser.execute_script(f"return document.getElementById('page-{page}').innerText;"))
            return heading in text

        eventually(shown, f"the {page} page shows {heading}", 30.0)
        errors = browser.execute_script(f"return [...document.querySelectorAll('#page-{page} .warning')]"
                                        ".map((w) => w.innerText);")
        assert errors == [], (page, errors)
    # The Traces page: a request's trace as a tree, from the ingress gateway down to ratings.
    browser.get(st["console"] + "#traces")

    def full_trace() -> bool:
        get_json(ingress)
        return bool(browser.execute_script(
            "const r = [...document.querySelectorAll('#page-traces tr[data-trace]')].find("
            "  (tr) => tr.innerText.includes('istio-ingressgateway') && tr.innerText.includes('ratings-v1'));"
            "if (r) r.click(); return !!r;"))

    eventually(full_trace, "the traces page lists a trace through ingress, productpage, reviews and ratings", 60.0)

    def tree() -> list[str]:
        return list(browser.execute_script(
            "return [...document.querySelectorAll('#trace-tree tbody tr')].map((r) => r.cells[0].innerText);"))

    eventually(lambda: any("ratings-v1" in r for r in tree()), "the picked trace is drawn as a tree", 30.0)
    services = [r.replace("└", "").strip() for r in tree()]
    assert services[0] == "istio-ingressgateway", services  # the root first, children under it
    assert {"productpage-v1", "ratings-v1"} <= set(services), services
    assert any(s.startswith("reviews-v") for s in services), services
    keep(browser, tmp_path, "console-trace.png")

    browser.get(st["console"] + "#audit")
    eventually(lambda: "certificate.issued" in str(browser.execute_script(
        "return document.getElementById('page-audit').innerText;")), "the audit page shows the certificates", 30.0)
    text = str(browser.execute_script("return document.getElementById('page-audit').innerText;"))
    assert "certificate.issued" in text  # the demo's workloads got their certificates
    keep(browser, tmp_path, "console-audit.png")

