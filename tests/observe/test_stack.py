"""`make observe` against the running application: Prometheus scrapes the app's prediction
counter and loads the project's alert rules; MLflow holds what a short training logged."""

from __future__ import annotations

import time

import httpx
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from observe.config import alert_rules
from tests.images import image_bytes
from train import driver
from train.demo_data import DemoConfig, build_demo_dataset

pytestmark = pytest.mark.serve

SCRAPE_DEADLINE_S = 60  # Ray exports every few seconds, Prometheus scrapes every 2 s


def _app_predictions(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "ray_ppd_predictions"
        for sample in family.samples
        if sample.name == "ray_ppd_predictions_total"
    )


def _query(prometheus: str, promql: str) -> list[dict]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["result"]


def test_the_stack_prints_its_urls(stack):
    printed = stack.output.read_text()
    assert f"MLflow      {stack.mlflow}" in printed
    assert f"Prometheus  {stack.prometheus}" in printed
    assert "Grafana" in printed


def test_prometheus_reads_the_apps_prediction_counter(stack, served_app, client):
    expected = _app_predictions(served_app.url) + 3
    for i in range(3):
        answer = client.post("/predict", files={"file": (f"{i}.jpg", image_bytes(i))})
        assert answer.status_code == 200, answer.text

    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    while True:
        result = _query(stack.prometheus, 'sum(ray_ppd_predictions_total{job="ppd-app"})')
        seen = float(result[0]["value"][1]) if result else 0.0
        if seen >= expected:
            break
        assert time.monotonic() < deadline, f"Prometheus has {seen} predictions, not {expected}"
        time.sleep(1)
    (up,) = _query(stack.prometheus, 'up{job="ppd-app"}')
    assert up["value"][1] == "1"
    labels = {r["metric"]["label"] for r in _query(stack.prometheus, "ray_ppd_predictions_total")}
    assert labels <= {"real", "ai_generated"}


def test_prometheus_loads_the_projects_alert_rules(stack):
    answer = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10)
    assert answer.status_code == 200
    loaded = {
        g["name"]: sorted(r["name"] for r in g["rules"]) for g in answer.json()["data"]["groups"]
    }
    expected = {
        g["name"]: sorted(r.get("alert") or r["record"] for r in g["rules"])
        for g in alert_rules()["groups"]
    }
    assert loaded == expected
    assert "PPDHighErrorRate" in loaded["ppd-serving"]


@pytest.mark.train
def test_mlflow_holds_the_runs_a_short_training_logged(stack, ray_instance, tmp_path, monkeypatch):
    assert httpx.get(f"{stack.mlflow}/health", timeout=10).status_code == 200
    data = tmp_path / "demo"
    build_demo_dataset(data, DemoConfig(seed=3, size=32, train_per_class=12, test_per_class=6,
                                        generator_steps=5))  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow)
    code = driver.main([
        "--data-dir", str(data), "--image-size", "32", "--epochs", "1", "--batch-size", "8",
        "--warmup-epochs", "0", "--num-workers", "1", "--storage-path", str(tmp_path / "runs"),
        "--name", "observed", "--no-export", "--pretrained", "none",
    ])  # fmt: skip
    assert code == 0

    client = MlflowClient(stack.mlflow)
    experiment = client.get_experiment_by_name("product-photo-detector")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.ray_train_run = 'observed'"
    )
    assert run.info.status == "FINISHED"
    assert run.data.params["epochs"] == "1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_f1")] == [1]
