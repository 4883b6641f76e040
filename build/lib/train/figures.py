"""Evaluation figures: confusion matrix and ROC curve as PNGs (for MLflow) and CSVs (for DVC plots).

The pictures are scikit-learn's own displays drawn by matplotlib's file-only Agg backend; labels
are judged with `common.rules.label_for`, as serving judges them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training nodes

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay, roc_curve

from common.rules import CLASS_NAMES, label_for

__all__ = ["FIGURE_FILES", "ROBUSTNESS_FILE", "write_figures", "write_robustness"]

FIGURE_FILES = ("confusion_matrix.png", "roc.png", "roc.csv", "predictions.csv")
ROBUSTNESS_FILE = "robustness.csv"  # one row per condition (clean first), for DVC's bar plot
_ROBUSTNESS_COLUMNS = ("accuracy", "roc_auc", "calibration_error", "f1")


def write_figures(
    labels: np.ndarray, probs: np.ndarray, threshold: float, out_dir: Path | str
) -> list[Path]:
    """Write FIGURE_FILES for the test split into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    actual = [CLASS_NAMES[int(y)] for y in labels]
    predicted = [label_for(float(p), threshold) for p in probs]

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(
        actual, predicted, labels=list(CLASS_NAMES), ax=ax, colorbar=False
    )
    ax.set_title(f"test split, threshold {threshold:.2f}")
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close(fig)

    both_classes = len(np.unique(labels)) == 2
    fig, ax = plt.subplots(figsize=(4.5, 4))
    if both_classes:
        RocCurveDisplay.from_predictions(labels, probs, ax=ax, name="EfficientNet-B0")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set_title("ROC, test split (positive: ai_generated)")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=100)
    plt.close(fig)

    with open(out / "roc.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fpr", "tpr", "threshold"])
        if both_classes:
            fpr, tpr, thresholds = roc_curve(labels, probs)
            for row in zip(fpr, tpr, np.minimum(thresholds, 1.0), strict=True):
                writer.writerow([f"{v:.6f}" for v in row])
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(actual, predicted, strict=True))
    return [out / name for name in FIGURE_FILES]


def write_robustness(
    clean: dict[str, float], robustness: dict[str, dict[str, float]], out_dir: Path | str
) -> Path:
    """ROBUSTNESS_FILE: the test split's figures clean and under each robustness condition."""
    path = Path(out_dir) / ROBUSTNESS_FILE
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["condition", *_ROBUSTNESS_COLUMNS])
        for name, figures in {"clean": clean, **robustness}.items():
            writer.writerow([name, *(f"{figures[k]:.6f}" for k in _ROBUSTNESS_COLUMNS)])
    return path
