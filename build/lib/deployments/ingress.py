"""Ingress deployment: the application's front door and the only caller of the other deployments.

It holds the `DeploymentHandle`s and does the request-level work — prepare, classify, explain,
compare, report health — with timeouts, back-pressure and one retry when a replica dies. The
HTTP surface (FastAPI routes, middleware, docs, web page) is built per replica by
`deployments.http_api.build_api(self)` through Serve's late-bound `__serve_build_asgi_app__`.
Background work — mirroring to the Shadow (`deployments.shadow_mirror`) and feeding the
DriftMonitor — runs in tasks detached from the request, so it never delays or fails an answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from common.answers import Explanation, ModelInfo, NoModelLoaded, Prediction
from common.config import strict_dataclass
from common.image import ImageError, ImageLimits, PreparedImage, prepare_frames
from common.rules import confidence_for, label_for
from common.settings import Settings
from deployments.background import BatchedSender
from deployments.classifier import fetch_model_info
from deployments.errors import ApiError, root_cause
from deployments.metrics import ingress_metrics, refresh_gauges_forever
from deployments.shadow_mirror import ShadowMirror

__all__ = ["GATHER_CONCURRENT_CALLS", "Ingress", "IngressConfig", "most_generated"]

logger = logging.getLogger("ray.serve")
T = TypeVar("T")

_REPLICA_GONE = (RayActorError, ReplicaUnavailableError)  # worth one retry on another replica
_SERVICE_RETRY_AFTER_S = "2"
# Gathered /predict calls in flight at once per ingress replica (one per Classifier replica and
# spare); Serve needs max_ongoing_requests >= this x gather_max_images.
GATHER_CONCURRENT_CALLS = 4


@dataclass(frozen=True)
class IngressConfig:
    """`user_config` of the Ingress; unknown keys are an error."""

    shadow_fraction: float = 0.0  # share of /predict and batch traffic mirrored to the Shadow
    shadow_timeout_s: float = 10.0  # a mirrored call slower than this counts as a shadow error
    request_timeout_s: float = 20.0  # per downstream call; past it the client gets 503
    max_inflight_requests: int = 64  # per ingress replica; above it, fast 503s
    drift_flush_interval_s: float = 0.5  # how often predictions are sent to the DriftMonitor
    shadow_flush_interval_s: float = 0.5  # how often mirrored images are sent to the Shadow
    model_info_ttl_s: float = 2.0  # how long the primary's model info is trusted
    # Concurrent /predict requests of this replica go down to the Classifier as one handle
    # call: up to this many images, gathered for at most this long (0: whatever is waiting).
    gather_max_images: int = 16
    gather_wait_s: float = 0.0
    # Decode uploads here (a thread of this replica) rather than in the Preprocessor
    # deployment: on a small CPU node the extra hop costs more than the decode itself.
    preprocess_in_ingress: bool = False
    min_side: int = ImageLimits.min_side  # px, each side of an upload
    max_side: int = ImageLimits.max_side  # px
    max_pixels: int = ImageLimits.max_pixels  # decoded pixels, all frames; bigger headers: 413
    max_frames: int = ImageLimits.max_frames  # frames an animation may hold; more: 413
    judged_frames: int = ImageLimits.judged_frames  # frames of an animation judged, evenly spaced

    @classmethod
    def from_user_config(cls, raw: dict[str, Any]) -> IngressConfig:
        config = strict_dataclass(cls, raw, "Ingress user_config")
        if not 0.0 <= config.shadow_fraction <= 1.0:
            raise ValueError("shadow_fraction must lie in [0, 1]")
        if config.max_inflight_requests < 1 or config.request_timeout_s <= 0:
            raise ValueError("max_inflight_requests must be >= 1 and request_timeout_s > 0")
        if config.gather_max_images < 1 or config.gather_wait_s < 0:
            raise ValueError("gather_max_images must be >= 1 and gather_wait_s >= 0")
        if not 1 <= config.min_side <= config.max_side or config.max_pixels < 1:
            raise ValueError("image limits must satisfy 1 <= min_side <= max_side, max_pixels >= 1")
        if config.max_frames < 1 or config.judged_frames < 1:
            raise ValueError("max_frames and judged_frames must be >= 1")
        return config

    def image_limits(self, max_bytes: int) -> ImageLimits:
        return ImageLimits(max_bytes=max_bytes, min_side=self.min_side, max_side=self.max_side,
                           max_pixels=self.max_pixels, max_frames=self.max_frames,
                           judged_frames=self.judged_frames)  # fmt: skip


def most_generated(per_frame: list[Prediction]) -> Prediction:
    """An upload's answer from its frames' predictions: the frame most likely AI-generated (one
    generated frame flags a listing), its label and band as the Classifier gave them, and how
    many frames were judged."""
    return dataclasses.replace(max(per_frame, key=lambda p: p.probability), frames=len(per_frame))


@serve.deployment
@serve.ingress()
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
        self.settings = Settings.from_env()
        self.config = IngressConfig()
        self.metrics = ingress_metrics()
        self.rate_limiter = rate_limiter
        self._preprocessor = preprocessor
        self._classifier = classifier
        self._shadow = shadow
        self._explainer = explainer
        self._drift_monitor = drift_monitor
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
        self._mirror = ShadowMirror(shadow, self.metrics, lambda: self.config)
        self._gauges: asyncio.Task | None = None
        self.inflight_requests = 0  # told by RequestMetricsMiddleware

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.config = IngressConfig.from_user_config(user_config)
        self._classify_gathered.set_max_batch_size(self.config.gather_max_images)
        self._classify_gathered.set_batch_wait_timeout_s(self.config.gather_wait_s)
        if self._gauges is None:
            self._gauges = refresh_gauges_forever(self._set_gauges)

    def set_inflight(self, count: int) -> None:
        self.inflight_requests = count
        self._set_gauges()

    def _set_gauges(self) -> None:
        self.metrics.inflight_requests.set(self.inflight_requests)

    def __serve_build_asgi_app__(self) -> FastAPI:
        from deployments.http_api import build_api  # the HTTP layer, built in the replica

        return build_api(self)

    # --- inference -------------------------------------------------------------------------

    async def predict(self, data: bytes) -> tuple[Prediction, float]:
        """One upload through Preprocessor and Classifier; (prediction, server ms). The frames
        of an animation are gathered like concurrent single images; the answer is the frame
        most likely AI-generated."""
        started = time.perf_counter()
        info = await self.primary_info()
        frames = await self._prepare(data, info.image_size)
        classified = time.perf_counter()
        per_frame = list(await asyncio.gather(*(self._classify_gathered(f) for f in frames)))
        prediction = most_generated(per_frame)
        self._observe_stages(prediction, (time.perf_counter() - classified) * 1000.0)
        self._after_predictions([prediction], info)
        self._mirror.offer(frames, per_frame)
        return prediction, (time.perf_counter() - started) * 1000.0

    @serve.batch(
        max_batch_size=16, batch_wait_timeout_s=0.0, max_concurrent_batches=GATHER_CONCURRENT_CALLS
    )
    async def _classify_gathered(self, images: list[PreparedImage]) -> list[Prediction]:
        """Single-image requests waiting in this replica, sent as one `predict_many` call: the
        per-call cost of a handle call and of the Classifier's request path is paid per
        gathered group, not per image. They still join the Classifier's own batches."""
        return await self._inference(
            lambda: self._classifier.predict_many.remote(images), "predict"
        )

    async def predict_batch(
        self, uploads: list[bytes]
    ) -> tuple[list[Prediction | ImageError], str, float]:
        """Several images, prepared in parallel and classified in one call (every frame of every
        upload); per-item errors."""
        started = time.perf_counter()
        info = await self.primary_info()
        self.metrics.batch_files.observe(len(uploads))
        prepared = await asyncio.gather(
            *(self._prepare(data, info.image_size) for data in uploads), return_exceptions=True
        )
        for item in prepared:
            if isinstance(item, BaseException) and not isinstance(item, ImageError):
                raise item  # not the upload's fault: the whole request fails as usual
        judged = [item for item in prepared if isinstance(item, list)]
        frames = [frame for upload in judged for frame in upload]
        per_frame = (
            await self._classify(lambda: self._classifier.predict_many.remote(frames), "batch")
            if frames
            else []
        )
        answers, start = [], 0
        for upload in judged:
            answers.append(most_generated(per_frame[start : start + len(upload)]))
            start += len(upload)
        self._after_predictions(answers, info)
        self._mirror.offer(frames, per_frame)
        answered = iter(answers)
        results = [item if isinstance(item, ImageError) else next(answered) for item in prepared]
        return results, info.version or "", (time.perf_counter() - started) * 1000.0

    async def explain(self, data: bytes) -> tuple[Explanation, Prediction, float]:
        """Grad-CAM for the predicted class; the prediction uses the primary's threshold. An
        animation's frames are classified first, and the one most likely AI-generated is
        explained."""
        started = time.perf_counter()
        info = await self.primary_info()
        frames = await self._prepare(data, info.image_size)
        image = frames[0]
        if len(frames) > 1:
            per_frame = await self._classify(
                lambda: self._classifier.predict_many.remote(frames), "explain"
            )
            image = max(zip(frames, per_frame, strict=True), key=lambda f: f[1].probability)[0]
        limits = self._limits()
        explanation: Explanation = await self._classify(
            lambda: self._explainer.remote(image, data, info.threshold, limits), "explain"
        )
        self.metrics.stage_latency_ms.observe(explanation.explain_ms, tags={"stage": "explain"})
        p = explanation.probability
        prediction = Prediction(
            probability=p,
            prediction=label_for(p, info.threshold),
            confidence=confidence_for(p),
            model_version=explanation.model_version,
            model_ms=explanation.explain_ms,
            batch_size=1,
            frames=len(frames),
        )
        self._after_predictions([prediction], info)
        return explanation, prediction, (time.perf_counter() - started) * 1000.0

    async def compare(self, data: bytes) -> tuple[Prediction, Prediction | None, str]:
        """The primary and the shadow on the same frames, both awaited; each answers with its
        frame most likely AI-generated."""
        info = await self.primary_info()
        frames = await self._prepare(data, info.image_size)
        shadow_info = await fetch_model_info(self._shadow)
        primary_call = self._classify(
            lambda: self._classifier.predict_many.remote(frames), "compare"
        )
        if not shadow_info.loaded:
            return most_generated(await primary_call), None, "no shadow model is configured"
        shadow_call = self._classify(lambda: self._shadow.predict_many.remote(frames), "compare")
        primary, shadow = map(most_generated, await asyncio.gather(primary_call, shadow_call))
        return primary, shadow, f"primary {primary.model_version} vs shadow {shadow.model_version}"

    # --- model and health information --------------------------------------------------------

    async def primary_info(self) -> ModelInfo:
        """The primary's model info (cached briefly); 503 while no model is loaded."""
        if self._info is None or time.monotonic() - self._info_at > self.config.model_info_ttl_s:
            try:
                self._info = await fetch_model_info(self._classifier)
            except (TimeoutError, *_REPLICA_GONE):
                raise ApiError(503, "not_ready", "the classifier is not reachable yet",
                               {"Retry-After": _SERVICE_RETRY_AFTER_S}) from None  # fmt: skip
            self._info_at = time.monotonic()
        if not self._info.loaded or self._info.image_size is None:
            raise ApiError(503, "not_ready", "the model is not loaded yet",
                           {"Retry-After": _SERVICE_RETRY_AFTER_S})  # fmt: skip
        return self._info

    async def health(self) -> dict[str, Any]:
        """Readiness fields of `/health`; `model_loaded` decides 200 or 503."""
        primary, shadow, drift = await asyncio.gather(
            fetch_model_info(self._classifier),
            fetch_model_info(self._shadow),
            self._with_timeout(self._drift_monitor.status.remote(), 5.0),
            return_exceptions=True,
        )
        loaded = isinstance(primary, ModelInfo) and primary.loaded
        drift_ok = not isinstance(drift, BaseException)
        report, total = drift if drift_ok else (None, 0)
        healthy = drift_ok and not (loaded and primary.load_error)
        return {
            "status": ("ok" if healthy else "degraded") if loaded else "unavailable",
            "model_loaded": loaded,
            "model_version": primary.version if loaded else None,
            "shadow_model_version": shadow.version if isinstance(shadow, ModelInfo) else None,
            "uptime_seconds": round(time.monotonic() - self._started, 3),
            "predictions_total": total,
            "drift_detected": bool(report and report.detected),
            "drift_score": report.score if report else 0.0,
            "drift": {"window_size": report.window_size, "signals": report.signals}
            if report
            else {"error": "the drift monitor is not reachable"},
        }

    # --- the calls down the graph --------------------------------------------------------------

    def _limits(self) -> ImageLimits:
        return self.config.image_limits(self.settings.max_file_bytes)

    async def _prepare(self, data: bytes, image_size: int) -> list[PreparedImage]:
        """The upload's pictures to judge: one, or an animation's sampled frames."""
        started = time.perf_counter()
        self.metrics.image_bytes.observe(len(data))
        limits = self._limits()
        try:
            if self.config.preprocess_in_ingress:
                frames = await asyncio.to_thread(prepare_frames, data, image_size, limits)
            else:
                frames = await self._call(
                    lambda: self._preprocessor.remote(data, image_size, limits), "decode"
                )
        except ImageError as exc:
            cause = root_cause(exc)
            self.metrics.validation_errors.inc(tags={"kind": exc.kind})
            raise cause if isinstance(cause, ImageError) else exc from None
        self.metrics.stage_latency_ms.observe(
            (time.perf_counter() - started) * 1000.0, tags={"stage": "decode"}
        )
        self.metrics.image_pixels.observe(frames[0].width * frames[0].height)
        return frames

    async def _classify(self, call: Callable[[], Awaitable[T]], route: str) -> T:
        """An inference call, with the model and queue stages observed."""
        started = time.perf_counter()
        result = await self._inference(call, route)
        first = result[0] if isinstance(result, list) and result else result
        if isinstance(first, Prediction):
            self._observe_stages(first, (time.perf_counter() - started) * 1000.0)
        return result

    async def _inference(self, call: Callable[[], Awaitable[T]], route: str) -> T:
        try:
            return await self._call(call, route)
        except NoModelLoaded:
            raise ApiError(503, "not_ready", "the model is not loaded yet",
                           {"Retry-After": _SERVICE_RETRY_AFTER_S}) from None  # fmt: skip

    def _observe_stages(self, prediction: Prediction, elapsed_ms: float) -> None:
        """Model time is the forward of the batch it rode in; the rest of the call is queue."""
        self.metrics.stage_latency_ms.observe(prediction.model_ms, tags={"stage": "model"})
        queue_ms = max(0.0, elapsed_ms - prediction.model_ms)
        self.metrics.stage_latency_ms.observe(queue_ms, tags={"stage": "queue"})

    async def _call(self, call: Callable[[], Awaitable[T]], route: str) -> T:
        """A downstream call with the request timeout, back-pressure as 503, and one retry
        when the replica that took it died (inference is idempotent)."""
        for attempt in (1, 2):
            try:
                return await self._with_timeout(call(), self.config.request_timeout_s)
            except BackPressureError:
                raise ApiError(503, "overloaded", "the model is at capacity; retry shortly",
                               {"Retry-After": _SERVICE_RETRY_AFTER_S}) from None  # fmt: skip
            except TimeoutError:
                raise ApiError(503, "timeout", "the model did not answer in time",
                               {"Retry-After": _SERVICE_RETRY_AFTER_S}) from None  # fmt: skip
            except _REPLICA_GONE:
                if attempt == 2:
                    raise ApiError(503, "unavailable", "a model replica failed; retry shortly",
                                   {"Retry-After": _SERVICE_RETRY_AFTER_S}) from None  # fmt: skip
                self.metrics.retries.inc(tags={"route": route})
                logger.warning("replica died during %s; retrying once", route)
        raise AssertionError("unreachable")

    @staticmethod
    async def _with_timeout(awaitable: Awaitable[T], timeout_s: float) -> T:
        return await asyncio.wait_for(awaitable, timeout_s)

    # --- after an answer: metrics, drift, shadow (never on the request's path) -----------------

    def _after_predictions(self, predictions: list[Prediction], info: ModelInfo) -> None:
        """Metrics and drift see one answer per upload (the Shadow is offered each frame)."""
        for prediction in predictions:
            self.metrics.predictions.inc(
                tags={"label": prediction.prediction, "confidence": prediction.confidence}
            )
            self.metrics.probability.observe(prediction.probability)
        self._drift_info = info
        self._drift.add([(p.probability, p.prediction) for p in predictions])

    async def _report_to_drift_monitor(self, batch: list[tuple[float, str]]) -> None:
        info = self._drift_info
        if info is not None:
            await self._with_timeout(
                self._drift_monitor.record.remote(
                    batch, info.version or "", info.drift_baseline or {}
                ),
                5.0,
            )
