"""GET /metrics: the application's own series, from every replica, in Prometheus text."""

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_KEYS
from tests.images import image_bytes

pytestmark = pytest.mark.serve

EXPECTED_FAMILIES = {
    "ray_ppd_http_requests", "ray_ppd_http_request_latency_ms", "ray_ppd_stage_latency_ms",
    "ray_ppd_predictions", "ray_ppd_probability", "ray_ppd_image_bytes", "ray_ppd_image_pixels",
    "ray_ppd_batch_files", "ray_ppd_validation_errors", "ray_ppd_auth_failures",
    "ray_ppd_inflight_requests", "ray_ppd_batch_size", "ray_ppd_model_info",
    "ray_ppd_model_loaded", "ray_ppd_drift_score", "ray_ppd_drift_signal", "ray_ppd_drift_detected",
    "ray_ppd_drift_window_size",
}  # fmt: skip


def _families(url: str) -> dict:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {family.name: family for family in text_string_to_metric_families(text)}, text


def _label_values(families: dict):
    def values(family: str, label: str) -> set[str]:
        samples = families[family].samples if family in families else []
        return {s.labels[label] for s in samples if label in s.labels}

    return values


def test_application_metrics_cover_every_stage(served_app, client):
    # traffic that touches every family: predictions, a batch, an explanation, errors, a 401
    for i in range(3):
        client.post("/predict", files={"file": ("m.jpg", image_bytes(i))})
    client.post("/predict/batch", files=[("files", ("a.jpg", image_bytes(0))),
                                         ("files", ("b.txt", b"text"))])  # fmt: skip
    client.post("/predict/explain", files={"file": ("e.jpg", image_bytes(1))})
    client.post("/predict", files={"file": ("bad.jpg", b"")})
    httpx.post(f"{served_app.url}/predict", files={"file": ("x.jpg", image_bytes(0))})

    # each replica exports every few seconds: wait until every replica's series are there
    deadline = time.monotonic() + 60
    while True:
        families, text = _families(served_app.url)
        labels = _label_values(families)
        complete = set(families) >= EXPECTED_FAMILIES and (
            labels("ray_ppd_http_requests", "route")
            >= {"/predict", "/predict/batch", "/predict/explain"}
            and labels("ray_ppd_http_requests", "status") >= {"200", "400", "401"}
            and labels("ray_ppd_stage_latency_ms", "stage")
            >= {"decode", "queue", "model", "explain"}
        )
        if complete or time.monotonic() > deadline:
            break
        time.sleep(2)

    assert set(families) >= EXPECTED_FAMILIES, sorted(EXPECTED_FAMILIES - set(families))
    assert not [name for name in families if not name.startswith("ray_ppd_")]
    series = sum(len(family.samples) for family in families.values())
    assert series >= 20
    routes = labels("ray_ppd_http_requests", "route")
    assert {"/predict", "/predict/batch", "/predict/explain"} <= routes
    assert {"200", "400", "401"} <= labels("ray_ppd_http_requests", "status")
    assert {"decode", "queue", "model", "explain"} <= labels("ray_ppd_stage_latency_ms", "stage")
    versions = {s.labels["version"] for s in families["ray_ppd_model_info"].samples if s.value == 1}
    assert "test-primary" in versions
    assert not any(key in text for key in TEST_KEYS)  # keys never reach metrics


def test_ray_own_serve_metrics_stay_off_the_application_endpoint(served_app):
    families, _ = _families(served_app.url)
    assert not any(name.startswith("ray_serve_") for name in families)


def test_the_open_route_shows_no_runtime_labels(served_app, client):
    """Ray's session name, worker ids and node address stay off /metrics; the application's
    own labels (deployment, replica, route, ...) stay on."""
    client.post("/predict", files={"file": ("m.jpg", image_bytes(0))})
    deadline = time.monotonic() + 60
    while True:
        families, text = _families(served_app.url)
        if "ray_ppd_http_requests" in families or time.monotonic() > deadline:
            break
        time.sleep(2)
    labels = {name for family in families.values() for s in family.samples for name in s.labels}
    assert {"application", "deployment", "replica", "route", "status"} <= labels
    assert not labels & {"SessionName", "WorkerId", "NodeAddress", "JobId", "Version", "Component"}
    assert all(name.islower() for name in labels)
    assert "session_" not in text
