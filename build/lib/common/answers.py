"""What the model deployments answer, as plain frozen dataclasses (no torch, no Ray Serve).

The Classifier, the Shadow and the Explainer build these; the Ingress, the benchmarks and the
evaluation read them. Keeping them here lets an Ingress replica import none of the model
stack. `prediction_for` is the one factory that applies `common.rules` to a probability.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.rules import Confidence, Label, confidence_for, label_for

__all__ = ["Explanation", "ModelInfo", "NoModelLoaded", "Prediction", "prediction_for"]


class NoModelLoaded(RuntimeError):
    """The replica has no model (a shadow without `model_uri`, or a failed first load)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a Classifier (or Shadow) replica serves."""

    loaded: bool
    version: str | None = None
    image_size: int | None = None
    threshold: float | None = None
    uri: str | None = None
    drift_baseline: dict[str, float] | None = None
    device: str = "cpu"
    load_error: str | None = None  # the last model_uri asked for could not be loaded


@dataclass(frozen=True)
class Prediction:
    """One picture's answer: P(AI-generated), its label and band, and where it came from."""

    probability: float
    prediction: Label
    confidence: Confidence
    model_version: str
    model_ms: float  # forward time of the batch this image rode in
    batch_size: int
    frames: int = 1  # pictures of the upload judged; the Ingress sets it for an animation


def prediction_for(
    probability: float,
    threshold: float,
    *,
    model_version: str,
    model_ms: float,
    batch_size: int = 1,
    frames: int = 1,
) -> Prediction:
    """The `Prediction` for a probability under `threshold`: label and band by `common.rules`."""
    return Prediction(
        probability=probability,
        prediction=label_for(probability, threshold),
        confidence=confidence_for(probability),
        model_version=model_version,
        model_ms=model_ms,
        batch_size=batch_size,
        frames=frames,
    )


@dataclass(frozen=True)
class Explanation:
    """A Grad-CAM overlay for the predicted class, and the probability it was computed for."""

    probability: float
    model_version: str
    heatmap_jpeg: bytes
    width: int  # of the overlay, px
    height: int
    explain_ms: float
