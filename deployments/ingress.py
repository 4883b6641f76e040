"""Ingress deployment: the HTTP API (FastAPI on Starlette) over the model deployments.

Handlers are thin: read the upload, hand it down the graph through `DeploymentHandle`s, shape
the answer. Errors leave through the one envelope in `deployments.errors`.

`@serve.ingress` copies the FastAPI app when the class is decorated, so everything a route uses
must already exist above the class, and annotations stay real objects (no postponed
evaluation) for FastAPI to read them.
"""

import asyncio
import time
from typing import Annotated

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.classifier import ModelInfo, Prediction
from deployments.errors import ERROR_RESPONSES, ApiError, install_error_handlers, request_id_of
from deployments.schemas import HealthResponse, LivenessResponse, PredictResponse

__all__ = ["Ingress", "api"]

MODEL_INFO_TTL_S = 2.0  # how long the ingress trusts its copy of the Classifier's model info
HEALTH_TIMEOUT_S = 5.0

api = FastAPI(
    title="Product Photo Detector",
    description="Tells real product photos from AI-generated ones.",
    version="0.1.0",
)
install_error_handlers(api)


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(self, preprocessor: DeploymentHandle, classifier: DeploymentHandle) -> None:
        self._preprocessor = preprocessor
        self._classifier = classifier
        self._started = time.monotonic()
        self._info: ModelInfo | None = None
        self._info_at = 0.0
        self._predictions_total = 0

    @api.post("/predict", response_model=PredictResponse, responses=ERROR_RESPONSES)
    async def predict(
        self, request: Request, file: Annotated[UploadFile, File(description="the image")]
    ) -> PredictResponse:
        """Classify one image (JPEG, PNG or WebP) as real or AI-generated."""
        started = time.perf_counter()
        data = await file.read()
        info = await self._ready_model()
        prediction: Prediction = await self._classifier.remote(
            self._preprocessor.remote(data, info.image_size)
        )
        self._predictions_total += 1
        return PredictResponse(
            prediction=prediction.prediction,
            probability=prediction.probability,
            confidence=prediction.confidence,
            inference_time_ms=round((time.perf_counter() - started) * 1000.0, 3),
            model_version=prediction.model_version,
            request_id=request_id_of(request),
        )

    @api.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health(self) -> JSONResponse:
        """Readiness: 200 once the primary model is loaded, else 503."""
        try:
            info = await self._model_info(refresh=True)
        except TimeoutError:
            info = None
        loaded = bool(info and info.loaded)
        body = HealthResponse(
            status="ok" if loaded else "unavailable",
            model_loaded=loaded,
            model_version=info.version if info else None,
            shadow_model_version=None,
            uptime_seconds=round(time.monotonic() - self._started, 3),
            predictions_total=self._predictions_total,
            drift_detected=False,
            drift_score=0.0,
            drift={},
        )
        return JSONResponse(body.model_dump(), status_code=200 if loaded else 503)

    @api.get("/healthz", response_model=LivenessResponse)
    async def healthz(self) -> LivenessResponse:
        """Liveness: the ingress answers."""
        return LivenessResponse(alive=True)

    async def _ready_model(self) -> ModelInfo:
        info = await self._model_info()
        if not info.loaded or info.image_size is None:
            raise ApiError(503, "not_ready", "the model is not loaded yet", {"Retry-After": "5"})
        return info

    async def _model_info(self, refresh: bool = False) -> ModelInfo:
        if refresh or self._info is None or time.monotonic() - self._info_at > MODEL_INFO_TTL_S:
            response = self._classifier.options(method_name="model_info").remote()
            self._info = await asyncio.wait_for(response, HEALTH_TIMEOUT_S)
            self._info_at = time.monotonic()
        return self._info
