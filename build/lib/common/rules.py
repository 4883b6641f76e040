"""Labels and confidence bands: the one place the decision rules live.

Every route, the evaluation and the drift statistics use these functions, so a probability
maps to the same label and band everywhere.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "AI_GENERATED",
    "CLASS_NAMES",
    "DEFAULT_THRESHOLD",
    "REAL",
    "Confidence",
    "Label",
    "confidence_for",
    "label_for",
]

REAL = "real"
AI_GENERATED = "ai_generated"
CLASS_NAMES = (REAL, AI_GENERATED)  # index = training label; the model outputs P(index 1)
DEFAULT_THRESHOLD = 0.5

# Distance d = |p - 0.5| bounds of the confidence bands.
HIGH_CONFIDENCE_ABOVE = 0.3  # d > 0.3 -> high
LOW_CONFIDENCE_BELOW = 0.2  # d < 0.2 -> low; otherwise medium

Label = Literal["real", "ai_generated"]
Confidence = Literal["high", "medium", "low"]


def label_for(probability: float, threshold: float = DEFAULT_THRESHOLD) -> Label:
    """`ai_generated` when P(AI-generated) >= threshold, else `real`."""
    return AI_GENERATED if probability >= threshold else REAL


def confidence_for(probability: float) -> Confidence:
    """How far the probability is from a coin flip: `high`, `medium` or `low`."""
    distance = round(abs(probability - 0.5), 9)  # 0.8 - 0.5 is 0.30000000000000004 in binary
    if distance > HIGH_CONFIDENCE_ABOVE:
        return "high"
    if distance < LOW_CONFIDENCE_BELOW:
        return "low"
    return "medium"
