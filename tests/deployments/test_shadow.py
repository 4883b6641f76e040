"""Shadow traffic: mirrored fire-and-forget; a slow or failing shadow changes nothing for users."""

import statistics
import time

import httpx
import pytest

from tests.conftest import reconfigured
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


def test_slow_or_failing_shadow_leaves_predict_unchanged(served_app, client):
    with reconfigured(served_app, {"Ingress": {"shadow_fraction": 0.0}}):
        _latencies(client)  # warm up
        baseline = statistics.median(_latencies(client))
    for fault in ({"inject_delay_s": 2.0}, {"inject_failure": True}):
        with reconfigured(served_app, {"Ingress": {"shadow_fraction": 1.0}, "Shadow": fault}):
            mirrored = statistics.median(_latencies(client))
        # a shadow on the request path would add >= 2 s (delay) or fail requests (failure)
        assert mirrored < baseline + 0.25, (fault, baseline, mirrored)


def test_shadow_outcomes_become_metrics(served_app, client):
    with reconfigured(served_app, {"Ingress": {"shadow_fraction": 1.0}}):
        for i in range(6):
            assert (
                client.post("/predict", files={"file": ("m.jpg", image_bytes(i))}).status_code
                == 200
            )
        deadline = time.monotonic() + 40
        text = ""
        while time.monotonic() < deadline:
            text = httpx.get(f"{served_app.url}/metrics", timeout=30).text
            if (
                "ray_ppd_shadow_comparisons_total" in text
                and "ray_ppd_shadow_probability_diff" in text
            ):
                break
            time.sleep(2)
    assert "ray_ppd_shadow_comparisons_total" in text
    assert 'agreement="' in text
    assert "ray_ppd_shadow_probability_diff_bucket" in text
