import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from common.checkpoint import load_checkpoint
from tests.conftest import ROOT

pytestmark = [pytest.mark.train, pytest.mark.slow]

STAGES = ("download", "validate", "train", "evaluate", "export")
TINY = {  # the repository's params.yaml, shrunk to seconds
    "demo": {"seed": 3, "size": 32, "train_per_class": 12, "test_per_class": 6,
             "generator_steps": 5},
    "train": {"image_size": 32, "epochs": 1, "warmup_epochs": 0, "batch_size": 8,
              "num_workers": 1},
    "gate": {"min_accuracy": 0.0, "min_f1": 0.0, "max_ece": 1.0, "min_robust_accuracy": 0.0},
}  # fmt: skip


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    """A copy of the pipeline (dvc.yaml, the code it runs, tiny params) in a fresh DVC repo."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo)
    for package in ("common", "train"):
        shutil.copytree(
            ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    _dvc(repo, "init", "--no-scm")
    _dvc(repo, "config", "core.analytics", "false")
    return repo


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(repo),
        # `dvc repro` on a workstation: the train stage starts a Ray instance of its own (and
        # `make test` runs this beside the session's instance, on the CPU that one leaves idle)
        "RAY_ADDRESS": "local",
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the default local store, inside the repo
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo, env=env, capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_dvc_repro_runs_every_stage_and_then_nothing(dvc_repo):
    first = _dvc(dvc_repo, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first.stdout

    validation = json.loads((dvc_repo / "artifacts/dvc/validation.json").read_text())
    assert validation["passed"]
    evaluation = json.loads((dvc_repo / "artifacts/dvc/eval/evaluation.json").read_text())
    assert evaluation["test"]["count"] == 12
    run_info = json.loads((dvc_repo / "artifacts/dvc/train/run.json").read_text())
    _, meta = load_checkpoint(dvc_repo / "artifacts/dvc/model.safetensors")
    assert meta.version == run_info["version"]
    assert meta.threshold == evaluation["threshold"]
    assert meta.data_fingerprint == run_info["data_fingerprint"] != ""
    history = (dvc_repo / "artifacts/dvc/train/history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss") and len(history) == 2
    client = MlflowClient(f"sqlite:///{dvc_repo / 'mlflow.db'}")
    (version,) = client.search_model_versions("name = 'product-photo-detector'")
    assert version.run_id == run_info["mlflow_run_id"]

    second = _dvc(dvc_repo, "repro")
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date." in second.stdout
