"""MLflow tracking: one MLflow run per Ray Train run, its params, metrics, artefacts and model.

The store is `MLFLOW_TRACKING_URI` when set (an `mlflow server`), else a local one in the working
directory (the repository root): `sqlite:///mlflow.db` with artefacts under `mlruns/`. A run is
reached from any process (driver, Ray Train worker, Tune trial, DVC stage) by its `RunRef`, and
an MLflow run is found again by its Ray Train run name, so a resumed Ray Train run (same name)
keeps logging to the same MLflow run. The serving checkpoint is registered as an MLflow 3
LoggedModel holding that one safetensors file; `models:/name/version` then downloads it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from common.checkpoint import CHECKPOINT_FILENAME, read_checkpoint_bytes

__all__ = [
    "EXPERIMENT",
    "REGISTERED_MODEL",
    "RunRef",
    "finish_run",
    "log_artifacts",
    "log_epoch_metrics",
    "log_evaluation",
    "log_metrics",
    "metric_history",
    "register_checkpoint",
    "run_from_info",
    "set_tags",
    "start_run",
    "tracking_uri",
]

EXPERIMENT = "product-photo-detector"
REGISTERED_MODEL = "product-photo-detector"
LOCAL_DB = "mlflow.db"  # the default store, in the working directory
LOCAL_ARTIFACTS = "mlruns"
RUN_NAME_TAG = "ray_train_run"  # the Ray Train run name this MLflow run records


@dataclass(frozen=True)
class RunRef:
    """Where one MLflow run lives: enough to log to it from any process."""

    tracking_uri: str
    run_id: str

    def client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    @classmethod
    def from_dict(cls, raw: dict[str, str]) -> RunRef:
        return cls(tracking_uri=raw["tracking_uri"], run_id=raw["run_id"])


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI`, or the local sqlite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / LOCAL_DB}"


def start_run(
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
    parent: RunRef | None = None,
    experiment: str = EXPERIMENT,
) -> RunRef:
    """The MLflow run recording Ray Train run `run_name`: found again if it exists, else created.

    `params` (the resolved config) are logged once; a child run of `parent` for Tune trials.
    """
    uri = tracking_uri() if parent is None else parent.tracking_uri
    client = MlflowClient(uri)
    experiment_id = _experiment_id(client, experiment, uri)
    existing = client.search_runs(
        [experiment_id], filter_string=f"tags.{RUN_NAME_TAG} = '{run_name}'", max_results=1
    )
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return RunRef(uri, run_id)
    all_tags = {RUN_NAME_TAG: run_name, **(tags or {})}
    if parent is not None:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent.run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
    client.log_batch(
        run.info.run_id, params=[Param(k, _param_value(v)) for k, v in sorted(params.items())]
    )
    return RunRef(uri, run.info.run_id)


def log_epoch_metrics(run: RunRef, metrics: dict[str, Any], epoch: int) -> None:
    """One epoch's numeric metrics, at step `epoch` (called from Ray Train's rank 0)."""
    log_metrics(run, metrics, step=epoch)


def log_metrics(run: RunRef, metrics: dict[str, Any], step: int = 0, prefix: str = "") -> None:
    """The numeric entries of `metrics` (nested dicts flattened with dots); others are skipped."""
    now = int(time.time() * 1000)
    entries = [
        Metric(prefix + key, float(value), now, step)
        for key, value in _flatten(metrics)
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    if entries:
        run.client().log_batch(run.run_id, metrics=entries)


def log_artifacts(run: RunRef, paths: Iterable[Path | str], artifact_path: str) -> None:
    """Upload local files into the run's `artifact_path` folder."""
    client = run.client()
    for path in paths:
        client.log_artifact(run.run_id, str(path), artifact_path)


def log_evaluation(run: RunRef, report: dict[str, Any], files: Iterable[Path | str]) -> None:
    """Held-out figures as metrics (`test.f1`, `validation.accuracy`, `test.jpeg_q75.accuracy`,
    `calibration.temperature`, `calibration_ece.test_after`, ...), files as artefacts."""
    figures = {k: report[k] for k in ("threshold", "test", "validation", "drift_baseline")}
    figures["test"] = {**report["test"], **report.get("robustness", {})}
    figures["calibration"] = report.get("calibration", {})
    figures["calibration_ece"] = report.get("calibration_ece", {})
    log_metrics(run, figures)
    if "gate_passed" in report:
        set_tags(run, {"quality_gate": "passed" if report["gate_passed"] else "failed"})
    log_artifacts(run, files, "evaluation")


def metric_history(run: RunRef, keys: Iterable[str]) -> list[dict[str, float]]:
    """Per-step rows {"epoch": step, key: value, ...} of the run's logged metrics."""
    client = run.client()
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        for m in client.get_metric_history(run.run_id, key):
            rows.setdefault(m.step, {"epoch": m.step})[key] = m.value
    return [rows[step] for step in sorted(rows)]


def run_from_info(path: Path | str) -> RunRef:
    """The run named in a run.json written by `train.driver --checkpoint-out`."""
    info = json.loads(Path(path).read_text())
    return RunRef(tracking_uri(), info["mlflow_run_id"])


def set_tags(run: RunRef, tags: dict[str, Any]) -> None:
    run.client().log_batch(run.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def finish_run(run: RunRef, status: str = "FINISHED") -> None:
    run.client().set_terminated(run.run_id, status=status)


def register_checkpoint(
    run: RunRef, checkpoint_path: Path | str, name: str = REGISTERED_MODEL, version: str = ""
) -> str:
    """Log the serving checkpoint as a LoggedModel of `run`, register it; returns `models:/…`.

    The LoggedModel holds only the safetensors file, so `common.checkpoint.load_checkpoint`
    finds exactly one `.safetensors` file in what `models:/name/version` downloads.
    """
    client = run.client()
    experiment_id = client.get_run(run.run_id).info.experiment_id
    if "://" in str(checkpoint_path):  # gs://: MLflow uploads local files
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / CHECKPOINT_FILENAME
            local.write_bytes(read_checkpoint_bytes(str(checkpoint_path)))
            return register_checkpoint(run, local, name, version)
    model = client.create_logged_model(
        experiment_id,
        name=name,
        source_run_id=run.run_id,
        tags={"checkpoint_version": version},
        model_type="safetensors",
    )
    client.log_model_artifact(model.model_id, str(checkpoint_path))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    registered = client.create_model_version(
        name,
        source=f"models:/{model.model_id}",
        run_id=run.run_id,
        model_id=model.model_id,
        tags={"checkpoint_version": version},
    )
    return f"models:/{name}/{registered.version}"


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # the local store keeps artefacts beside its database, not under the caller's directory
        location = (Path(uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a concurrent trial
        return client.get_experiment_by_name(name).experiment_id


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list | tuple) else str(value)


def _flatten(metrics: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
