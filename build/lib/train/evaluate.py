"""Held-out evaluation: calibration, threshold, metrics, robustness, drift baseline, quality gate.

The calibration (temperature scaling, `train.calibration`) is fitted on the validation split's
logits, then the threshold is chosen on the calibrated validation probabilities; the test split
is judged clean and under every robustness condition (`train.robustness`). Probabilities come
from `common.calibration` and labels from `common.rules`, so evaluation judges a file exactly as
serving will. `python -m train.evaluate CHECKPOINT --out-dir DIR` writes evaluation.json and the
figures (the DVC `evaluate` stage); it judges, it does not gate (`train.export` does).
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

from common.calibration import calibrated_probabilities
from common.checkpoint import ModelMeta, load_checkpoint
from common.drift import window_statistics
from common.model import PhotoClassifier, to_model_input
from train.calibration import fit_temperature
from train.data import ImageFileDataset, LabelledFiles, list_split, split_validation
from train.loop import TrainConfig
from train.robustness import CONDITIONS

__all__ = [
    "REPORT_FILENAME",
    "Evaluation",
    "QualityGate",
    "add_gate_arguments",
    "choose_threshold",
    "classification_metrics",
    "drift_baseline",
    "evaluate_model",
    "expected_calibration_error",
    "gate_from_args",
    "gated_metrics",
    "main",
    "predict_logits",
    "predict_probabilities",
    "summary",
]

REPORT_FILENAME = "evaluation.json"

_THRESHOLD_CANDIDATES = np.round(np.linspace(0.05, 0.95, 91), 2)
_CALIBRATION_BINS = 10


@dataclass(frozen=True)
class QualityGate:
    """The minimum held-out figures a model needs before it may be exported."""

    min_accuracy: float = 0.85
    min_f1: float = 0.80
    max_ece: float = 0.05  # expected calibration error of the calibrated probabilities
    robustness_condition: str = "jpeg_q75"  # train.robustness.CONDITIONS
    min_robust_accuracy: float = 0.80  # accuracy under robustness_condition

    def __post_init__(self) -> None:
        if self.robustness_condition not in CONDITIONS:
            raise ValueError(f"robustness_condition must be one of {CONDITIONS}")

    def failures(self, metrics: dict[str, float]) -> list[str]:
        """Why `metrics` (gated_metrics: clean test keys, `<condition>.<key>`) fail; [] passes."""
        robust_key = f"{self.robustness_condition}.accuracy"
        checks = [  # (key, value needed, at least?)
            ("accuracy", self.min_accuracy, True),
            ("f1", self.min_f1, True),
            ("calibration_error", self.max_ece, False),
            (robust_key, self.min_robust_accuracy, True),
        ]
        out = []
        for key, bound, at_least in checks:
            value = metrics.get(key)
            if value is None:
                out.append(f"no {key} recorded")
            elif at_least and not value >= bound:
                out.append(f"{key} {value:.4f} < {bound}")
            elif not at_least and not value <= bound:
                out.append(f"{key} (ECE) {value:.4f} > {bound}")
        return out


def gated_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The flat figures the gate judges and the checkpoint stores: the clean test split's
    (`accuracy`, `f1`, ...) and each robustness condition's (`jpeg_q75.accuracy`, ...)."""
    flat = {k: v for k, v in report["test"].items() if isinstance(v, float)}
    for condition, figures in report.get("robustness", {}).items():
        flat.update({f"{condition}.{k}": v for k, v in figures.items() if isinstance(v, float)})
    return flat


def add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """The gate's options, the same in train.driver, tune.sweep and train.export."""
    defaults = QualityGate()
    group = parser.add_argument_group("quality gate (held-out test split)")
    group.add_argument("--min-accuracy", type=float, default=defaults.min_accuracy)
    group.add_argument("--min-f1", type=float, default=defaults.min_f1)
    group.add_argument("--max-ece", type=float, default=defaults.max_ece,
                       help="largest expected calibration error allowed")  # fmt: skip
    group.add_argument("--robustness-condition", choices=CONDITIONS,
                       default=defaults.robustness_condition)  # fmt: skip
    group.add_argument("--min-robust-accuracy", type=float, default=defaults.min_robust_accuracy,
                       help="smallest accuracy allowed under --robustness-condition")  # fmt: skip


def gate_from_args(args: argparse.Namespace) -> QualityGate:
    return QualityGate(
        min_accuracy=args.min_accuracy,
        min_f1=args.min_f1,
        max_ece=args.max_ece,
        robustness_condition=args.robustness_condition,
        min_robust_accuracy=args.min_robust_accuracy,
    )


