"""Fit the calibration stored in a checkpoint: temperature scaling on the validation logits.

One scalar T > 0 minimising the binary cross-entropy of sigmoid(z / T) on the validation split
(Guo et al., ICML 2017), against Platt's (1999) smoothed targets (N+ + 1) / (N+ + 2) and
1 / (N- + 2) instead of 1 and 0: on a validation split the model separates perfectly (a small
one often is) the plain fit would drive T to 0 and every probability to 0 or 1. Dividing by T
keeps the order of the scores (ROC-AUC is unchanged) and the sign of the logit, so only the
probabilities move; the decision threshold is chosen on the calibrated validation probabilities
afterwards. Never fitted on the test split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = ["fit_temperature"]

_LOG_T_BOUNDS = (-3.0, 3.0)  # T between 0.05 and 20


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """`{"method": "temperature", "temperature": T}` fitted on (logits, labels in {0, 1})."""
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(int)
    if len(z) == 0 or len(np.unique(labels)) < 2:
        return {}  # nothing to fit on: identity
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    y = np.where(labels == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        # log(1 + e^s) - y s, computed without overflow
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    best = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded")
    return {"method": "temperature", "temperature": round(float(np.exp(best.x)), 6)}
