"""The release gate in k8s/check_candidate.py: quality gate, and no worse than the primary."""

from __future__ import annotations

import pytest

from common.checkpoint import ModelMeta, save_checkpoint
from common.model import build_model
from tests.deploy.manifests import load_script

check = load_script("k8s/check_candidate.py")


# what a candidate records beside accuracy and F1, inside the gate's ECE and robustness floor
CALIBRATED_AND_ROBUST = {"calibration_error": 0.03, "jpeg_q75.accuracy": 0.9}


def _meta(version: str, **metrics: float) -> ModelMeta:
    return ModelMeta(version=version, metrics={**CALIBRATED_AND_ROBUST, **metrics})


def test_a_candidate_above_the_gate_passes_with_no_primary():
    verdict = check.judge(_meta("new", accuracy=0.93, f1=0.92))
    assert verdict == check.Verdict(True, ())


def test_a_candidate_below_the_gate_is_refused():
    verdict = check.judge(_meta("new", accuracy=0.84, f1=0.90))
    assert not verdict.passed
    assert verdict.reasons == ("accuracy 0.8400 < 0.85",)


def test_a_miscalibrated_or_fragile_candidate_is_refused():
    verdict = check.judge(_meta("new", accuracy=0.93, f1=0.92, calibration_error=0.08))
    assert verdict.reasons == ("calibration_error (ECE) 0.0800 > 0.05",)
    verdict = check.judge(_meta("new", accuracy=0.93, f1=0.92, **{"jpeg_q75.accuracy": 0.7}))
    assert verdict.reasons == ("jpeg_q75.accuracy 0.7000 < 0.8",)


def test_a_candidate_much_worse_than_the_primary_is_refused():
    verdict = check.judge(_meta("new", accuracy=0.93, f1=0.90), _meta("old", f1=0.95))
    assert not verdict.passed
    assert "primary old's 0.9500" in verdict.reasons[0]


def test_a_candidate_slightly_worse_than_the_primary_passes():
    assert check.judge(_meta("new", accuracy=0.93, f1=0.945), _meta("old", f1=0.95)).passed


def test_a_candidate_without_metrics_is_refused():
    verdict = check.judge(ModelMeta(version="new"))
    assert verdict.reasons == ("the candidate records no accuracy, f1",)


@pytest.mark.slow
def test_main_reads_the_checkpoints_and_exits_by_verdict(tmp_path, capsys):
    model = build_model()
    good = save_checkpoint(
        model, _meta("good", accuracy=0.95, f1=0.94), tmp_path / "good.safetensors"
    )
    bad = save_checkpoint(model, _meta("bad", accuracy=0.95, f1=0.80), tmp_path / "bad.safetensors")
    assert check.main(["--candidate", str(good)]) == 0
    assert check.main(["--candidate", str(bad), "--primary", str(good)]) == 1
    out = capsys.readouterr()
    assert "FAIL" in out.out and "refused: f1 0.8000" in out.err
