"""Calibrated P(AI-generated) from the model's logits: the one function every caller uses.

A checkpoint's `calibration` (ModelMeta) says how a logit z becomes a probability: empty means
identity, sigmoid(z); `{"method": "temperature", "temperature": T}` means sigmoid(z / T)
(Guo et al., ICML 2017), fitted on the validation split by `train.calibration`. Serving,
Grad-CAM's predicted class, evaluation and the drift baseline all go through
`calibrated_probabilities`, so `probability` means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["CALIBRATION_METHODS", "calibrated_logits", "calibrated_probabilities", "check"]

CALIBRATION_METHODS = ("temperature",)


def check(calibration: Mapping[str, Any]) -> None:
    """Raise ValueError unless `calibration` is empty (identity) or a known, valid method."""
    if not calibration:
        return
    method = calibration.get("method")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; one of {CALIBRATION_METHODS}")
    temperature = calibration.get("temperature")
    if not isinstance(temperature, int | float) or not temperature > 0:
        raise ValueError(f"calibration temperature must be a positive number, not {temperature!r}")


def calibrated_logits(logits: torch.Tensor, calibration: Mapping[str, Any]) -> torch.Tensor:
    """The logits after calibration (z / T for temperature scaling; unchanged when empty)."""
    if not calibration:
        return logits
    return logits / float(calibration["temperature"])


def calibrated_probabilities(logits: torch.Tensor, meta: Any) -> torch.Tensor:
    """P(AI-generated) for raw model logits under the checkpoint metadata's calibration."""
    return torch.sigmoid(calibrated_logits(logits.float(), meta.calibration))
