"""Ingress deployment: the HTTP API, and the only caller of the other deployments.

The routes are methods of `Ingress` through `@serve.ingress(app)`, so a route and its handler
are one function: read the upload, decode it (here or in the Preprocessor), classify through
the Classifier's handle, shape the answer. Every call down the graph goes through
`deployments.downstream.call` (deadline, back-pressure as 503, one retry). The edge middleware
(auth, limits, metrics, headers) is `deployments.edge`. After an answer, the Shadow mirror and
the DriftMonitor reports leave in background batches, so they never delay or fail it; on
shutdown both are flushed. An Ingress replica imports no torch: the answers it reads are the
plain dataclasses of `common.answers`. (No `from __future__ import annotations` here: FastAPI
must resolve the route parameters' types from the methods Serve rewrites. Serve copies the app,
and with it the route methods, while the class is being decorated: the module-level helpers
they use are defined above the class.)
"""

import asyncio
import base64
import dataclasses
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import File, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve.handle import DeploymentHandle

from common.answers import ModelInfo, Prediction, prediction_for
from common.image import ImageError, ImageLimits, JpegLayout, PreparedImage
from common.provenance import (
    ManifestReader,
    Provenance,
    load_trust_anchors,
    read_provenance,
    verdict_for,
)
from common.settings import apply_log_level, get_settings
from deployments.auth import API_KEY_DOC, API_KEY_HEADER
from deployments.background import BatchedSender
from deployments.decoding import ImageDecoder
from deployments.downstream import call, fetch_model_info
from deployments.edge import EdgeParts, ReplicaEdge
from deployments.errors import (
    ERROR_RESPONSES,
    install_error_handlers,
    overloaded,
    request_id_of,
    root_cause,
    unavailable,
)
from deployments.metrics import ingress_metrics, refresh_gauges_forever
from deployments.metrics_scrape import application_metrics
from deployments.schemas import (
    BatchItem,
    BatchResponse,
    ComparedPrediction,
    CompareResponse,
    ExplainResponse,
    HealthResponse,
    LivenessResponse,
    PredictResponse,
)
from deployments.shadow_mirror import MirrorConfig, ShadowMirror
from deployments.uploads import single_upload, uploads

__all__ = ["GATHER_CONCURRENT_CALLS", "Ingress", "IngressConfig", "app", "most_generated"]

logger = logging.getLogger("ray.serve")
T = TypeVar("T")

STATIC_DIR = Path(__file__).parent / "static"
# Gathered /predict calls in flight at once per ingress replica (one per Classifier replica and
# spare); Serve needs max_ongoing_requests >= this x gather_max_images. 3 made larger groups:
# 2.5-4 % more images/s at c=16 but 3.5 % fewer at c=64 (docs/performance.md), so 4 stays.
GATHER_CONCURRENT_CALLS = 4
# The in-flight gauge is set this often (seconds), not on every request: two metric records
# per request cost about 0.15 ms of the replica's CPU, and an export only sees the last value.
INFLIGHT_SAMPLE_S = 1.0
_UPLOAD = File(description="JPEG, PNG or WebP")
_PREDICT = {"responses": ERROR_RESPONSES, "tags": ["predict"], **API_KEY_DOC}

app = FastAPIOffline(
    title="Product Photo Detector",
    description="Tells real product photos from AI-generated ones. Send JPEG, PNG or WebP "
    f"files as multipart form data; when authentication is on, send `{API_KEY_HEADER}`.",
    version="1.0.0",
    redoc_url=None,
)
install_error_handlers(app)
app.add_middleware(ReplicaEdge)
app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


