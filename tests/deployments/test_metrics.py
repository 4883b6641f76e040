"""GET /metrics: the application's own series, from every replica, in Prometheus text."""

import re
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, TEST_KEYS, reconfigured
from tests.images import image_bytes

pytestmark = pytest.mark.serve

MONITORING = ROOT / "k8s" / "monitoring"
# Every family the Grafana dashboard and the alert rules read (the histograms'
# _bucket/_sum/_count and the counters' _total are one family each).
USED_FAMILIES = {
    re.sub(r"_(total|bucket|sum|count)$", "", name)
    for path in (MONITORING / "grafana-dashboard.json", MONITORING / "prometheusrule.yaml")
    for name in re.findall(r"ray_ppd_[a-z_]+", path.read_text())
}
# Present from start-up, before any traffic: the counters' and gauges' zero series.
ZERO_SERIES = {
    ("ray_ppd_dependency_errors_total", "dependency", "rate_limiter"),
    ("ray_ppd_dependency_errors_total", "dependency", "drift_monitor"),
    ("ray_ppd_rate_limited_total", "limit", "auth_failures"),
    ("ray_ppd_overload_rejections_total", "route", "/predict/compare"),
    ("ray_ppd_model_swaps_total", "role", "shadow"),
    ("ray_ppd_model_load_failures_total", "role", "primary"),
    ("ray_ppd_drift_signal", "signal", "ai_generated_ratio"),
}
EXPECTED_FAMILIES = USED_FAMILIES | {
    "ray_ppd_stage_latency_ms", "ray_ppd_image_bytes", "ray_ppd_image_pixels",
    "ray_ppd_batch_files", "ray_ppd_validation_errors", "ray_ppd_auth_failures",
    "ray_ppd_model_info", "ray_ppd_dependency_errors",
}  # fmt: skip


def _families(url: str) -> dict:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {family.name: family for family in text_string_to_metric_families(text)}, text


def _label_values(families: dict):
    def values(family: str, label: str) -> set[str]:
        samples = families[family].samples if family in families else []
        return {s.labels[label] for s in samples if label in s.labels}

    return values


def test_counters_and_gauges_have_their_zero_series_before_any_traffic(served_app):
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(f"{served_app.url}/metrics", timeout=30).text
        present = {
            (s.name, label, s.labels.get(label))
            for family in text_string_to_metric_families(text)
            for s in family.samples
            for label in s.labels
        }
        if present >= ZERO_SERIES or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert present >= ZERO_SERIES, sorted(ZERO_SERIES - present)


def test_application_metrics_cover_every_family_the_dashboard_and_alerts_use(served_app, client):
    # traffic that touches every family: predictions (some mirrored to the shadow), a batch,
    # an explanation, errors, a 401
    with reconfigured(served_app, {"Ingress": {"shadow_fraction": 1.0}}):
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
