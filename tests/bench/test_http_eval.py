"""`python -m bench.http_eval` against the session's served app: the robustness table through
POST /predict/batch equals the bare `common/` pipeline's on the same degraded bytes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bench import http_eval
from common.calibration import calibrated_probabilities
from common.checkpoint import load_checkpoint
from common.image import prepare_image
from common.model import fold_batch_norms, to_model_input
from common.rules import AI_GENERATED, label_for
from tests.conftest import next_api_key
from tests.images import crop, encode
from train.data import list_split
from train.evaluate import expected_calibration_error
from train.robustness import CONDITIONS, degrade

pytestmark = pytest.mark.serve


@pytest.fixture
def small_split(tmp_path):
    """Six real photo crops as PNG in CIFAKE layout, three filed as REAL and three as FAKE."""
    for label, indices in (("REAL", (0, 1, 2)), ("FAKE", (3, 4, 5))):
        folder = tmp_path / "data" / "test" / label
        folder.mkdir(parents=True)
        for i in indices:
            (folder / f"{i}.png").write_bytes(encode(crop(i, (64, 48)), "PNG"))
    return tmp_path / "data"


def test_http_eval_measures_every_condition_through_the_api(
    served_app, checkpoints, small_split, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PPD_TEST_KEY", next_api_key())
    out = tmp_path / "http_eval.json"
    code = http_eval.main([
        "--url", served_app.url, "--data-dir", str(small_split), "--split", "test",
        "--api-key-env", "PPD_TEST_KEY", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["count"] == 6
    assert list(report["conditions"]) == ["clean", *CONDITIONS]
    assert "jpeg_q75" in capsys.readouterr().out

    model, meta = load_checkpoint(checkpoints["primary"])
    model = fold_batch_norms(model)  # as the Classifier serves it: accuracy, AUC, ECE exactly
    files = list_split(str(small_split), "test")
    labels = np.asarray(files.labels)
    for condition, served in report["conditions"].items():
        data = [degrade(Path(p).read_bytes(), condition) for p in files.paths]
        pixels = np.stack([prepare_image(d, meta.image_size).pixels for d in data])
        with torch.inference_mode():
            logits = model(to_model_input(torch.from_numpy(pixels), meta.mean, meta.std, "cpu"))
        probs = calibrated_probabilities(logits, meta).numpy()
        predicted = np.asarray([label_for(float(p), meta.threshold) == AI_GENERATED for p in probs])
        assert served["count"] == 6
        assert served["accuracy"] == float(np.mean(predicted == labels)), condition
        assert served["roc_auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-6)
        assert served["calibration_error"] == pytest.approx(
            expected_calibration_error(labels, probs), abs=1e-4
        )


def test_http_eval_says_which_file_the_service_refused(served_app, monkeypatch, tmp_path):
    monkeypatch.setenv("PPD_TEST_KEY", next_api_key())
    folder_real, folder_fake = tmp_path / "d" / "test" / "REAL", tmp_path / "d" / "test" / "FAKE"
    folder_real.mkdir(parents=True)
    folder_fake.mkdir(parents=True)
    (folder_real / "ok.png").write_bytes(encode(crop(0, (64, 48)), "PNG"))
    (folder_fake / "tiny.png").write_bytes(encode(crop(1, (8, 8)), "PNG"))  # under 16 px
    with pytest.raises(RuntimeError, match="refused 1 file"):
        http_eval.main([
            "--url", served_app.url, "--data-dir", str(tmp_path / "d"), "--conditions", "clean",
            "--api-key-env", "PPD_TEST_KEY", "--out", str(tmp_path / "o.json"),
        ])  # fmt: skip