class IngressConfig(BaseModel):
    """`user_config` of the Ingress: strict types, unknown keys refused, ranges checked."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    shadow_fraction: float = Field(0.0, ge=0.0, le=1.0)  # of answered images, to the Shadow
    shadow_timeout_s: float = Field(10.0, gt=0)  # a slower mirrored call is a shadow error
    request_timeout_s: float = Field(20.0, gt=0)  # per downstream call; past it: 503
    # The Explainer's call: it may first wait for a replica to start (serve_config.yaml scales
    # the Explainer to zero while idle), so it has its own deadline, under HTTP's 60 s.
    explain_timeout_s: float = Field(45.0, gt=0)
    max_inflight_requests: int = Field(64, ge=1)  # per ingress replica; above it, fast 503s
    drift_flush_interval_s: float = Field(0.5, gt=0)  # predictions to the DriftMonitor
    shadow_flush_interval_s: float = Field(0.5, gt=0)  # mirrored images to the Shadow
    model_info_ttl_s: float = Field(2.0, ge=0)  # how long the primary's model info is trusted
    # Concurrent /predict requests of this replica go down to the Classifier as one handle
    # call: up to this many images, gathered for at most this long (0: whatever is waiting).
    gather_max_images: int = Field(16, ge=1)
    gather_wait_s: float = Field(0.0, ge=0)
    # Decode uploads here (a thread of this replica) rather than in the Preprocessor
    # deployment: on a small CPU node the extra hop costs more than the decode itself.
    preprocess_in_ingress: bool = False
    # When the RateLimiter cannot be asked in time: let requests through (true) or 503.
    rate_limiter_fails_open: bool = True
    # C2PA manifests are read in child processes of this replica (common.c2pa_reader): at
    # most this many at once, each stopped after provenance_timeout_s (then `invalid`).
    provenance_timeout_s: float = Field(2.0, gt=0)
    provenance_readers: int = Field(2, ge=1)
    # The one home of the decoded-image limits; every deployment that decodes gets them with
    # the call. The byte limits are MAX_FILE_BYTES / MAX_BATCH_BYTES (the edge needs them).
    min_side: int = Field(ImageLimits.min_side, ge=1)  # px, each side of an upload
    max_side: int = Field(ImageLimits.max_side, ge=1)  # px
    max_pixels: int = Field(ImageLimits.max_pixels, ge=1)  # decoded pixels, all frames: 413
    max_frames: int = Field(ImageLimits.max_frames, ge=1)  # frames an animation may hold: 413
    judged_frames: int = Field(ImageLimits.judged_frames, ge=1)  # frames judged, evenly spaced

    @model_validator(mode="after")
    def _sides(self) -> "IngressConfig":
        if self.min_side > self.max_side:
            raise ValueError("min_side must not exceed max_side")
        return self

    def image_limits(self, max_bytes: int) -> ImageLimits:
        return ImageLimits(max_bytes=max_bytes, min_side=self.min_side, max_side=self.max_side,
                           max_pixels=self.max_pixels, max_frames=self.max_frames,
                           judged_frames=self.judged_frames)  # fmt: skip

    def mirror(self) -> MirrorConfig:
        return MirrorConfig(fraction=self.shadow_fraction, timeout_s=self.shadow_timeout_s,
                            flush_interval_s=self.shadow_flush_interval_s,
                            info_ttl_s=self.model_info_ttl_s)  # fmt: skip


def most_generated(per_frame: list[Prediction]) -> Prediction:
    """An upload's answer from its frames' predictions: the frame most likely AI-generated (one
    generated frame flags a listing), its label and band as the Classifier gave them, and how
    many frames were judged."""
    return dataclasses.replace(max(per_frame, key=lambda p: p.probability), frames=len(per_frame))


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def _verdict(prediction: Prediction, provenance: Provenance) -> dict:
    """The answer fields of one upload: the classifier's, its provenance, and the two combined."""
    verdict, source = verdict_for(prediction.prediction, provenance)
    return {
        "prediction": prediction.prediction,
        "probability": prediction.probability,
        "confidence": prediction.confidence,
        "frames": prediction.frames,
        "provenance": provenance.to_dict(),
        "verdict": verdict,
        "verdict_source": source,
    }


def _compared(prediction: Prediction) -> ComparedPrediction:
    return ComparedPrediction(
        prediction=prediction.prediction,
        probability=prediction.probability,
        confidence=prediction.confidence,
        model_version=prediction.model_version,
    )


