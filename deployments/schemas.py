"""Response bodies of the HTTP API, as pydantic models (they also document the OpenAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["ErrorResponse", "HealthResponse", "LivenessResponse", "PredictResponse"]


class PredictResponse(BaseModel):
    prediction: Literal["real", "ai_generated"]
    probability: float = Field(description="P(AI-generated), 0..1", ge=0.0, le=1.0)
    confidence: Literal["high", "medium", "low"]
    inference_time_ms: float = Field(description="server time for this image, milliseconds")
    model_version: str
    request_id: str


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    model_loaded: bool
    model_version: str | None
    shadow_model_version: str | None
    uptime_seconds: float
    predictions_total: int
    drift_detected: bool
    drift_score: float
    drift: dict = Field(default_factory=dict, description="per-signal drift statistics")


class LivenessResponse(BaseModel):
    alive: bool = True


class ErrorResponse(BaseModel):
    error: str = Field(description="short machine-readable code, e.g. unsupported_format")
    detail: str = Field(description="what went wrong, for a person")
    request_id: str
    status_code: int
