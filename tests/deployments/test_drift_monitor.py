"""One drift window for the whole application, whichever ingress replica answers."""

import time

import httpx
import pytest
from ray import serve

from tests.conftest import APP_NAME, BASELINE_IMAGES, reconfigured
from tests.images import image_bytes

pytestmark = pytest.mark.serve

SMALL_WINDOW = {
    "window_size": 48,
    "min_samples": 16,
    "mean_probability_threshold": 0.03,
    "low_confidence_ratio_threshold": 0.2,
    "ai_generated_ratio_threshold": 0.25,
}


def _wait_for_window(url: str, size: int) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/health").json()
        if body["drift"]["window_size"] >= size:
            return body
        time.sleep(0.5)
    raise AssertionError(f"the drift window never reached {size}: {body}")


def test_drift_fires_on_a_skewed_stream_and_not_on_the_baseline_stream(served_app, client):
    drift_monitor = serve.get_deployment_handle("DriftMonitor", app_name=APP_NAME)
    with reconfigured(served_app, {"DriftMonitor": SMALL_WINDOW}):
        drift_monitor.reset.remote().result()
        probabilities = {}
        for _ in range(2):  # the images the baseline was measured on, twice
            for i in BASELINE_IMAGES:
                body = client.post("/predict", files={"file": ("b.jpg", image_bytes(i))}).json()
                probabilities[i] = body["probability"]
        quiet = _wait_for_window(served_app.url, 2 * len(BASELINE_IMAGES))
        assert quiet["drift_detected"] is False
        assert quiet["drift_score"] < 0.5

        drift_monitor.reset.remote().result()
        skewed = sorted(probabilities, key=probabilities.get)[-4:]  # the most "AI-looking" ones
        for _ in range(6):
            for i in skewed:
                client.post("/predict", files={"file": ("s.jpg", image_bytes(i))})
        fired = _wait_for_window(served_app.url, 24)
        assert fired["drift_detected"] is True
        assert fired["drift_score"] >= 1.0
        assert fired["drift"]["signals"]["mean_probability"]["shift"] > 0.03

        # whichever ingress replica answers, the verdict is the same
        bodies = [httpx.get(f"{served_app.url}/health").json() for _ in range(10)]
        answers = {
            (b["drift_detected"], b["drift_score"], b["drift"]["window_size"]) for b in bodies
        }
        assert len(answers) == 1
        drift_monitor.reset.remote().result()
