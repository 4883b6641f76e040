import itertools

import pytest

from common.checkpoint import load_checkpoint
from train.data import list_split
from train.driver import best_checkpoint_path, run_training
from train.evaluate import QualityGate
from train.export import QualityGateFailed, evaluate_and_export
from train.loop import TrainConfig, lr_factor

pytestmark = pytest.mark.train


def test_lr_warms_up_then_decays_by_cosine():
    factors = [lr_factor(s, warmup_steps=4, total_steps=20, min_ratio=0.01) for s in range(21)]
    assert factors[0] == pytest.approx(0.25)
    assert factors[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert factors[-1] == pytest.approx(0.01)


def test_one_epoch_on_two_ray_train_workers_gives_a_loadable_checkpoint(
    ray_instance, tiny_demo, tmp_path
):
    cfg = TrainConfig(
        data_dir=str(tiny_demo), image_size=32, epochs=1, batch_size=8, warmup_epochs=0
    )
    result = run_training(cfg, num_workers=2, storage_path=str(tmp_path / "runs"), name="t1")

    assert result.error is None
    assert result.metrics["epoch"] == 1
    assert result.metrics["train_images"] > 0
    _, meta = load_checkpoint(best_checkpoint_path(result))
    assert meta.image_size == 32
    assert meta.train_config["epochs"] == 1

    # evaluation and export (the gate is opened: one epoch on 24 images proves nothing)
    out = tmp_path / "export" / "model.safetensors"
    report = evaluate_and_export(
        best_checkpoint_path(result) + "/model.safetensors",
        cfg,
        str(out),
        "t1-v",
        "fp",
        QualityGate(min_accuracy=0.0, min_f1=0.0),
    )
    assert report["test"]["count"] == len(list_split(str(tiny_demo), "test"))
    _, exported = load_checkpoint(out)
    assert exported.version == "t1-v"
    assert exported.threshold == report["threshold"]
    assert set(exported.drift_baseline) >= {"mean_probability", "low_confidence_ratio"}
    assert (out.parent / "evaluation.json").is_file()

    # the gate refuses a model below its bar, and nothing is written
    refused = tmp_path / "refused" / "model.safetensors"
    with pytest.raises(QualityGateFailed):
        evaluate_and_export(
            str(out), cfg, str(refused), "t1-r", "fp", QualityGate(min_accuracy=1.01, min_f1=1.01)
        )
    assert not refused.exists()
