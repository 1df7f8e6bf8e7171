"""Istio's Bookinfo traffic-management tasks on the demo, each file applied unchanged with the real kubectl, each
checked for the behaviour Istio's documentation describes (tests/data/bookinfo holds the files):

- fault injection: ``virtual-service-ratings-test-abort.yaml`` (jason's ratings calls answer 500) and
  ``virtual-service-ratings-test-delay.yaml`` (jason's ratings calls are delayed 7 s, so productpage's 3 s timeout
  and one retry to reviews give up after ~6 s: "reviews unavailable"), ``fault-injection-details-v1.yaml``
  (every details call answers 555);
- traffic shifting: ``virtual-service-reviews-80-20.yaml`` (about 80 % v1, 20 % v2);
- ``virtual-service-reviews-jason-v2-v3.yaml`` (jason to v2, everyone else to v3);
- ``destination-rule-all-mtls.yaml`` (the same subsets with ISTIO_MUTUAL: traffic keeps flowing).

The request-routing task (all-v1, test-v2) is in test_demo.py. One demo serves every step; steps follow Istio's
task order and leave the state the next task expects, as a user going through the tasks would.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_demo import demo, kubectl_apply, reviews_versions  # noqa: F401  (demo is a fixture)
from test_runtime_support import call_of, eventually, get_json

pytestmark = [pytest.mark.envoy, pytest.mark.kubectl,
              pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")]

JASON = {"end-user": "jason"}


def page(url: str, headers: dict[str, str] | None = None) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    doc = get_json(url + "/productpage", headers)
    return doc, time.monotonic() - t0


def test_bookinfo_tasks_behave_as_istio_documents(demo: tuple[Path, dict[str, Any], str]) -> None:  # noqa: F811
    _, st, _printed = demo
    api, url = st["api"], st["ingress"]["cluster-1"]

    # Request routing first (the state Istio's fault-injection task starts from).
    kubectl_apply(api, "destination-rule-all.yaml")
    kubectl_apply(api, "virtual-service-all-v1.yaml")
    kubectl_apply(api, "virtual-service-reviews-test-v2.yaml")
    eventually(lambda: set(reviews_versions(url, 6, JASON)) == {"v2"}, "jason on reviews v2")
    eventually(lambda: set(reviews_versions(url, 6)) == {"v1"}, "everyone else on reviews v1")

    # Fault injection, abort: jason's ratings calls answer 500; reviews v2 degrades and still answers.
    kubectl_apply(api, "virtual-service-ratings-test-abort.yaml")

    def ratings_aborted() -> bool:
        doc, _ = page(url, JASON)
        reviews = call_of(doc, "reviews")
        return reviews["version"] == "v2" and call_of(reviews, "ratings")["status"] == 500

    eventually(ratings_aborted, "jason's ratings calls aborted with 500")
    other, _ = page(url)
    assert call_of(other, "reviews")["version"] == "v1" and call_of(other, "reviews")["calls"] == []

    # Fault injection, delay: 7 s on jason's ratings calls. reviews v2 waits for ratings (its timeout is 10 s), so
    # productpage's two 3 s attempts on reviews time out: the reviews part is unavailable after ~6 s.
    kubectl_apply(api, "virtual-service-ratings-test-delay.yaml")

    seen: list[tuple[dict[str, Any], float]] = []

    def reviews_failed() -> bool:
        seen.append(page(url, JASON))
        return call_of(seen[-1][0], "reviews")["status"] != 200

    eventually(reviews_failed, "jason's reviews to fail under the ratings delay", deadline_s=60)
    doc, took = seen[-1]
    reviews = call_of(doc, "reviews")
    assert reviews["status"] == 504 and "within 3 s" in reviews["error"], reviews
    assert 5.5 < took < 9.0, took  # two attempts of 3 s, nothing waited for the whole 7 s delay
    assert call_of(doc, "details")["status"] == 200
    other, took = page(url)
    assert call_of(other, "reviews")["status"] == 200 and took < 3.0, took

    # Traffic shifting: back to all-v1, then 80 % v1 / 20 % v2.
    kubectl_apply(api, "virtual-service-all-v1.yaml")
    eventually(lambda: set(reviews_versions(url, 6, JASON)) == {"v1"}, "jason back on v1")
    kubectl_apply(api, "virtual-service-reviews-80-20.yaml")
    eventually(lambda: "v2" in reviews_versions(url, 20), "some reviews traffic on v2")
    counts = Counter(reviews_versions(url, 200))
    assert set(counts) == {"v1", "v2"}, counts
    assert 0.65 <= counts["v1"] / 200 <= 0.95, counts  # 80 % expected; ±5.3 standard deviations of 200 samples

    # jason to v2, everyone else to v3.
    kubectl_apply(api, "virtual-service-reviews-jason-v2-v3.yaml")
    eventually(lambda: set(reviews_versions(url, 8)) == {"v3"}, "everyone else on reviews v3")
    assert set(reviews_versions(url, 8, JASON)) == {"v2"}

    # Every details call answers 555 (the file's own VirtualService and DestinationRule for details).
    kubectl_apply(api, "fault-injection-details-v1.yaml")

    def details_aborted() -> bool:
        doc, _ = page(url)
        return call_of(doc, "details")["status"] == 555 and call_of(doc, "reviews")["status"] == 200

    eventually(details_aborted, "details calls aborted with 555")

    # ISTIO_MUTUAL destination rules: traffic keeps flowing, through both ingresses.
    kubectl_apply(api, "virtual-service-all-v1.yaml")
    kubectl_apply(api, "destination-rule-all-mtls.yaml")
    for ingress in st["ingress"].values():
        eventually(lambda u=ingress: call_of(page(u)[0], "details")["status"] == 200, "details answering again")
        for _ in range(10):
            doc, _ = page(ingress)
            assert call_of(doc, "details")["status"] == 200
            assert call_of(doc, "reviews")["status"] == 200 and call_of(doc, "reviews")["version"] == "v1"