@dataclass(frozen=True)
class Evaluation:
    """The report (JSON-ready) and the test split's labels and probabilities behind it."""

    report: dict[str, Any]
    test_labels: np.ndarray
    test_probs: np.ndarray

    def write(self, out_dir: Path | str) -> list[Path]:
        """evaluation.json and the figures into `out_dir`; returns the files written."""
        from train.figures import write_figures, write_robustness  # matplotlib: only here

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / REPORT_FILENAME
        path.write_text(json.dumps(self.report, indent=2, sort_keys=True) + "\n")
        figures = write_figures(self.test_labels, self.test_probs, self.report["threshold"], out)
        table = write_robustness(self.report["test"], self.report.get("robustness", {}), out)
        return [path, *figures, table]


def evaluate_model(
    model: PhotoClassifier,
    meta: ModelMeta,
    cfg: TrainConfig,
    conditions: tuple[str, ...] = CONDITIONS,
) -> Evaluation:
    """Calibration and threshold from the validation split; clean and robustness figures and
    the drift baseline from the test split. `meta.calibration` is refitted, never reused."""
    train_files, val_files = split_validation(
        list_split(cfg.data_dir, "train"), cfg.val_fraction, cfg.seed
    )
    test_files = list_split(cfg.data_dir, "test")
    val_labels, test_labels = np.asarray(val_files.labels), np.asarray(test_files.labels)

    # calibrate on validation, then choose the threshold on the calibrated probabilities
    raw = replace(meta, calibration={})
    val_logits = predict_logits(model, meta, val_files)
    calibrated = replace(meta, calibration=fit_temperature(val_logits, val_labels))
    val_probs = _probabilities(val_logits, calibrated)
    threshold = choose_threshold(val_labels, val_probs)

    test_logits = predict_logits(model, meta, test_files)
    test_probs = _probabilities(test_logits, calibrated)
    robustness = {}
    for condition in conditions:
        logits = predict_logits(model, meta, test_files, condition=condition)
        robustness[condition] = classification_metrics(
            test_labels, _probabilities(logits, calibrated), threshold
        )
    report = {
        "checkpoint_version": meta.version,
        "threshold": threshold,
        "calibration": calibrated.calibration,
        "calibration_ece": {  # expected calibration error without and with the calibration
            "validation_before": expected_calibration_error(
                val_labels, _probabilities(val_logits, raw)
            ),
            "validation_after": expected_calibration_error(val_labels, val_probs),
            "test_before": expected_calibration_error(
                test_labels, _probabilities(test_logits, raw)
            ),
            "test_after": expected_calibration_error(test_labels, test_probs),
        },
        "validation": classification_metrics(val_labels, val_probs, threshold),
        "test": classification_metrics(test_labels, test_probs, threshold),
        "robustness": robustness,
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
def predict_logits(
    model: PhotoClassifier,
    meta: ModelMeta,
    files: LabelledFiles,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    condition: str = "clean",
) -> np.ndarray:
    """The raw logit of each file, in order, through the serving preprocessing; `condition`
    degrades the files first (train.robustness)."""
    model.eval()
    dataset = ImageFileDataset(files, meta.image_size, condition=condition)
    logits = []
    for pixels, _ in DataLoader(dataset, batch_size=batch_size):
        logits.append(model(to_model_input(pixels, meta.mean, meta.std, device)).float().cpu())
    return torch.cat(logits).numpy() if logits else np.zeros(0, dtype=np.float32)


def predict_probabilities(
    model: PhotoClassifier,
    meta: ModelMeta,
    files: LabelledFiles,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    condition: str = "clean",
) -> np.ndarray:
    """Calibrated P(AI-generated) for each file, in order (`meta.calibration` applied)."""
    logits = predict_logits(model, meta, files, batch_size, device, condition)
    return _probabilities(logits, meta)


def _probabilities(logits: np.ndarray, meta: ModelMeta) -> np.ndarray:
    return calibrated_probabilities(torch.from_numpy(logits), meta).numpy()


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
        "calibration_error": expected_calibration_error(labels, np.asarray(probs)),
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


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray) -> float:
    """ECE over 10 equal-width probability bins: the mean |confidence - frequency|, weighted."""
    labels, probs = np.asarray(labels, dtype=float), np.asarray(probs, dtype=float)
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
    print(summary(evaluation.report) + f"\n-> {args.out_dir}", flush=True)
    return 0


def summary(report: dict[str, Any]) -> str:
    """Lines for a terminal: the clean and robustness figures, and the calibration's effect."""
    rows = {"clean": report["test"], **report.get("robustness", {})}
    lines = [f"{'condition':<16}{'accuracy':>9}{'roc_auc':>9}{'ece':>7}"]
    for name, m in rows.items():
        lines.append(
            f"{name:<16}{m['accuracy']:>9.4f}{m['roc_auc']:>9.4f}{m['calibration_error']:>7.3f}"
        )
    ece = report.get("calibration_ece", {})
    lines.append(
        f"threshold {report['threshold']:.2f}  f1 {report['test']['f1']:.4f}  calibration "
        f"{report.get('calibration') or 'identity'}  test ECE {ece.get('test_before', 0):.3f} "
        f"-> {ece.get('test_after', 0):.3f}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
