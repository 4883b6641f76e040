"""`make observe` against the running application: Prometheus scrapes the app's prediction
counter and loads the project's alert rules; its MLflow tracks runs and serves their artifacts."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families

from observe.config import alert_rules
from tests.images import image_bytes

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


def test_mlflow_tracks_runs_and_serves_their_artifacts(stack, tmp_path):
    # What train.driver logs through the tracking API (tests/train/test_training.py trains
    # against a real server): parameters, a metric per epoch and an artifact, read back here.
    assert httpx.get(f"{stack.mlflow}/health", timeout=10).status_code == 200
    client = MlflowClient(stack.mlflow)
    experiment_id = client.create_experiment("observe-stack-check")
    run = client.create_run(experiment_id, tags={"ray_train_run": "observed"})
    client.log_param(run.info.run_id, "epochs", "2")
    for step, value in ((1, 0.5), (2, 0.75)):
        client.log_metric(run.info.run_id, "val_f1", value, step=step)
    report = tmp_path / "evaluation.json"
    report.write_text('{"accuracy": 0.75}')
    client.log_artifact(run.info.run_id, str(report), artifact_path="eval")
    client.set_terminated(run.info.run_id)

    (stored,) = client.search_runs([experiment_id], "tags.ray_train_run = 'observed'")
    assert stored.info.status == "FINISHED"
    assert stored.data.params["epochs"] == "2"
    history = client.get_metric_history(run.info.run_id, "val_f1")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.75)]
    fetched = client.download_artifacts(run.info.run_id, "eval/evaluation.json", str(tmp_path))
    assert Path(fetched).read_text() == report.read_text()