@serve.deployment
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        preprocessor: DeploymentHandle,
        classifier: DeploymentHandle,
        shadow: DeploymentHandle,
        explainer: DeploymentHandle,
        drift_monitor: DeploymentHandle,
        rate_limiter: DeploymentHandle,
    ) -> None:
        self.settings = get_settings()
        apply_log_level(self.settings, "Ingress")
        self._trust_anchors = load_trust_anchors(self.settings.c2pa_trust_anchors)
        self._manifests: ManifestReader | None = None  # started with the first user_config
        self.config = IngressConfig()
        self._decoder = ImageDecoder(self.settings.decode_workers, self.settings.decode_timeout_s)
        self.metrics = ingress_metrics()
        self._preprocessor = preprocessor
        self._classifier = classifier
        self._shadow = shadow
        self._explainer = explainer
        self._drift_monitor = drift_monitor
        self._rate_limiter = rate_limiter
        self._started = time.monotonic()
        self._info: ModelInfo | None = None
        self._info_at = 0.0
        self._drift_info: ModelInfo | None = None
        self._drift = BatchedSender(
            "drift reports",
            self._report_to_drift_monitor,
            interval=lambda: self.config.drift_flush_interval_s,
            max_pending=10_000,
        )
        self._mirror = ShadowMirror(shadow, self.metrics)
        self._gauges: asyncio.Task | None = None
        self._inflight = 0  # told by the edge's RequestMetricsMiddleware

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.config = IngressConfig.model_validate(user_config)  # a bad one keeps the old
        self._mirror.config = self.config.mirror()
        if (
            self._manifests is None
            or self._manifests.max_children != self.config.provenance_readers
        ):
            previous, self._manifests = (
                self._manifests,
                ManifestReader(max_children=self.config.provenance_readers),
            )
            if previous is not None:
                previous.close()
        self._classify_gathered.set_max_batch_size(self.config.gather_max_images)
        self._classify_gathered.set_batch_wait_timeout_s(self.config.gather_wait_s)
        if self._gauges is None:
            self._gauges = refresh_gauges_forever(self._set_gauges, INFLIGHT_SAMPLE_S)

    def edge_parts(self) -> EdgeParts:
        """What `deployments.edge` builds this replica's middleware from."""
        return EdgeParts(
            settings=self.settings,
            metrics=self.metrics,
            rate_limiter=self._rate_limiter,
            inflight_limit=lambda: self.config.max_inflight_requests,
            on_inflight=self._set_inflight,
            limiter_fails_open=lambda: self.config.rate_limiter_fails_open,
        )

    async def __del__(self) -> None:
        """Serve is stopping this replica: send the pending drift reports and mirrored images
        (within the deployment's graceful_shutdown_timeout_s)."""
        await asyncio.gather(self._drift.flush(), self._mirror.flush())
        if self._manifests is not None:
            self._manifests.close()

    # --- routes ------------------------------------------------------------------------------

    @app.post("/predict", response_model=PredictResponse, **_PREDICT)
    async def predict(
        self, request: Request, file: Annotated[UploadFile, _UPLOAD]
    ) -> PredictResponse:
        """Classify one image as real or AI-generated."""
        started = time.perf_counter()
        data = await self._admitted(single_upload(request), request)
        info = await self._primary_info()
        frames, provenance = await self._read(data, info.image_size)
        classified = time.perf_counter()
        per_frame = await self._classify_frames(frames)
        prediction = most_generated(per_frame)
        self._observe_stages(prediction, (time.perf_counter() - classified) * 1000.0)
        self._after_predictions([prediction], [provenance], info)
        self._mirror.offer(frames, per_frame)
        return PredictResponse(
            **_verdict(prediction, provenance),
            inference_time_ms=_ms_since(started),
            model_version=prediction.model_version,
            request_id=request_id_of(request),
        )

    @app.post("/predict/batch", response_model=BatchResponse, **_PREDICT)
    async def predict_batch(
        self,
        request: Request,
        files: Annotated[list[UploadFile], File(description="up to 10 images, repeated field")],
    ) -> BatchResponse:
        """Classify several images in one request; a bad file fails alone. Every frame of
        every upload goes down in one Classifier call."""
        started = time.perf_counter()
        named = await self._admitted(
            uploads(request, "files", self.settings.max_batch_files), request
        )
        info = await self._primary_info()
        self.metrics.batch_files.observe(len(named))
        prepared = await asyncio.gather(
            *(self._read(data, info.image_size) for _, data in named), return_exceptions=True
        )
        for item in prepared:
            if isinstance(item, BaseException) and not isinstance(item, ImageError):
                raise item  # not the upload's fault: the whole request fails as usual
        judged = [item[0] for item in prepared if isinstance(item, tuple)]
        provenances = [item[1] for item in prepared if isinstance(item, tuple)]
        frames = [frame for upload in judged for frame in upload]
        per_frame = await self._classify(frames, "batch") if frames else []
        answers, start = [], 0
        for upload in judged:
            answers.append(most_generated(per_frame[start : start + len(upload)]))
            start += len(upload)
        self._after_predictions(answers, provenances, info)
        self._mirror.offer(frames, per_frame)
        answered = iter(answers)
        items = [
            BatchItem(filename=name, error=str(item))
            if isinstance(item, ImageError)
            else BatchItem(filename=name, **_verdict(next(answered), item[1]))
            for (name, _), item in zip(named, prepared, strict=True)
        ]
        failed = sum(item.error is not None for item in items)
        return BatchResponse(
            results=items,
            total=len(items),
            successful=len(items) - failed,
            failed=failed,
            total_inference_time_ms=_ms_since(started),
            model_version=info.version or "",
        )

    @app.post("/predict/explain", response_model=ExplainResponse, **_PREDICT)
    async def predict_explain(
        self, request: Request, file: Annotated[UploadFile, _UPLOAD]
    ) -> ExplainResponse:
        """Classify one image and show where the evidence is (Grad-CAM heat map). An
        animation's frames are classified first; the one most likely AI-generated is
        explained, under the primary's threshold."""
        started = time.perf_counter()
        data = await self._admitted(single_upload(request), request)
        info = await self._primary_info()
        frames, provenance = await self._read(data, info.image_size)
        image = frames[0]
        if len(frames) > 1:
            per_frame = await self._classify(frames, "explain")
            image = max(zip(frames, per_frame, strict=True), key=lambda f: f[1].probability)[0]
        limits = self._limits()
        explanation = await call(
            lambda: self._explainer.remote(image, data, info.threshold, limits),
            timeout_s=self.config.explain_timeout_s,
            what="explainer",
            on_retry=lambda: self.metrics.retries.inc(tags={"route": "explain"}),
        )
        self.metrics.stage_latency_ms.observe(explanation.explain_ms, tags={"stage": "explain"})
        prediction = prediction_for(
            explanation.probability,
            info.threshold,
            model_version=explanation.model_version,
            model_ms=explanation.explain_ms,
            frames=len(frames),
        )
        self._after_predictions([prediction], [provenance], info)
        return ExplainResponse(
            **_verdict(prediction, provenance),
            inference_time_ms=_ms_since(started),
            model_version=prediction.model_version,
            request_id=request_id_of(request),
            heatmap_base64=base64.b64encode(explanation.heatmap_jpeg).decode("ascii"),
        )

    @app.post("/predict/compare", response_model=CompareResponse, **_PREDICT)
    async def predict_compare(
        self, request: Request, file: Annotated[UploadFile, _UPLOAD]
    ) -> CompareResponse:
        """Run the primary and the shadow model on the same frames, both awaited."""
        data = await self._admitted(single_upload(request), request)
        info = await self._primary_info()
        frames, _ = await self._read(data, info.image_size)  # (provenance: not compared)
        shadow_info = await fetch_model_info(self._shadow)
        if not shadow_info.loaded:
            primary = most_generated(await self._classify(frames, "compare"))
            return CompareResponse(
                primary=_compared(primary), shadow=None, frames=primary.frames, agreement=None,
                difference=None, message="no shadow model is configured",
            )  # fmt: skip
        primary, shadow = map(
            most_generated,
            await asyncio.gather(
                self._classify(frames, "compare"),
                self._classify(frames, "compare", handle=self._shadow),
            ),
        )
        return CompareResponse(
            primary=_compared(primary),
            shadow=_compared(shadow),
            frames=primary.frames,
            agreement=primary.prediction == shadow.prediction,
            difference=round(abs(primary.probability - shadow.probability), 6),
            message=f"primary {primary.model_version} vs shadow {shadow.model_version}",
        )

    @app.get("/health", response_model=HealthResponse, tags=["operations"],
             responses={503: {"model": HealthResponse, "description": "not ready"}})  # fmt: skip
    async def health(self) -> JSONResponse:
        """Readiness: 200 once the primary model is loaded, else 503."""
        primary, shadow, drift = await asyncio.gather(
            fetch_model_info(self._classifier),
            fetch_model_info(self._shadow),
            asyncio.wait_for(self._drift_monitor.status.remote(), 5.0),
            return_exceptions=True,
        )
        loaded = isinstance(primary, ModelInfo) and primary.loaded
        drift_ok = not isinstance(drift, BaseException)
        if not drift_ok:
            self.metrics.dependency_errors.inc(tags={"dependency": "drift_monitor"})
        report, total = drift if drift_ok else (None, 0)
        healthy = drift_ok and not (loaded and primary.load_error)
        body = HealthResponse(
            status=("ok" if healthy else "degraded") if loaded else "unavailable",
            model_loaded=loaded,
            model_version=primary.version if loaded else None,
            shadow_model_version=shadow.version if isinstance(shadow, ModelInfo) else None,
            uptime_seconds=round(time.monotonic() - self._started, 3),
            predictions_total=total,
            drift_detected=bool(report and report.detected),
            drift_score=report.score if report else 0.0,
            drift={"window_size": report.window_size, "signals": report.signals}
            if report
            else {"error": "the drift monitor is not reachable"},
        )
        return JSONResponse(body.model_dump(), status_code=200 if loaded else 503)

    @app.get("/healthz", response_model=LivenessResponse, tags=["operations"])
    async def healthz(self) -> LivenessResponse:
        """Liveness: this ingress replica answers."""
        return LivenessResponse(alive=True)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    async def metrics_text(self) -> PlainTextResponse:
        """The application's metrics from every replica on every node, Prometheus text."""
        return PlainTextResponse(
            await application_metrics(), media_type="text/plain; version=0.0.4"
        )

    @app.get("/", include_in_schema=False)
    async def index(self) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    # --- the calls down the graph --------------------------------------------------------------

    async def _admitted(self, reading: Awaitable[T], request: Request) -> T:
        """The request's uploads, once its body is in and it counts as in flight: past
        `max_inflight_requests` it gets a fast 503 here, before any work down the graph (the
        edge refuses new requests at the door too, but counts a request only once its body has
        arrived, so slow uploads never take the place of answered ones)."""
        uploaded = await reading
        if self._inflight > self.config.max_inflight_requests:
            self.metrics.overload_rejections.inc(tags={"route": request.url.path})
            raise overloaded()
        return uploaded

    async def _primary_info(self) -> ModelInfo:
        """The primary's model info (cached briefly); 503 while no model is loaded."""
        if self._info is None or time.monotonic() - self._info_at > self.config.model_info_ttl_s:
            try:
                self._info = await fetch_model_info(self._classifier)
            except Exception:  # timeout, dead replica, not deployed yet: not ready
                raise unavailable("not_ready", "the classifier is not reachable yet") from None
            self._info_at = time.monotonic()
        if not self._info.loaded or self._info.image_size is None:
            raise unavailable("not_ready", "the model is not loaded yet")
        return self._info

    async def _read(self, data: bytes, image_size: int) -> tuple[list[PreparedImage], Provenance]:
        """The upload's pictures to judge (one, or an animation's sampled frames) and its
        provenance, from the bytes only (the classifier never sees it). Decoded in this
        replica, both are read in one thread hop; otherwise the provenance is read while the
        Preprocessor decodes. The `decode` stage is the whole read."""
        started = time.perf_counter()
        self.metrics.image_bytes.observe(len(data))
        limits = self._limits()
        try:
            if self.config.preprocess_in_ingress:
                frames, (provenance, provenance_ms) = await self._decoder.prepare_frames_and(
                    data, image_size, limits, self._read_provenance
                )
            else:
                frames, (provenance, provenance_ms) = await asyncio.gather(
                    call(
                        lambda: self._preprocessor.remote(data, image_size, limits),
                        timeout_s=self.config.request_timeout_s,
                        what="preprocessor",
                        on_retry=lambda: self.metrics.retries.inc(tags={"route": "decode"}),
                    ),
                    asyncio.to_thread(self._read_provenance, data),
                )
        except ImageError as exc:
            cause = root_cause(exc)
            self.metrics.validation_errors.inc(tags={"kind": exc.kind})
            raise cause if isinstance(cause, ImageError) else exc from None
        self.metrics.stage_latency_ms.observe(_ms_since(started), tags={"stage": "decode"})
        self.metrics.stage_latency_ms.observe(provenance_ms, tags={"stage": "provenance"})
        self.metrics.image_pixels.observe(frames[0].width * frames[0].height)
        if provenance.c2pa is not None and provenance.c2pa.reason:
            logger.info("C2PA manifest %s: %s", provenance.c2pa.validation, provenance.c2pa.reason)
        return frames, provenance

    def _read_provenance(
        self, data: bytes, layout: JpegLayout | None = None
    ) -> tuple[Provenance, float]:
        """`read_provenance` with this replica's settings (in a thread; it never raises), and
        the milliseconds it took. `layout`: the decode's walk over a JPEG's markers."""
        started = time.perf_counter()
        provenance = read_provenance(
            data,
            trust_anchors_pem=self._trust_anchors,
            max_bytes=self.settings.max_file_bytes,
            timeout_s=self.config.provenance_timeout_s,
            reader=self._manifests,
            layout=layout,
        )
        return provenance, _ms_since(started)

    def _limits(self) -> ImageLimits:
        return self.config.image_limits(self.settings.max_file_bytes)

    @serve.batch(
        max_batch_size=16, batch_wait_timeout_s=0.0, max_concurrent_batches=GATHER_CONCURRENT_CALLS
    )
    async def _classify_gathered(self, images: list[PreparedImage]) -> list[Prediction]:
        """Single-image requests waiting in this replica, sent as one `predict_many` call: the
        per-call cost of a handle call and of the Classifier's request path is paid per
        gathered group, not per image. They still join the Classifier's own batches."""
        return await self._predict_many(images, "predict", self._classifier)

    async def _classify_frames(self, frames: list[PreparedImage]) -> list[Prediction]:
        """One upload's frames through the gathered calls: a still image's frame is awaited as
        it is (no task of its own, as most uploads are one), an animation's side by side."""
        if len(frames) == 1:
            return [await self._classify_gathered(frames[0])]
        return list(await asyncio.gather(*(self._classify_gathered(f) for f in frames)))

    async def _classify(
        self, frames: list[PreparedImage], route: str, handle: DeploymentHandle | None = None
    ) -> list[Prediction]:
        """Frames of one request in one call (the primary's unless `handle` says), with the
        model and queue stages observed."""
        started = time.perf_counter()
        predictions = await self._predict_many(frames, route, handle or self._classifier)
        self._observe_stages(predictions[0], _ms_since(started))
        return predictions

    async def _predict_many(
        self, images: list[PreparedImage], route: str, handle: DeploymentHandle
    ) -> list[Prediction]:
        return await call(
            lambda: handle.predict_many.remote(images),
            timeout_s=self.config.request_timeout_s,
            what="model",
            on_retry=lambda: self.metrics.retries.inc(tags={"route": route}),
        )

    def _observe_stages(self, prediction: Prediction, elapsed_ms: float) -> None:
        """Model time is the forward of the batch it rode in; the rest of the call is queue."""
        self.metrics.stage_latency_ms.observe(prediction.model_ms, tags={"stage": "model"})
        queue_ms = max(0.0, elapsed_ms - prediction.model_ms)
        self.metrics.stage_latency_ms.observe(queue_ms, tags={"stage": "queue"})

    # --- after an answer: metrics, drift, shadow (never on the request's path) -----------------

    def _after_predictions(
        self, predictions: list[Prediction], provenances: list[Provenance], info: ModelInfo
    ) -> None:
        """Metrics and drift see one answer per upload (the Shadow is offered each frame)."""
        for prediction, provenance in zip(predictions, provenances, strict=True):
            self.metrics.predictions.inc(
                tags={"label": prediction.prediction, "confidence": prediction.confidence}
            )
            self.metrics.probability.observe(prediction.probability)
            declared = provenance.declared
            self.metrics.provenance_declared.inc(tags={"declared": declared or "none"})
            if declared is not None:
                said = "ai_generated" if declared == "ai_generated" else "real"
                agreement = "agree" if prediction.prediction == said else "disagree"
                self.metrics.provenance_agreement.inc(tags={"agreement": agreement})
        self._drift_info = info
        self._drift.add([(p.probability, p.prediction) for p in predictions])

    async def _report_to_drift_monitor(self, batch: list[tuple[float, str]]) -> None:
        info = self._drift_info
        if info is None:
            return
        try:
            await asyncio.wait_for(
                self._drift_monitor.record.remote(
                    batch, info.version or "", info.drift_baseline or {}
                ),
                5.0,
            )
        except Exception:
            self.metrics.dependency_errors.inc(tags={"dependency": "drift_monitor"})
            raise

    def _set_inflight(self, count: int) -> None:
        self._inflight = count  # the gauge samples it every INFLIGHT_SAMPLE_S

    def _set_gauges(self) -> None:
        self.metrics.inflight_requests.set(self._inflight)
