"""One drift window for the whole application, whichever ingress replica answers."""

import time

import httpx
import pytest
import ray
from ray import serve

from tests.conftest import APP_NAME, BASELINE_IMAGES, deploy, deployment, reconfigured
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


def _health_once_drift_answers(url: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/health", timeout=30).json()
        if "window_size" in body["drift"]:
            return body
        time.sleep(1)
    raise AssertionError(f"the drift monitor did not come back: {body}")


def test_the_window_survives_a_drift_monitor_restart(served_app, client):
    drift_monitor = serve.get_deployment_handle("DriftMonitor", app_name=APP_NAME)
    with reconfigured(served_app, {"DriftMonitor": {**SMALL_WINDOW, "save_interval_s": 0.2}}):
        drift_monitor.reset.remote().result()
        for i in range(10):
            client.post("/predict", files={"file": ("w.jpg", image_bytes(i))})
        before = _wait_for_window(served_app.url, 10)
        time.sleep(1.0)  # the window is saved every 0.2 s while it changes
        (name,) = [
            actor["name"]
            for actor in ray.util.list_named_actors(all_namespaces=True)
            if actor["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#DriftMonitor#")
        ]
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)  # Serve replaces it
        after = _health_once_drift_answers(served_app.url)
        assert after["drift"]["window_size"] == before["drift"]["window_size"] >= 10
        assert after["drift_score"] == before["drift_score"]
        assert after["predictions_total"] >= before["predictions_total"]
        drift_monitor.reset.remote().result()


def test_an_ingress_scale_down_flushes_its_pending_drift_reports(served_app, client):
    """Reports wait two minutes in the Ingress; a rollout that replaces both ingress replicas
    (a changed actor option) still delivers every one before the old replicas stop."""
    drift_monitor = serve.get_deployment_handle("DriftMonitor", app_name=APP_NAME)
    with reconfigured(served_app, {"Ingress": {"drift_flush_interval_s": 120.0}}) as config:
        time.sleep(1.0)  # the senders' current 0.5 s round ends; the next one waits 120 s
        _, total = drift_monitor.status.remote().result()
        for i in range(8):
            assert (
                client.post("/predict", files={"file": ("f.jpg", image_bytes(i))}).status_code
                == 200
            )
        time.sleep(1.0)
        assert drift_monitor.status.remote().result()[1] == total  # still pending in the Ingress
        options = deployment(config, "Ingress")["ray_actor_options"]
        options["num_cpus"] = round(options["num_cpus"] - 0.01, 2)  # new replicas, old ones stop
        deploy(config)
        deadline = time.monotonic() + 60
        while drift_monitor.status.remote().result()[1] < total + 8:
            assert time.monotonic() < deadline, "pending drift reports were lost on shutdown"
            time.sleep(0.5)
        assert drift_monitor.status.remote().result()[1] == total + 8
