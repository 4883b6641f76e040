"""Held-out evaluation: probabilities, metrics, decision threshold, drift baseline, quality gate.

Labels and confidence bands come from `common.rules`, so evaluation judges a probability exactly
as serving will.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn import metrics as skm
from torch.utils.data import DataLoader

from common.checkpoint import ModelMeta
from common.drift import window_statistics
from common.model import PhotoClassifier, to_model_input
from train.data import ImageFileDataset, LabelledFiles

__all__ = [
    "QualityGate",
    "choose_threshold",
    "classification_metrics",
    "drift_baseline",
    "predict_probabilities",
]

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
