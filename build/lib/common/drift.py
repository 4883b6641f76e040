"""Drift statistics: what a window of predictions looks like, and how far it is from baseline.

The baseline is the same statistics computed on the held-out split at export time (stored in
the checkpoint), so a deployed model can report drift from its first requests. Three signals:
the mean probability, the share of low-confidence answers and the share labelled AI-generated;
each has a threshold on its absolute shift, and the score is the largest shift / threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from common.rules import AI_GENERATED, confidence_for, label_for

__all__ = ["SIGNALS", "DriftReport", "DriftThresholds", "assess_drift", "window_statistics"]

SIGNALS = ("mean_probability", "low_confidence_ratio", "ai_generated_ratio")


@dataclass(frozen=True)
class DriftThresholds:
    """Absolute shifts from the baseline that count as drift, per signal."""

    mean_probability: float = 0.15
    low_confidence_ratio: float = 0.20
    ai_generated_ratio: float = 0.20
    min_samples: int = 30  # no verdict on fewer predictions than this

    def of(self, signal: str) -> float:
        return getattr(self, signal)


@dataclass(frozen=True)
class DriftReport:
    detected: bool
    score: float  # max(|shift| / threshold) over the signals; >= 1 means drift
    window_size: int
    signals: dict[str, dict[str, float]] = field(default_factory=dict)


def window_statistics(
    probabilities: Iterable[float], threshold: float, labels: Iterable[str] | None = None
) -> dict[str, float]:
    """The signals of a set of predictions (labels derived from `threshold` when not given)."""
    probs = list(probabilities)
    if not probs:
        return {signal: 0.0 for signal in SIGNALS} | {"count": 0}
    labels = list(labels) if labels is not None else [label_for(p, threshold) for p in probs]
    count = len(probs)
    return {
        "mean_probability": sum(probs) / count,
        "low_confidence_ratio": sum(confidence_for(p) == "low" for p in probs) / count,
        "ai_generated_ratio": sum(label == AI_GENERATED for label in labels) / count,
        "count": count,
    }


def assess_drift(
    current: Mapping[str, float], baseline: Mapping[str, float], thresholds: DriftThresholds
) -> DriftReport:
    """Compare window statistics with the baseline, signal by signal."""
    window_size = int(current.get("count", 0))
    signals = {}
    score = 0.0
    for signal in SIGNALS:
        if signal not in baseline:
            continue
        shift = abs(current[signal] - baseline[signal])
        ratio = shift / thresholds.of(signal)
        signals[signal] = {
            "value": round(current[signal], 6),
            "baseline": round(baseline[signal], 6),
            "shift": round(shift, 6),
            "threshold": thresholds.of(signal),
        }
        score = max(score, ratio)
    enough = window_size >= thresholds.min_samples
    return DriftReport(
        detected=enough and score >= 1.0,
        score=round(score, 6) if enough else 0.0,
        window_size=window_size,
        signals=signals,
    )
