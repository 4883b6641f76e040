"""Held-out evaluation: probabilities, metrics, decision threshold, drift baseline, quality gate.

Labels and confidence bands come from `common.rules`, so evaluation judges a probability exactly
as serving will. `python -m train.evaluate CHECKPOINT --out-dir DIR` writes evaluation.json and
the figures (the DVC `evaluate` stage); it judges, it does not gate (`train.export` does).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn import metrics as skm
from torch.utils.data import DataLoader

from common.checkpoint import ModelMeta, load_checkpoint
from common.drift import window_statistics
from common.model import PhotoClassifier, to_model_input
from train.data import ImageFileDataset, LabelledFiles, list_split, split_validation
from train.loop import TrainConfig

__all__ = [
    "REPORT_FILENAME",
    "Evaluation",
    "QualityGate",
    "choose_threshold",
    "classification_metrics",
    "drift_baseline",
    "evaluate_model",
    "main",
    "predict_probabilities",
]

REPORT_FILENAME = "evaluation.json"

_THRESHOLD_CANDIDATES = np.round(np.linspace(0.05, 0.95, 91), 2)
_CALIBRATION_BINS = 10


@dataclass(frozen=True)
class QualityGate:
    """The minimum held-out figures a model needs before it may be exported."""

    min_accuracy: float = 0.85
    min_f1: float = 0.80

    def failures(self, metrics: dict[str, float]) -> list[str]:
        out = []
        if metrics["accuracy"] < self.min_accuracy:
            out.append(f"accuracy {metrics['accuracy']:.4f} < {self.min_accuracy}")
        if metrics["f1"] < self.min_f1:
            out.append(f"f1 {metrics['f1']:.4f} < {self.min_f1}")
        return out


@dataclass(frozen=True)
class Evaluation:
    """The report (JSON-ready) and the test split's labels and probabilities behind it."""

    report: dict[str, Any]
    test_labels: np.ndarray
    test_probs: np.ndarray

    def write(self, out_dir: Path | str) -> list[Path]:
        """evaluation.json and the figures into `out_dir`; returns the files written."""
        from train.figures import write_figures  # matplotlib: only when figures are drawn

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / REPORT_FILENAME
        path.write_text(json.dumps(self.report, indent=2, sort_keys=True) + "\n")
        figures = write_figures(self.test_labels, self.test_probs, self.report["threshold"], out)
        return [path, *figures]


def evaluate_model(model: PhotoClassifier, meta: ModelMeta, cfg: TrainConfig) -> Evaluation:
    """Threshold chosen on the validation split, figures from the test split, drift baseline."""
    train_files, val_files = split_validation(
        list_split(cfg.data_dir, "train"), cfg.val_fraction, cfg.seed
    )
    test_files = list_split(cfg.data_dir, "test")
    val_probs = predict_probabilities(model, meta, val_files)
    threshold = choose_threshold(np.asarray(val_files.labels), val_probs)
    test_labels = np.asarray(test_files.labels)
    test_probs = predict_probabilities(model, meta, test_files)
    report = {
        "checkpoint_version": meta.version,
        "threshold": threshold,
        "validation": classification_metrics(np.asarray(val_files.labels), val_probs, threshold),
        "test": classification_metrics(test_labels, test_probs, threshold),
        "drift_baseline": drift_baseline(test_probs, threshold),
        "data_fingerprint": meta.data_fingerprint,
        "split_sizes": {
            "train": len(train_files),
            "validation": len(val_files),
            "test": len(test_files),
        },
    }
    return Evaluation(report, test_labels, test_probs)


@torch.no_grad()
def predict_probabilities(
    model: PhotoClassifier,
    meta: ModelMeta,
    files: LabelledFiles,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """P(AI-generated) for each file, in order, through the serving preprocessing."""
    model.eval()
    loader = DataLoader(ImageFileDataset(files, meta.image_size), batch_size=batch_size)
    probs = []
    for pixels, _ in loader:
        logits = model(to_model_input(pixels, meta.mean, meta.std, device))
        probs.append(torch.sigmoid(logits).float().cpu())
    return torch.cat(probs).numpy() if probs else np.zeros(0, dtype=np.float32)


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, threshold: float
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (AI-generated is positive), ROC-AUC, calibration error."""
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(probs) >= threshold).astype(int)
    both_classes = len(np.unique(labels)) == 2
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
        "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(labels, probs)) if both_classes else float("nan"),
        "calibration_error": _expected_calibration_error(labels, np.asarray(probs)),
        "threshold": float(threshold),
        "count": len(labels),
    }


def choose_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The threshold with the best F1 on validation data; ties go to the one nearest 0.5."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs)
    best = (-1.0, 0.0, 0.5)
    for t in _THRESHOLD_CANDIDATES:
        f1 = skm.f1_score(labels, (probs >= t).astype(int), zero_division=0)
        key = (float(f1), -abs(float(t) - 0.5), float(t))
        best = max(best, key)
    return best[2]


def drift_baseline(probs: np.ndarray, threshold: float) -> dict[str, float]:
    """What the DriftMonitor compares live traffic with: the held-out prediction statistics."""
    return window_statistics(np.asarray(probs, dtype=float).tolist(), threshold)


def _expected_calibration_error(labels: np.ndarray, probs: np.ndarray) -> float:
    edges = np.linspace(0.0, 1.0, _CALIBRATION_BINS + 1)
    bins = np.clip(np.digitize(probs, edges[1:-1]), 0, _CALIBRATION_BINS - 1)
    error = 0.0
    for b in range(_CALIBRATION_BINS):
        mask = bins == b
        if mask.any():
            error += mask.mean() * abs(probs[mask].mean() - labels[mask].mean())
    return float(error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate a checkpoint: threshold on validation, metrics and figures on test."
    )
    parser.add_argument("checkpoint", help="checkpoint URI (path, gs://, models:/, runs:/)")
    parser.add_argument("--out-dir", required=True, help="where evaluation.json and figures go")
    parser.add_argument(
        "--data-dir", help="data set (CIFAKE layout); default: the one it was trained on"
    )
    parser.add_argument(
        "--run-info", help="run.json from `train.driver --checkpoint-out`: log to its MLflow run"
    )
    args = parser.parse_args(argv)

    model, meta = load_checkpoint(args.checkpoint)
    cfg = TrainConfig.from_dict(meta.train_config)
    if args.data_dir:
        cfg = replace(cfg, data_dir=args.data_dir)
    evaluation = evaluate_model(model, meta, cfg)
    files = evaluation.write(args.out_dir)
    if args.run_info:
        from train import tracking

        run = tracking.run_from_info(args.run_info)
        tracking.log_evaluation(run, evaluation.report, files)
    test = evaluation.report["test"]
    print(
        f"test accuracy {test['accuracy']:.4f}  f1 {test['f1']:.4f}  "
        f"roc_auc {test['roc_auc']:.4f}  threshold {evaluation.report['threshold']:.2f}  "
        f"-> {args.out_dir}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
