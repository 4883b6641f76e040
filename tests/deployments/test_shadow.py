"""Shadow traffic: mirrored fire-and-forget; a slow or failing shadow changes nothing for users."""

import statistics
import time

import httpx
import pytest

from tests.conftest import count_from_now, counts_from_now, reconfigured
from tests.images import image_bytes

pytestmark = pytest.mark.serve

REQUESTS = 16


def _latencies(client: httpx.Client) -> list[float]:
    data = image_bytes(7)
    out = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        response = client.post("/predict", files={"file": ("s.jpg", data)})
        out.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return out


def test_slow_or_failing_shadow_leaves_predict_unchanged_and_mirrors_every_image(
    served_app, client
):
    url = served_app.url
    with reconfigured(served_app, {"Ingress": {"shadow_fraction": 0.0}}):
        _latencies(client)  # warm up
        baseline = statistics.median(_latencies(client))

    # A slow shadow: users do not wait for it, and every mirrored image still reaches it.
    # (a histogram's _sum is estimated by Ray's exporter; counters are exact)
    arrived = count_from_now(url, "ray_ppd_shadow_comparisons_total")
    with reconfigured(served_app, {"Ingress": {"shadow_fraction": 1.0},
                                   "Shadow": {"inject_delay_s": 2.0}}):  # fmt: skip
        slow = statistics.median(_latencies(client))
        # every mirrored image reached the shadow and came back to be compared
        assert arrived.wait_for_growth(REQUESTS) >= REQUESTS
    assert slow < baseline + 0.25, (baseline, slow)  # on the request path it would add >= 2 s

    # A failing shadow: users see nothing of it; every mirrored image counts as a shadow error.
    errors = count_from_now(url, "ray_ppd_shadow_errors_total")
    with reconfigured(served_app, {"Ingress": {"shadow_fraction": 1.0},
                                   "Shadow": {"inject_failure": True}}):  # fmt: skip
        failing = statistics.median(_latencies(client))  # every answer is 200 (in _latencies)
        assert errors.wait_for_growth(REQUESTS) >= REQUESTS
    assert failing < baseline + 0.25, (baseline, failing)


def test_mirrored_images_are_compared_with_the_primary(served_app, client):
    url = served_app.url
    compared, diffs, agreed, disagreed = counts_from_now(
        url,
        ("ray_ppd_shadow_comparisons_total", {}),
        ("ray_ppd_shadow_probability_diff_count", {}),
        ("ray_ppd_shadow_comparisons_total", {"agreement": "agree"}),
        ("ray_ppd_shadow_comparisons_total", {"agreement": "disagree"}),
    )
    with reconfigured(served_app, {"Ingress": {"shadow_fraction": 1.0}}):
        for i in range(6):
            response = client.post("/predict", files={"file": ("m.jpg", image_bytes(i))})
            assert response.status_code == 200, response.text
        assert compared.wait_for_growth(6) == 6
        assert diffs.wait_for_growth(6) == 6
    assert agreed.growth() + disagreed.growth() == 6  # every comparison is agree or disagree
