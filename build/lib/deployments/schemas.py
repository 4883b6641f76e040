"""Response bodies of the HTTP API, as pydantic models (they also document the OpenAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "BatchItem",
    "BatchResponse",
    "CompareResponse",
    "ErrorResponse",
    "ExplainResponse",
    "HealthResponse",
    "LivenessResponse",
    "PredictResponse",
]

LabelField = Literal["real", "ai_generated"]
ConfidenceField = Literal["high", "medium", "low"]


FRAMES_DESCRIPTION = (
    "pictures of the upload judged: 1 for a still image or a multi-picture JPEG (its primary "
    "picture); up to `judged_frames` for an animated PNG or WebP, sampled evenly, whose "
    "`probability` is then the highest over them"
)


class PredictResponse(BaseModel):
    prediction: LabelField
    probability: float = Field(description="P(AI-generated), 0..1", ge=0.0, le=1.0)
    confidence: ConfidenceField
    frames: int = Field(description=FRAMES_DESCRIPTION, ge=1)
    inference_time_ms: float = Field(description="server time for this request, milliseconds")
    model_version: str
    request_id: str


class ExplainResponse(PredictResponse):
    heatmap_base64: str = Field(
        description="JPEG of the upload (its aspect ratio, at most 512 px) with the Grad-CAM "
        "heat map for the predicted class blended over it, base64-encoded"
    )


class BatchItem(BaseModel):
    filename: str
    prediction: LabelField | None = None
    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    confidence: ConfidenceField | None = None
    frames: int | None = Field(default=None, description=FRAMES_DESCRIPTION, ge=1)
    error: str | None = Field(default=None, description="why this file has no prediction")


class BatchResponse(BaseModel):
    results: list[BatchItem] = Field(description="one per uploaded file, in request order")
    total: int
    successful: int
    failed: int
    total_inference_time_ms: float
    model_version: str


class ComparedPrediction(BaseModel):
    prediction: LabelField
    probability: float = Field(ge=0.0, le=1.0)
    confidence: ConfidenceField
    model_version: str


class CompareResponse(BaseModel):
    primary: ComparedPrediction
    shadow: ComparedPrediction | None
    frames: int = Field(description=FRAMES_DESCRIPTION + " (the same frames for both models)", ge=1)
    agreement: bool | None = Field(description="same label from both models")
    difference: float | None = Field(description="|P(primary) - P(shadow)|")
    message: str


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    model_loaded: bool
    model_version: str | None
    shadow_model_version: str | None
    uptime_seconds: float
    predictions_total: int
    drift_detected: bool
    drift_score: float
    drift: dict = Field(default_factory=dict, description="window size and per-signal shifts")


class LivenessResponse(BaseModel):
    alive: bool = True


class ErrorResponse(BaseModel):
    error: str = Field(description="short machine-readable code, e.g. unsupported_format")
    detail: str = Field(description="what went wrong, for a person")
    request_id: str
    status_code: int
